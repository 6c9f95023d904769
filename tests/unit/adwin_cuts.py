"""River's own two-sided ADWIN, as a yardstick for Eddy's one-sided concept watches.

The concept-watch and served-stream tests both show a rise that the two-sided detector
sees too; the count lives here, not in either test module: a test module imports no
other test module.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from river import drift


def two_sided_cuts(errors: Sequence[float]) -> int:
    """How often River's ADWIN, which tests both sides, cuts the stream."""
    detector: Any = drift.ADWIN()  # type: ignore[no-untyped-call]
    cuts = 0
    for error in errors:
        detector.update(error)
        cuts += bool(detector.drift_detected)
    return cuts
