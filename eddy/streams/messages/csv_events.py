"""A CSV file of one's own as ``events`` JSON lines (``eddy produce events --csv FILE``).

A team's history usually sits in a CSV export before it sits in Kafka. Each row becomes
one event: the columns ``entity_id`` and ``event_time`` (ISO 8601) are the event's, an
optional ``event_id`` names it (default: ``<file stem>-<line>``, so a replay of the same
file is recognised as duplicates), an optional ``label`` labels it, and every other
column is a raw field. CSV has no types, so a project's declared fields give them
(``float``, ``int``, ``bool``: true/false, 1/0; ``str``); without a project, a value that
reads as a number is a number. An empty cell is a missing value. A cell that is not of
its declared type is kept as text, for the contract and the worker to refuse with the
line's reason: nothing is dropped silently.

>>> schema = RawSchema.from_table({"temperature": {"type": "float"}, "site": {"type": "str"}})
>>> rows = [{"entity_id": "gh-1", "event_time": "2026-01-01T00:00:00Z",
...          "temperature": "21.5", "site": "north", "label": "true"}]
>>> [(line, json)] = csv_event_lines(rows, schema, source="readings")
>>> event = orjson.loads(json)
>>> line, event["event_id"], event["features"], event["label"]
(2, 'readings-2', {'temperature': 21.5, 'site': 'north'}, True)
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping

import orjson

from eddy.streams.messages.raw_schema import BOOL, FLOAT, INT, RawSchema

EVENT_COLUMNS = ("event_id", "entity_id", "event_time")
LABEL_COLUMN = "label"
FIRST_ROW_LINE = 2  # line 1 is the header
TRUE_WORDS = ("true", "1")
FALSE_WORDS = ("false", "0")


def csv_event_lines(
    rows: Iterable[Mapping[str | None, str | list[str]]],
    schema: RawSchema | None,
    *,
    source: str,
) -> Iterator[tuple[int, bytes | str]]:
    """Per CSV row (``csv.DictReader`` rows), in order: its line in the file and its
    event JSON line, or why the row is no event (more cells than the header names)."""
    declared = {} if schema is None else {f.name: f.type for f in schema.fields}
    for line, row in enumerate(rows, FIRST_ROW_LINE):
        if None in row:
            yield line, f"{len(row[None])} more cells than the header has columns"
            continue
        cells: dict[str, str] = {str(k): str(v) for k, v in row.items() if v is not None}
        yield line, _event_line(cells, declared, f"{source}-{line}")


def _event_line(row: Mapping[str, str], declared: Mapping[str, str], default_id: str) -> bytes:
    """The event JSON line of one row's cells (``declared``: field name → type)."""
    event: dict[str, object] = {
        "event_id": row.get("event_id") or default_id,
        "entity_id": row.get("entity_id", ""),
        "event_time": row.get("event_time", ""),
    }
    event["features"] = {
        name: typed(value, declared.get(name))
        for name, value in row.items()
        if name not in EVENT_COLUMNS and name != LABEL_COLUMN and value != ""
    }
    label = row.get(LABEL_COLUMN)
    if label:
        event["label"] = typed_label(label)
    return orjson.dumps(event)


def typed(text: str, kind: str | None) -> object:
    """``text`` as its declared ``kind`` (None: a number if it reads as one), or as
    text when it is not one (the contract or the worker then says why).

    >>> typed("3", "int"), typed("3", "float"), typed("yes", "bool"), typed("7.5", None)
    (3, 3.0, 'yes', 7.5)
    >>> typed("nan", "float"), typed("inf", None)
    ('nan', 'inf')
    """
    try:
        if kind == INT:
            return int(text)
        if kind == FLOAT:
            return _finite(float(text))
        if kind == BOOL:
            return _boolean(text)
        if kind is None:
            return _number(text)
    except ValueError:
        return text
    return text


def typed_label(text: str) -> object:
    """A label cell: a boolean for true/false, else a number if it reads as one, else text."""
    if text.strip().lower() in ("true", "false"):
        return text.strip().lower() == "true"
    return _number(text)


def _boolean(text: str) -> bool:
    word = text.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise ValueError(text)


def _number(text: str) -> object:
    """``text`` as an int, else a finite float, else as it is."""
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return _finite(float(text))
    except ValueError:
        return text


def _finite(number: float) -> float:
    """``number``, if finite: JSON has no NaN, and a NaN sent as null would go missing
    silently (the text is kept instead, for the worker to refuse)."""
    if not math.isfinite(number):
        raise ValueError(number)
    return number
