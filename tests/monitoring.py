"""What the monitor's tests show it: a model with a champion and a concept-drift alert.

Shared by the status API's test and the dashboard's browser test (a test module imports
no other test module).
"""

from __future__ import annotations

from eddy.services.config.settings import Settings
from eddy.services.registry.opening import open_registry
from eddy.services.registry.store import Lineage, Registry
from eddy.streams.learning.models import make_model
from eddy.streams.messages.contracts import DriftAlert
from tests.alerts import concept_alert

MODEL = "m"
LINEAGE = Lineage({"ex[0]": [0, 9]}, "fs", {}, {}, "test", {"type": "alert", "id": "a1"}, "t")


def champion_and_alert(settings: Settings) -> tuple[Registry, DriftAlert]:
    """Registers and promotes version 1 of :data:`MODEL` in the deployment's registry;
    returns the registry and a concept alert for the model, to be sent."""
    registry = open_registry(settings, announce=False)
    registry.register(MODEL, "river", make_model("logistic"), {"accuracy": 0.9}, LINEAGE)
    registry.promote(MODEL, 1, "test", "first champion")
    alert = concept_alert(f"{MODEL}:concept:5", MODEL)
    return registry, alert
