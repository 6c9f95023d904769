"""Decoding raw Kafka bytes into contracts, with one error vocabulary for every caller.

Workers, ``eddy produce`` and the prediction service all decode through :func:`decode`,
so a message is judged the same way everywhere and every rejection has an error class
(machine-readable, for dead-letter headers and metrics) and a reason (for people).

>>> from streams.contracts import Event
>>> naive_time = b'"event_time": "2026-01-01T00:00:00"'
>>> decode(Event, b'{"event_id": "e1", "entity_id": "u1", ' + naive_time + b', "features": {}}')
Traceback (most recent call last):
...
streams.validation.InvalidMessage: invalid_fields: event_time: Input should have timezone info
>>> decode(Event, b'\\xff')
Traceback (most recent call last):
...
streams.validation.InvalidMessage: bad_utf8: not UTF-8: invalid start byte at byte 0
>>> decode(Event, b'{"schema_version": 9}')
Traceback (most recent call last):
...
streams.validation.InvalidMessage: unknown_schema_version: unsupported schema_version 9 (expected 1)
"""

from __future__ import annotations

from typing import Any, TypeVar

import orjson
from pydantic import ValidationError

from streams.contracts import SCHEMA_VERSION, Contract

MAX_MESSAGE_BYTES = 1_048_576
MAX_REASONS = 5

C = TypeVar("C", bound=Contract)


class InvalidMessage(ValueError):
    """A message that cannot be accepted; ``error_class`` names the kind of fault."""

    def __init__(self, error_class: str, reason: str) -> None:
        super().__init__(f"{error_class}: {reason}")
        self.error_class = error_class
        self.reason = reason


def decode(contract: type[C], raw: bytes | None) -> C:
    """Parse and validate ``raw`` as ``contract``, or raise :class:`InvalidMessage`."""
    if raw is None:
        raise InvalidMessage("empty", "message has no value")
    if len(raw) > MAX_MESSAGE_BYTES:
        raise InvalidMessage(
            "too_large", f"{len(raw)} bytes exceeds the limit of {MAX_MESSAGE_BYTES}"
        )
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidMessage("bad_utf8", f"not UTF-8: {exc.reason} at byte {exc.start}") from None
    try:
        document = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidMessage("bad_json", f"not JSON: {exc}") from None
    if not isinstance(document, dict):
        raise InvalidMessage("not_an_object", f"expected a JSON object, got {_json_type(document)}")
    version = document.get("schema_version", SCHEMA_VERSION)
    if version != SCHEMA_VERSION:
        raise InvalidMessage(
            "unknown_schema_version",
            f"unsupported schema_version {version!r} (expected {SCHEMA_VERSION})",
        )
    try:
        return contract.model_validate(document)
    except ValidationError as exc:
        raise InvalidMessage("invalid_fields", _reasons(exc)) from None


def encode(message: Contract) -> bytes:
    """The wire form of ``message``: compact UTF-8 JSON, ``None`` fields left out."""
    return orjson.dumps(message.model_dump(mode="json", exclude_none=True))


def _reasons(exc: ValidationError) -> str:
    """One reason per field; a union's per-member errors fold into one line."""
    by_parent: dict[tuple[int | str, ...], list[tuple[str, str]]] = {}
    for error in exc.errors(include_url=False):
        loc = tuple(error["loc"])
        by_parent.setdefault(loc[:-1], []).append((str(loc[-1]) if loc else "", error["msg"]))
    parts: list[str] = []
    for parent, errors in by_parent.items():
        prefix = ".".join(map(str, parent))
        if len(errors) > 1 and parent and all(name in _UNION_MEMBERS for name, _ in errors):
            members = ", ".join(name for name, _ in errors)
            parts.append(f"{prefix}: matches none of the allowed types ({members})")
            continue
        for name, msg in errors:
            path = f"{prefix}.{name}" if prefix and name else prefix or name or "(message)"
            parts.append(f"{path}: {msg}")
    extra = len(parts) - MAX_REASONS
    return "; ".join(parts[:MAX_REASONS]) + (f"; and {extra} more" if extra > 0 else "")


# How pydantic names the members of a failed union in an error's location.
_UNION_MEMBERS = frozenset({"bool", "int", "float", "str", "constrained-str", "none"})


def _json_type(value: Any) -> str:
    names = {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}
    return names.get(type(value), "a number")
