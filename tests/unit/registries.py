"""A registry with a champion and a challenger, for the live-evaluation and slice tests.

Both compare a champion with a challenger on recorded answers; the registry they start
from lives here, not in either test module: a test module imports no other test module.
"""

from __future__ import annotations

from pathlib import Path

from eddy.services.registry.store import CHALLENGER, RIVER, Lineage, Registry
from eddy.streams.learning.models import make_model

LINEAGE = Lineage({}, "fs", {}, {}, "test", {"type": "operator", "id": "t"}, "test")


def registry_with_two_versions(tmp_path: Path) -> Registry:
    """Versions 1 (champion) and 2 (challenger) of model "m", two untrained logistic
    models, in a registry under ``tmp_path``."""
    registry = Registry(tmp_path, b"key")
    for _ in range(2):
        registry.register("m", RIVER, make_model("logistic"), {}, LINEAGE)
    registry.promote("m", 1, "test", "initial")
    registry.set_alias("m", CHALLENGER, 2, "test", "retrained")
    return registry
