"""Typed triggers and audit actions read and write exactly what registries already hold."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from eddy.services.registry.store import CHALLENGER, CHAMPION, RIVER, Lineage, Registry
from eddy.services.registry.triggers import AuditAction, Trigger, TriggerKind
from eddy.streams.learning.models import make_model

# One trigger of every shape Eddy has written, as stored (key order included).
STORED = [
    {"type": "alert", "id": "m:concept:10", "burst": "m:concept:10,m:data:12"},
    {"type": "alert", "id": "m:concept:9"},
    {"type": "schedule", "id": "every 60.0s"},
    {"type": "operator", "id": "eddy retrain on alice@host (pid 7)", "reason": ""},
    {"type": "operator"},
    {
        "type": "control",
        "id": "api-1",
        "by": "alice",
        "reason": "new season",
        "requested_at": "2026-01-01T00:00:00+00:00",
    },
    {"type": "checkpoint", "id": "checkpoint-000000000500.sealed"},
    {"type": "cold start", "id": "m@1"},
    {"type": "refresh", "id": "m@2"},
    {"type": "below majority", "id": "m@3"},
    {"type": "below promise", "id": "m@4"},
]


@pytest.mark.parametrize("stored", STORED, ids=lambda s: s["type"])
def test_a_stored_trigger_reads_back_and_writes_the_same_bytes(stored: dict[str, str]) -> None:
    written = Trigger.from_dict(stored).to_dict()
    assert json.dumps(written) == json.dumps(stored)
    assert all(type(v) is str for v in written.values())


def test_every_kind_eddy_writes_is_a_trigger_kind() -> None:
    assert {s["type"] for s in STORED} == {kind.value for kind in TriggerKind}


def test_a_kind_this_code_does_not_know_is_kept_as_it_was() -> None:
    trigger = Trigger.from_dict({"type": "nightly job", "id": "x"})
    assert trigger.kind == "nightly job"
    assert trigger.to_dict() == {"type": "nightly job", "id": "x"}
    assert trigger.alert_ids == []


def test_the_alert_ids_are_the_first_then_the_rest_of_the_burst_once_each() -> None:
    trigger = Trigger(TriggerKind.ALERT, "a2", burst=("a1", "a2", "", "a3"))
    assert trigger.alert_ids == ["a2", "a1", "a3"]
    assert Trigger(TriggerKind.CONTROL, "a1").alert_ids == []


def test_the_audit_log_names_actions_as_before(tmp_path: Path) -> None:
    registry = Registry(tmp_path, b"key")
    trigger = Trigger(TriggerKind.OPERATOR, "t").to_dict()
    lineage = Lineage({}, "fs", {}, {}, "test", trigger, "test")
    first = registry.register("m", RIVER, make_model("logistic"), {}, lineage)
    second = registry.register("m", RIVER, make_model("logistic"), {}, lineage)
    registry.set_alias("m", CHALLENGER, second.version, "test", "try it")
    registry.promote("m", second.version, "test", "better")
    registry.record_decision("m", first.version, "test", {"action": "keep"})
    registry.record("m", None, "test", AuditAction.REFUSED, {"reason": "no"})
    assert [e["action"] for e in registry.audit_log("m")] == [
        "register",
        "register",
        "set challenger",
        "set champion",
        "clear challenger",
        "decision",
        "refused",
    ]
    assert CHAMPION in registry.aliases("m")
