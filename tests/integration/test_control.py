"""Triggers from outside, on real Kafka: the status API publishes a retrain command and
the retrainer's listener (a thread here) carries it out once, audited with who asked.

Also: requests with a wrong or missing token, or a bad body, publish nothing; with no
token configured the endpoint is forbidden; a command delivered twice retrains once,
also when the duplicate reaches a restarted listener; a command for an unknown model or
with too few examples is audited as refused; malformed commands are dead-lettered with
their reason, and the listener keeps going.
"""

from __future__ import annotations

import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from pydantic import SecretStr

from eddy.services.config.settings import Settings
from eddy.services.ops.console import read_topic
from eddy.services.ops.dead_letters import dead_letters
from eddy.services.ops.monitor import Monitor
from eddy.services.registry.opening import open_registry
from eddy.services.registry.store import Registry
from eddy.services.training.control import control_topic, publish, request_retrain
from eddy.services.training.retrainer import AlertListener, Retrainer
from eddy.streams.dead_letters.letter import ERROR_CLASS, ERROR_REASON, SOURCE_TOPIC
from eddy.streams.messages.contracts import ControlAction, ControlCommand
from eddy.streams.messages.signatures import SIGNATURE_HEADER, signature
from eddy.streams.messages.validation import encode
from eddy.streams.transport.clients import make_producer
from tests.factories import DeploymentSettings
from tests.integration.training_examples import concept, publish_examples
from tests.network import free_port
from tests.waiting import wait_until

DEADLINE_S = 60.0
MODEL = "fraud"
TOKEN = "operator-token-for-tests-0123456789"  # noqa: S105 (a test deployment's token)
EXAMPLES = 600


@pytest.fixture
def deployment(deployment_settings: DeploymentSettings) -> Settings:
    return deployment_settings(
        "ctl",
        model_name=MODEL,
        control_token=SecretStr(TOKEN),
        monitor_port=free_port(),
        retrain_window=1000,
        retrain_min_holdout=50,
        retrain_estimator="logistic_regression",
        live_evaluation_every_s=0.0,
    )


@contextmanager
def running_listener(settings: Settings, registry: Registry) -> Iterator[threading.Thread]:
    listener = AlertListener(settings, Retrainer(settings, registry))
    thread = threading.Thread(target=listener.run, daemon=True)
    thread.start()
    try:
        yield thread
    finally:
        listener.stop()
        thread.join(timeout=30)


@contextmanager
def running_monitor(settings: Settings, registry: Registry) -> Iterator[str]:
    monitor = Monitor(settings, registry)
    server = monitor.serve()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{settings.monitor_port}/api/retrain"
    finally:
        server.shutdown()
        server.server_close()
        monitor.close()


def post(url: str, body: dict[str, Any] | bytes, token: str | None) -> tuple[int, Any]:
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=data, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, orjson.loads(answer.read())
    except urllib.error.HTTPError as refused:
        return refused.code, orjson.loads(refused.read())


def control_records(settings: Settings) -> list[Any]:
    return [
        r.value
        for r in read_topic(
            settings,
            control_topic(settings),
            from_beginning=True,
            max_messages=None,
            idle_timeout_s=2.0,
        )
    ]


def send_raw(settings: Settings, values: list[bytes], key: bytes | None) -> None:
    """Send ``values`` as they are, signed with ``key`` (None: unsigned)."""
    producer = make_producer(settings)
    try:
        for value in values:
            headers = [] if key is None else [(SIGNATURE_HEADER, signature(key, value))]
            producer.send(
                control_topic(settings), key=MODEL.encode(), value=value, headers=headers
            ).get(timeout=30)
    finally:
        producer.close()


def command(command_id: str, model: str = MODEL) -> ControlCommand:
    return ControlCommand(
        command_id=command_id,
        action=ControlAction.RETRAIN,
        model=model,
        requested_by="test",
        reason="integration test",
        requested_at=datetime.now(UTC),
    )


def test_a_command_over_http_retrains_once_and_is_audited_with_who_asked(
    deployment: Settings,
) -> None:
    registry = open_registry(deployment, announce=False)
    publish_examples(deployment, concept(EXAMPLES, seed=1, flipped=False), start=0)
    first = {"reason": "quarterly refresh", "requested_by": "alice", "command_id": "cmd-1"}
    with running_monitor(deployment, registry) as url, running_listener(deployment, registry) as t:
        assert post(url, first, token="wrong")[0] == 401  # noqa: S106
        assert post(url, first, token=None)[0] == 401
        assert post(url, b'{"reason": "r", "reason": "s"}', token=TOKEN)[0] == 400
        assert post(url, {**first, "model": "frod"}, token=TOKEN)[0] == 400
        accepted = [post(url, first, token=TOKEN) for _ in range(2)]  # a client's retry
        second = post(url, {"reason": "after the fix"}, token=TOKEN)
        assert [status for status, _ in [*accepted, second]] == [202, 202, 202]
        assert accepted[0][1]["command_id"] == "cmd-1"
        # One partition, in order: once the second command is done, so is the duplicate.
        wait_until(
            lambda: len(registry.versions(MODEL)) >= 2,
            "two retrains by the listener",
            timeout_s=DEADLINE_S,
            alive=t.is_alive,
        )

    versions = registry.versions(MODEL)
    assert len(versions) == 2, "the duplicated command retrained once"
    assert versions[0].lineage.trigger["id"] == "cmd-1"
    assert versions[0].lineage.trigger["by"] == "alice"
    assert versions[1].lineage.trigger["id"] == second[1]["command_id"]
    assert versions[1].lineage.trigger["by"] == "api"
    decisions = [e for e in registry.audit_log(MODEL) if e["action"] == "decision"]
    assert [
        (d["details"]["trigger"]["type"], d["details"]["trigger"]["by"]) for d in decisions
    ] == [
        ("control", "alice"),
        ("control", "api"),
    ]
    assert decisions[0]["details"]["trigger"]["reason"] == "quarterly refresh"
    published = control_records(deployment)
    assert [c["command_id"] for c in published] == ["cmd-1", "cmd-1", second[1]["command_id"]], (
        "refused requests published nothing"
    )


def test_without_a_configured_token_the_endpoint_is_forbidden_and_publishes_nothing(
    deployment: Settings,
) -> None:
    closed = deployment.model_copy(update={"control_token": None})
    registry = open_registry(closed, announce=False)
    with running_monitor(closed, registry) as url:
        status, answer = post(url, {"reason": "r"}, token=TOKEN)
    assert status == 403
    assert "EDDY_CONTROL_TOKEN" in answer["error"]
    assert control_records(closed) == []


def test_refused_and_malformed_commands_never_stop_the_listener(deployment: Settings) -> None:
    registry = open_registry(deployment, announce=False)
    malformed = [b'{"command_id": "x"', b'{"command_id": "x", "action": "drop-tables"}']
    unsigned = [encode(command("unsigned"))]
    forged = [encode(command("forged"))]
    with running_listener(deployment, registry) as listener:
        send_raw(deployment, malformed, key=deployment.deployment_key())
        send_raw(deployment, unsigned, key=None)
        send_raw(deployment, forged, key=b"not the deployment's key")
        publish(deployment, command("for-a-ghost", model="ghost"))
        publish(deployment, command("too-early"))  # no examples yet
        wait_until(
            lambda: len(registry.audit_log(MODEL)) >= 1,
            "a refusal by the listener",
            timeout_s=DEADLINE_S,
            alive=listener.is_alive,
        )
        publish_examples(deployment, concept(EXAMPLES, seed=2, flipped=False), start=0)
        publish(deployment, command("in-time"))
        wait_until(
            lambda: len(registry.versions(MODEL)) >= 1,
            "a retrain by the listener",
            timeout_s=DEADLINE_S,
            alive=listener.is_alive,
        )

    (ghost,) = registry.audit_log("ghost")
    assert ghost["action"] == "refused"
    assert "unknown model 'ghost'" in ghost["details"]["reason"]
    refused = registry.audit_log(MODEL)[0]
    assert refused["action"] == "refused"
    assert refused["details"]["trigger"]["id"] == "too-early"
    assert "examples" in refused["details"]["reason"]
    assert [v.lineage.trigger["id"] for v in registry.versions(MODEL)] == ["in-time"]
    assert not [e for e in registry.audit_log(MODEL) if "forged" in str(e) or "unsigned" in str(e)]
    letters = list(dead_letters(deployment, idle_timeout_s=2.0))
    ghost_value = [r.original.value for r in letters if r.headers[ERROR_CLASS] == "unknown_model"]
    assert len(ghost_value) == 1
    assert orjson.loads(ghost_value[0])["model"] == "ghost"
    letters = [r for r in letters if r.headers[ERROR_CLASS] != "unknown_model"]
    assert [r.original.value for r in letters] == [*malformed, *unsigned, *forged]
    assert {r.headers[SOURCE_TOPIC] for r in letters} == {control_topic(deployment)}
    assert [r.headers[ERROR_CLASS] for r in letters] == [
        "bad_json",
        "invalid_fields",
        "unsigned",
        "bad_signature",
    ]
    assert "action" in letters[1].headers[ERROR_REASON]


def test_a_command_redelivered_to_a_restarted_listener_is_not_carried_out_again(
    deployment: Settings,
) -> None:
    registry = open_registry(deployment, announce=False)
    publish_examples(deployment, concept(EXAMPLES, seed=3, flipped=False), start=0)
    first = request_retrain(deployment, MODEL, "before the restart", requested_by="bob")
    with running_listener(deployment, registry) as listener:
        wait_until(
            lambda: len(registry.versions(MODEL)) >= 1,
            "the first retrain by the listener",
            timeout_s=DEADLINE_S,
            alive=listener.is_alive,
        )
    # As after a crash between the retrain and the commit: the same command comes again,
    # to a listener that has never seen it; only the audit log can tell.
    publish(deployment, first)
    publish(deployment, command("after-the-restart"))
    with running_listener(deployment, registry) as listener:
        wait_until(
            lambda: len(registry.versions(MODEL)) >= 2,
            "the second retrain by the listener",
            timeout_s=DEADLINE_S,
            alive=listener.is_alive,
        )

    triggers = [v.lineage.trigger for v in registry.versions(MODEL)]
    assert [t["id"] for t in triggers] == [first.command_id, "after-the-restart"]
    assert triggers[0]["by"] == "bob"
    assert first.command_id.startswith("cli-")
