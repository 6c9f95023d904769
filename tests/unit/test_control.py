"""Triggers from outside, without a broker: the token check, the request body, the
command and its trigger, de-duplication by command id (in memory and from the audit
log), and the status API's answers to requests it refuses before reaching Kafka.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
from pydantic import SecretStr

from eddy.services.config.settings import Settings
from eddy.services.ops.monitor import Monitor
from eddy.services.registry.store import RIVER, Lineage, Registry
from eddy.services.training.control import (
    MAX_REASON_LENGTH,
    RetrainRequest,
    audit_refusal,
    carried_out,
    check_token,
    control_trigger,
    new_command_id,
    parse_retrain_request,
    retrain_command,
    unknown_model,
)
from eddy.streams.learning.models import make_model
from eddy.streams.messages.contracts import ControlAction, ControlCommand
from eddy.streams.messages.validation import InvalidMessage

TOKEN = SecretStr("a-long-random-operator-token")
NOW = datetime(2026, 3, 1, 12, tzinfo=UTC)


def command(command_id: str = "c1", model: str = "m") -> ControlCommand:
    return ControlCommand(
        command_id=command_id,
        action=ControlAction.RETRAIN,
        model=model,
        requested_by="alice",
        reason="new season",
        requested_at=NOW,
    )


# --- the token ---------------------------------------------------------------------


def test_only_the_configured_bearer_token_passes() -> None:
    assert check_token(TOKEN, f"Bearer {TOKEN.get_secret_value()}") is None
    for header in (
        None,
        "",
        TOKEN.get_secret_value(),  # no scheme
        f"Basic {TOKEN.get_secret_value()}",
        "Bearer ",
        "Bearer a-long-random-operator",  # a prefix of the token
        f"Bearer {TOKEN.get_secret_value()}x",
        f"bearer {TOKEN.get_secret_value().upper()}",
    ):
        refusal = check_token(TOKEN, header)
        assert refusal is not None, header
        assert refusal.status == 401
        assert TOKEN.get_secret_value() not in refusal.reason


@pytest.mark.parametrize("configured", [None, SecretStr("")])
def test_without_a_configured_token_every_request_is_forbidden_and_told_why(
    configured: SecretStr | None,
) -> None:
    refusal = check_token(configured, f"Bearer {TOKEN.get_secret_value()}")
    assert refusal is not None
    assert refusal.status == 403
    assert "EDDY_CONTROL_TOKEN" in refusal.reason


# --- the body ----------------------------------------------------------------------


def test_a_body_with_only_a_reason_gets_the_deployment_model_and_the_channel() -> None:
    request = parse_retrain_request(b'{"reason": "weekly refresh"}')
    made = retrain_command(request, default_model="fraud", channel="api", now=NOW)
    assert (made.model, made.requested_by, made.reason) == ("fraud", "api", "weekly refresh")
    assert made.command_id.startswith("api-")
    assert made.requested_at == NOW
    assert made.action is ControlAction.RETRAIN


def test_a_full_body_is_kept_as_given() -> None:
    body = b'{"reason": "r", "model": "m2", "requested_by": "bob", "command_id": "cmd-7"}'
    made = retrain_command(parse_retrain_request(body), default_model="m", channel="api", now=NOW)
    assert (made.command_id, made.model, made.requested_by) == ("cmd-7", "m2", "bob")


@pytest.mark.parametrize(
    ("body", "error_class", "names"),
    [
        (None, "empty", ""),
        (b"", "empty", ""),
        (b"{not json", "bad_json", ""),
        (b'["reason"]', "not_an_object", ""),
        (b'{"model": "m"}', "invalid_fields", "reason"),
        (b'{"reason": ""}', "invalid_fields", "reason"),
        (b'{"reason": 5}', "invalid_fields", "reason"),
        (b'{"reason": "r", "model": ""}', "invalid_fields", "model"),
        (b'{"reason": "r", "token": "x"}', "invalid_fields", "token"),
        (b'{"reason": "r", "reason": "s"}', "duplicate_key", "reason"),
        (b'{"reason": "r", "schema_version": 2}', "unknown_schema_version", ""),
        (b'{"reason": "\xff"}', "bad_utf8", ""),
    ],
)
def test_a_bad_body_is_refused_with_a_reason_naming_the_fault(
    body: bytes | None, error_class: str, names: str
) -> None:
    with pytest.raises(InvalidMessage) as refused:
        parse_retrain_request(body)
    assert refused.value.error_class == error_class
    assert names in refused.value.reason


def test_a_reason_longer_than_the_limit_is_refused() -> None:
    fits = orjson.dumps({"reason": "x" * MAX_REASON_LENGTH})
    assert parse_retrain_request(fits).reason == "x" * MAX_REASON_LENGTH
    with pytest.raises(InvalidMessage, match="reason"):
        parse_retrain_request(orjson.dumps({"reason": "x" * (MAX_REASON_LENGTH + 1)}))


def test_command_ids_are_unique_and_name_their_channel() -> None:
    ids = {new_command_id("cli") for _ in range(1000)}
    assert len(ids) == 1000
    assert all(i.startswith("cli-") for i in ids)


def test_the_trigger_names_the_command_who_asked_and_why() -> None:
    assert control_trigger(command()).to_dict() == {
        "type": "control",
        "id": "c1",
        "by": "alice",
        "reason": "new season",
        "requested_at": NOW.isoformat(),
    }


def test_only_the_configured_or_registered_models_can_be_retrained() -> None:
    assert unknown_model("default", "default", []) is None
    assert unknown_model("fraud", "default", ["fraud", "churn"]) is None
    reason = unknown_model("frod", "default", ["fraud"])
    assert reason is not None
    assert "frod" in reason
    assert "default, fraud" in reason


# --- de-duplication ----------------------------------------------------------------


def test_the_audit_log_shows_a_command_as_carried_out_after_a_retrain_or_a_refusal(
    tmp_path: Path,
) -> None:
    registry = Registry(tmp_path, b"key")
    retrained, refused, other = command("c1"), command("c2"), command("c3")
    lineage = Lineage({}, "fs", {}, {}, "test", control_trigger(retrained).to_dict(), "retrainer")
    registry.register("m", RIVER, make_model("logistic"), {}, lineage)
    audit_refusal(registry, "retrainer", refused, "only 3 examples in the window")

    audit = registry.audit_log("m")
    assert carried_out(audit, "c1")
    assert carried_out(audit, "c2")
    assert not carried_out(audit, "c3")
    assert not carried_out(audit, other.command_id)
    refusal = audit[-1]
    assert refusal["action"] == "refused"
    assert refusal["version"] is None
    assert refusal["details"]["reason"] == "only 3 examples in the window"
    assert refusal["details"]["trigger"]["by"] == "alice"


def test_an_alert_with_the_same_id_as_a_command_is_not_taken_for_it(tmp_path: Path) -> None:
    registry = Registry(tmp_path, b"key")
    lineage = Lineage({}, "fs", {}, {}, "test", {"type": "alert", "id": "c1"}, "retrainer")
    registry.register("m", RIVER, make_model("logistic"), {}, lineage)
    assert not carried_out(registry.audit_log("m"), "c1")


# --- the status API's refusals (none of them reaches Kafka) ----------------------------


def monitor(tmp_path: Path, token: SecretStr | None = TOKEN) -> Monitor:
    settings = Settings(data_dir=tmp_path, model_name="m", control_token=token)
    return Monitor(settings, Registry(tmp_path / "registry", b"key"))


def test_the_status_api_refuses_before_publishing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    good = f"Bearer {TOKEN.get_secret_value()}"
    body = RetrainRequest(reason="r").model_dump_json().encode()
    cases = [
        (monitor(tmp_path / "off", token=None), good, body, 403),
        (monitor(tmp_path), None, body, 401),
        (monitor(tmp_path), "Bearer wrong", body, 401),
        (monitor(tmp_path), good, b'{"reason": ""}', 400),
        (monitor(tmp_path), good, b'{"reason": "r", "model": "ghost"}', 400),
    ]
    with caplog.at_level("WARNING", logger="eddy.services.ops.monitor"):
        answers = [m.request_retrain(auth, raw, "127.0.0.9") for m, auth, raw, _ in cases]
    assert [status for status, _ in answers] == [status for *_, status in cases]
    assert all(answer["error"] for _, answer in answers)
    assert "ghost" in answers[-1][1]["error"]
    refusals = [r for r in caplog.records if r.getMessage() == "control request refused"]
    assert [r.__dict__["status"] for r in refusals] == [status for *_, status in cases]
    assert all(r.__dict__["client"] == "127.0.0.9" for r in refusals)
    assert TOKEN.get_secret_value() not in caplog.text
