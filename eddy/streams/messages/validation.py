"""Decoding raw Kafka bytes into contracts, with one error vocabulary for every caller.

Workers, ``eddy produce`` and the prediction service all decode through :func:`decode`,
so a message is judged the same way everywhere and every rejection has an error class
(machine-readable, for dead-letter headers and metrics) and a reason (for people).

>>> from eddy.streams.messages.contracts import Event
>>> naive_time = b'"event_time": "2026-01-01T00:00:00"'
>>> decode(Event, b'{"event_id": "e1", "entity_id": "u1", ' + naive_time + b', "features": {}}')
Traceback (most recent call last):
...
eddy.streams.messages.validation.InvalidMessage: invalid_fields: event_time: Input should ...
>>> decode(Event, b'\\xff')
Traceback (most recent call last):
...
eddy.streams.messages.validation.InvalidMessage: bad_utf8: not UTF-8: invalid start byte at byte 0
>>> decode(Event, b'{"schema_version": 9}')
Traceback (most recent call last):
...
eddy.streams.messages.validation.InvalidMessage: unknown_schema_version: unsupported ... 9 ...
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import orjson
from pydantic import ValidationError

from eddy.streams.messages.contracts import MAX_FEATURES, SCHEMA_VERSION, Contract

# Below the broker's default message.max.bytes (~1 MiB), so that a too-large record can
# still be dead-lettered whole, with its evidence headers.
MAX_MESSAGE_BYTES = 512 * 1024
MAX_DEPTH = 8
# Keys in all, counted at every depth. The largest documents are Eddy's own: a drift
# alert ranks every drifted feature in its evidence, four keys each, and a monitor tracks
# at most MAX_FEATURES (2,048 keys); a training example holds a dozen fields, its raw
# features (at most MAX_FEATURES), the ones derived from them and the entity's kept last
# values (at most 1,024). A document with more is refused before field validation, which
# would report each extra key: 20,000 keys cost about 30 ms that way, and a worker fed
# such records falls behind.
MAX_KEYS = 8 * MAX_FEATURES
MAX_REASONS = 5
# Integers as orjson reads them: signed or unsigned 64 bits. Digits are counted before
# converting, so a 500 KiB number costs no quadratic int() conversion.
MIN_INT, MAX_INT = -(2**63), 2**64 - 1
MAX_INT_DIGITS = len(str(MAX_INT))
# Event times outside [EARLIEST_EVENT_TIME, now + max_future] are clock or encoding
# faults (an epoch-0 default, a timestamp in the wrong unit), not observations.
EARLIEST_EVENT_TIME = datetime(2000, 1, 1, tzinfo=UTC)
DEFAULT_MAX_FUTURE = timedelta(minutes=5)

C = TypeVar("C", bound=Contract)

# The error classes of a message refused before it was parsed: a caller must not parse
# it either (the guards that refused it keep a parser from recursing or running long).
REFUSED_UNPARSED = frozenset({"empty", "too_large", "bad_utf8", "too_deep"})


class InvalidMessage(ValueError):
    """A message that cannot be accepted; ``error_class`` names the kind of fault."""

    def __init__(self, error_class: str, reason: str) -> None:
        super().__init__(f"{error_class}: {reason}")
        self.error_class = error_class
        self.reason = reason


def decode(
    contract: type[C],
    raw: bytes | None,
    *,
    now: datetime | None = None,
    max_future: timedelta = DEFAULT_MAX_FUTURE,
) -> C:
    """Parse and validate ``raw`` as ``contract``, or raise :class:`InvalidMessage`.

    ``now`` (default: the clock) bounds ``event_time`` from above, with ``max_future``
    of tolerated clock skew.
    """
    if not raw:
        raise InvalidMessage("empty", "message has no value (tombstone or empty bytes)")
    if len(raw) > MAX_MESSAGE_BYTES:
        raise InvalidMessage(
            "too_large", f"{len(raw)} bytes exceeds the limit of {MAX_MESSAGE_BYTES}"
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidMessage("bad_utf8", f"not UTF-8: {exc.reason} at byte {exc.start}") from None
    document = _parse_json(text)
    if not isinstance(document, dict):
        raise InvalidMessage("not_an_object", f"expected a JSON object, got {_json_type(document)}")
    version = document.get("schema_version", SCHEMA_VERSION)
    if version != SCHEMA_VERSION:
        raise InvalidMessage(
            "unknown_schema_version",
            f"unsupported schema_version {version!r} (expected {SCHEMA_VERSION})",
        )
    try:
        message = contract.model_validate(document)
    except ValidationError as exc:
        raise InvalidMessage("invalid_fields", _reasons(exc)) from None
    event_time = getattr(message, "event_time", None)
    if isinstance(event_time, datetime):
        _check_event_time(event_time, now or datetime.now(UTC), max_future)
    return message


def canonical_document(raw: bytes | None) -> dict[str, Any] | None:
    """The JSON object ``raw`` holds when ``raw`` is byte for byte what :func:`encode`
    writes for it; None for anything else, which then needs :func:`decode`.

    The trusted path for Eddy's own messages (the learner's training examples): a record
    in that form is within the size bound, strict JSON (orjson refuses NaN, infinities,
    overflowing numbers and bad UTF-8) and has no repeated key (the parse would have
    collapsed it, and the re-encoding would be shorter), so only the contract's fields
    remain to check. Whitespace, another spelling of a number or an escape, or any
    parse error is not that form: such a record takes the full path, which refuses it
    with its reason if it is bad.

    >>> canonical_document(b'{"a":1,"b":[2.5,"x"]}')
    {'a': 1, 'b': [2.5, 'x']}
    >>> [canonical_document(raw) for raw in (b'{"a": 1}', b'{"a":1,"a":2}', b'[1]', b'')]
    [None, None, None, None]
    """
    if not raw or len(raw) > MAX_MESSAGE_BYTES:
        return None
    try:
        document = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if type(document) is not dict or orjson.dumps(document) != raw:
        return None
    return document


def _parse_json(text: str) -> Any:
    """Strict JSON: no NaN/Infinity, no overflowing numbers, no duplicate keys, bounded depth
    and key count.

    Fast path: orjson, which already refuses NaN, Infinity and overflowing numbers, and
    a duplicate-key check by counting: every key in the text ends in ``"`` then ``:``,
    so when the text has as many such endings as the parsed document has keys, no key
    was repeated. Anything else (a parse error, or more endings than keys, which a
    string value containing ``":`` can also cause) takes the slow path: the standard
    library parser with hooks, which says exactly what is wrong.
    """
    if text.count("[") + text.count("{") > MAX_DEPTH and _depth(text) > MAX_DEPTH:
        raise InvalidMessage("too_deep", f"nesting deeper than {MAX_DEPTH} levels")
    try:
        document = orjson.loads(text)
    except orjson.JSONDecodeError:
        document = _parse_json_exactly(text)
        _bounded_key_count(document)
        return document
    keys = _bounded_key_count(document)
    if len(_KEY_END.findall(text)) != keys:
        return _parse_json_exactly(text)
    return document


def _bounded_key_count(document: Any) -> int:
    """``document``'s keys at every depth, refused past :data:`MAX_KEYS`.

    A repeated key collapses in a parsed document, so when the parsed count is over the
    bound, the text's is too.

    >>> _bounded_key_count({"a": {"b": 1}})
    2
    >>> _bounded_key_count({f"k{i}": i for i in range(MAX_KEYS + 1)})
    Traceback (most recent call last):
    ...
    eddy.streams.messages.validation.InvalidMessage: too_many_keys: 4097 keys, more than ... 4096
    """
    count = _count_keys(document)
    if count > MAX_KEYS:
        raise InvalidMessage("too_many_keys", f"{count} keys, more than the limit of {MAX_KEYS}")
    return count


_KEY_END = re.compile(r'"\s*:')


def _count_keys(value: Any) -> int:
    """Keys in a parsed document, at every depth (orjson gives plain dicts and lists).

    >>> _count_keys({"a": 1, "b": {"c": [{"d": 2}, 3]}})
    4
    """
    children: Iterable[Any]
    if type(value) is dict:
        count, children = len(value), value.values()
    elif type(value) is list:
        count, children = 0, value
    else:
        return 0
    for child in children:
        if type(child) is dict or type(child) is list:  # scalars, the most, cost no call
            count += _count_keys(child)
    return count


def _parse_json_exactly(text: str) -> Any:
    try:
        return json.loads(
            text,
            object_pairs_hook=_unique_keys,
            parse_constant=_reject_constant,
            parse_float=_finite_float,
            parse_int=_bounded_int,
        )
    except InvalidMessage:
        raise
    except ValueError as exc:
        raise InvalidMessage("bad_json", f"not JSON: {exc}") from None


def _depth(text: str) -> int:
    """Deepest nesting of brackets outside strings (a cheap pre-parse guard)."""
    depth = deepest = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """The object of ``pairs``, refusing a repeated key in linear time (an object of tens
    of thousands of keys must not cost a quadratic search).

    >>> _unique_keys([("a", 1), ("b", 2), ("a", 3)])
    Traceback (most recent call last):
    ...
    eddy.streams.messages.validation.InvalidMessage: duplicate_key: key 'a' appears more than once
    """
    document = dict(pairs)
    if len(document) != len(pairs):
        seen: set[str] = set()
        for name, _ in pairs:
            if name in seen:
                raise InvalidMessage("duplicate_key", f"key {name!r} appears more than once")
            seen.add(name)
    return document


def _reject_constant(name: str) -> float:
    raise InvalidMessage("non_finite_number", f"{name} is not a finite number")


def _finite_float(literal: str) -> float:
    value = float(literal)
    if value in (float("inf"), float("-inf")):
        raise InvalidMessage("non_finite_number", f"{literal} overflows a 64-bit float")
    return value


def _bounded_int(literal: str) -> int:
    """An integer that fits 64 bits, as orjson's fast path already requires: a longer one
    passes no type check the models rely on (it overflows a float when scored).

    >>> _bounded_int("-9223372036854775808")
    -9223372036854775808
    >>> _bounded_int("1" + "0" * 30)
    Traceback (most recent call last):
    ...
    eddy.streams.messages.validation.InvalidMessage: number_out_of_range: an integer of 31 ...
    """
    if (
        len(literal.lstrip("-")) > MAX_INT_DIGITS
        or not MIN_INT <= (value := int(literal)) <= MAX_INT
    ):
        digits = len(literal.lstrip("-"))
        raise InvalidMessage(
            "number_out_of_range", f"an integer of {digits} digits does not fit 64 bits"
        )
    return value


def _check_event_time(event_time: datetime, now: datetime, max_future: timedelta) -> None:
    if event_time < EARLIEST_EVENT_TIME:
        raise InvalidMessage(
            "event_time_out_of_range",
            f"event_time {event_time.isoformat()} is before {EARLIEST_EVENT_TIME.date()}",
        )
    if event_time > now + max_future:
        raise InvalidMessage(
            "event_time_out_of_range",
            f"event_time {event_time.isoformat()} is more than {max_future} in the future",
        )


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
    return joined_reasons(parts)


def joined_reasons(parts: list[str]) -> str:
    """The first :data:`MAX_REASONS` reasons in one line, and how many more there are:
    a reason travels in a dead letter's header and an error answer.

    >>> joined_reasons([f"r{i}" for i in range(7)])
    'r0; r1; r2; r3; r4; and 2 more'
    """
    extra = len(parts) - MAX_REASONS
    return "; ".join(parts[:MAX_REASONS]) + (f"; and {extra} more" if extra > 0 else "")


# How pydantic names the members of a failed union in an error's location.
_UNION_MEMBERS = frozenset({"bool", "int", "float", "str", "constrained-str", "none"})


def _json_type(value: Any) -> str:
    names = {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}
    return names.get(type(value), "a number")
