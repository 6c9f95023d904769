"""Triggers from outside: retrain requests over the status API or the ``control`` topic.

Nobody outside retrains a model directly. A caller publishes a
:class:`~eddy.streams.messages.contracts.ControlCommand` on the ``control`` topic (the monitor's
``POST /api/retrain`` does, after checking the bearer token; so can the CLI), and the
retrainer's listener carries it out once, with a trigger that names the command, who
asked and why, so the registry's audit log and the new version's lineage answer "why
was this trained". The web process never trains: a slow retrain cannot stall the
dashboard, and every command, from any channel, takes one audited path.

Every command is signed with the deployment's key (:mod:`eddy.streams.messages.signatures`);
the retrainer dead-letters one that is not, so writing to the topic is not enough to
retrain anything.

The pure parts, tested without a broker: the token check, the request body, the
command's trigger, and de-duplication by ``command_id`` (in memory, and durably from the
registry's audit log, so a command redelivered after a crash is not carried out twice).

>>> check_token(SecretStr("s3cret"), "Bearer s3cret") is None
True
>>> check_token(SecretStr("s3cret"), "Bearer guess")
Refusal(status=401, reason='wrong bearer token')
>>> check_token(None, "Bearer s3cret").status
403
"""

from __future__ import annotations

import hmac
import logging
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any

from kafka import KafkaProducer
from pydantic import Field, SecretStr

from eddy.services.config.settings import Settings
from eddy.services.registry.store import Registry
from eddy.services.registry.triggers import AuditAction, Trigger, TriggerKind
from eddy.streams.messages.contracts import Contract, ControlAction, ControlCommand, Identifier
from eddy.streams.messages.signatures import SIGNATURE_HEADER, signature
from eddy.streams.messages.validation import decode, encode
from eddy.streams.transport.clients import make_producer
from eddy.streams.transport.topics import Topic, message_key, spec_for, topic_name

log = logging.getLogger(__name__)

BEARER = "Bearer "
API_CHANNEL = "api"
MAX_REASON_LENGTH = 1024
RECENT_IDS = 10_000  # command ids the retrainer remembers before asking the audit log
SEND_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Refusal:
    """Why a request is refused, with the HTTP status that says so."""

    status: int
    reason: str


def check_token(configured: SecretStr | None, authorization: str | None) -> Refusal | None:
    """None when ``authorization`` carries the configured bearer token.

    The comparison takes the same time however much of the token a guess gets right
    (:func:`hmac.compare_digest`). With no token configured the write endpoints are off:
    403, saying which setting turns them on.

    >>> check_token(SecretStr("t"), None)
    Refusal(status=401, reason='missing bearer token (Authorization: Bearer <token>)')
    """
    if configured is None or not configured.get_secret_value():
        return Refusal(403, "write endpoints are off: set EDDY_CONTROL_TOKEN to enable them")
    if not authorization or not authorization.startswith(BEARER):
        return Refusal(401, "missing bearer token (Authorization: Bearer <token>)")
    offered = authorization[len(BEARER) :].strip().encode()
    if not hmac.compare_digest(offered, configured.get_secret_value().encode()):
        return Refusal(401, "wrong bearer token")
    return None


class RetrainRequest(Contract):
    """The body of ``POST /api/retrain``: closed, strict JSON like every Eddy message.

    ``reason`` is required (it is what the audit log is for); ``model`` defaults to the
    deployment's model and ``requested_by`` to the channel. A client that retries a POST
    may send its own ``command_id``: the retrain then still happens once.
    """

    reason: Annotated[str, Field(min_length=1, max_length=MAX_REASON_LENGTH)]
    model: Identifier | None = None
    requested_by: Identifier | None = None
    command_id: Identifier | None = None


def parse_retrain_request(body: bytes | None) -> RetrainRequest:
    """The request in ``body``, or :class:`~eddy.streams.messages.validation.InvalidMessage` saying
    why.

    >>> parse_retrain_request(b'{"reason": "weekly refresh", "model": "fraud"}').model
    'fraud'
    >>> parse_retrain_request(b'{"model": "fraud"}')
    Traceback (most recent call last):
    ...
    eddy.streams.messages.validation.InvalidMessage: invalid_fields: reason: Field required
    """
    return decode(RetrainRequest, body)


def new_command_id(channel: str) -> str:
    """A fresh id that also says which channel issued the command (``api-…``, ``cli-…``)."""
    return f"{channel}-{uuid.uuid4().hex}"


def retrain_command(
    request: RetrainRequest, *, default_model: str, channel: str, now: datetime
) -> ControlCommand:
    """The command a request stands for, with defaults filled in.

    >>> request = RetrainRequest(reason="why", command_id="c1")
    >>> command = retrain_command(
    ...     request, default_model="m", channel="api", now=datetime(2026, 1, 1, tzinfo=UTC)
    ... )
    >>> command.command_id, command.model, command.requested_by
    ('c1', 'm', 'api')
    """
    return ControlCommand(
        command_id=request.command_id or new_command_id(channel),
        action=ControlAction.RETRAIN,
        model=request.model or default_model,
        requested_by=request.requested_by or channel,
        reason=request.reason,
        requested_at=now,
    )


def unknown_model(model: str, configured: str, registered: Iterable[str]) -> str | None:
    """Why ``model`` cannot be retrained here, or None when it can.

    A deployment retrains the model it learns (``EDDY_MODEL_NAME``) and any model the
    registry holds; anything else is a typo that must not create a new model.

    >>> unknown_model("fraud", "default", ["fraud"]) is None
    True
    >>> unknown_model("frod", "default", ["fraud"])
    "unknown model 'frod' (known: default, fraud)"
    """
    known = sorted({configured, *registered})
    if model in known:
        return None
    return f"unknown model {model!r} (known: {', '.join(known)})"


def control_trigger(command: ControlCommand) -> Trigger:
    """The retrain trigger for ``command``: lineage and audit say who asked and why.

    >>> command = ControlCommand(
    ...     command_id="c1", action="retrain", model="m", requested_by="alice",
    ...     reason="new season", requested_at=datetime(2026, 1, 1, tzinfo=UTC),
    ... )
    >>> control_trigger(command).by, control_trigger(command).kind
    ('alice', <TriggerKind.CONTROL: 'control'>)
    """
    return Trigger(
        TriggerKind.CONTROL,
        command.command_id,
        by=command.requested_by,
        reason=command.reason,
        requested_at=command.requested_at.isoformat(),
    )


def carried_out(audit: Sequence[dict[str, Any]], command_id: str) -> bool:
    """True when the audit log shows ``command_id`` was acted on (or refused) already.

    A retrain's registration and its decision both carry the trigger; a refusal does
    too. So a command redelivered after a crash (effects written, offset not yet
    committed) is recognised by what it left in the registry.

    >>> trigger = {"type": "control", "id": "c1"}
    >>> carried_out([{"action": "register", "details": {"trigger": trigger}}], "c1")
    True
    >>> carried_out([{"action": "register", "details": {"trigger": trigger}}], "c2")
    False
    """
    for entry in audit:
        stored = entry.get("details", {}).get("trigger")
        if isinstance(stored, dict):
            trigger = Trigger.from_dict(stored)
            if trigger.kind == TriggerKind.CONTROL and trigger.id == command_id:
                return True
    return False


def audit_refusal(registry: Registry, actor: str, command: ControlCommand, reason: str) -> None:
    """Record in the audit log that ``command`` was refused, and why."""
    details = {"trigger": control_trigger(command).to_dict(), "reason": reason}
    registry.record(command.model, None, actor, AuditAction.REFUSED, details)


# --- the I/O edge: publishing ----------------------------------------------------------


def control_topic(settings: Settings) -> str:
    return topic_name(Topic.CONTROL, settings.topic_prefix)


def publish(
    settings: Settings, command: ControlCommand, producer: KafkaProducer | None = None
) -> ControlCommand:
    """Send ``command``, signed with the deployment's key, to the control topic; returns
    once the broker has it (acks=all)."""
    spec = spec_for(Topic.CONTROL, prefix=settings.topic_prefix, partitions=1)
    own = producer is None
    sender = make_producer(settings) if producer is None else producer
    value = encode(command)
    headers = [(SIGNATURE_HEADER, signature(settings.deployment_key(), value))]
    try:
        sender.send(spec.name, key=message_key(spec, command), value=value, headers=headers).get(
            timeout=SEND_TIMEOUT_S
        )
    finally:
        if own:
            sender.close()
    log.info(
        "control command published",
        extra={
            "command_id": command.command_id,
            "model": command.model,
            "requested_by": command.requested_by,
        },
    )
    return command


def request_retrain(
    settings: Settings, model: str, reason: str, requested_by: str, *, channel: str = "cli"
) -> ControlCommand:
    """Ask the running retrainer to retrain ``model``: what ``eddy retrain --via-control``
    does. Returns the published command (its id is what the audit log will show)."""
    command = ControlCommand(
        command_id=new_command_id(channel),
        action=ControlAction.RETRAIN,
        model=model,
        requested_by=requested_by,
        reason=reason,
        requested_at=datetime.now(UTC),
    )
    return publish(settings, command)
