"""Live comparison from the shadow log and joined labels in real Redis."""

from __future__ import annotations

import random
import uuid
from pathlib import Path

import orjson

from eddy.services.config.settings import Settings
from eddy.services.promotion.live_runner import evaluate_live
from eddy.services.registry.store import CHALLENGER, CHAMPION, RIVER, Lineage, Registry
from eddy.streams.learning.models import make_model
from eddy.streams.store import keys
from eddy.streams.store.snapshots import SnapshotStore
from eddy.streams.transport.clients import make_redis

LINEAGE = Lineage({}, "fs", {}, {}, "test", {"type": "operator", "id": "t"}, "test")


def test_a_better_challenger_on_live_answers_is_promoted(stack: Settings, tmp_path: Path) -> None:
    settings = stack.model_copy(update={"topic_prefix": f"eddy-live-{uuid.uuid4().hex[:8]}."})
    registry = Registry(tmp_path, b"key")
    registry.register("m", RIVER, make_model("logistic"), {"accuracy": 0.7}, LINEAGE)
    registry.register("m", RIVER, make_model("logistic"), {"accuracy": 0.8}, LINEAGE)
    registry.promote("m", 1, "test", "initial")
    registry.set_alias("m", CHALLENGER, 2, "test", "retrained")

    rng = random.Random(4)
    client = make_redis(settings)
    labels = []
    pipe = client.pipeline(transaction=False)
    for i in range(1500):
        request_id, truth = f"r{i}", rng.random() < 0.5
        labels.append((request_id, truth))
        for version, accuracy in ((1, 0.70), (2, 0.85)):
            answer = truth if rng.random() < accuracy else not truth
            pipe.xadd(
                keys.shadow_log(settings.topic_prefix),
                {
                    "request_id": request_id,
                    "model": "m",
                    "version": version,
                    "prediction": orjson.dumps(answer),
                },
            )
    pipe.execute()
    SnapshotStore(client, settings.topic_prefix, 3600).record_labels(labels)

    decisions = evaluate_live(settings, registry, "m")

    assert decisions[0].action == "promote"
    assert registry.aliases("m")[CHAMPION] == 2
    assert any(e["action"] == "decision" for e in registry.audit_log("m"))
