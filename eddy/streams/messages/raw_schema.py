"""The raw fields a project's events may carry, and what is wrong with an event's fields.

An event's contract (:mod:`eddy.streams.messages.contracts`) accepts any feature names
with any JSON scalar values; a project narrows that down in its ``eddy.toml``, one
``[fields.<name>]`` table per raw field it expects, so that features are never computed
over a misspelt name or a value of the wrong kind. :meth:`RawSchema.problems` gives the
reasons an event's fields do not fit, short enough for a dead letter's reason header.

>>> schema = RawSchema.from_table({
...     "amount": {"type": "float", "min": 0},
...     "country": {"type": "str", "categories": ["NL", "DE"], "required": False},
... })
>>> schema.problems({"amount": 12})
[]
>>> for reason in schema.problems({"amount": -1.5, "country": "FR", "colour": "red"}):
...     print(reason)
unknown field 'colour'
field 'amount' is -1.5, below its min 0
field 'country' is 'FR', not one of its categories
>>> schema.problems({"amount": True})
["field 'amount' must be a float, got bool"]
>>> try:
...     RawSchema.from_table({"amount": {"type": "decimal"}})
... except ValueError as bad_declaration:
...     print(bad_declaration)
field 'amount': type 'decimal' is not one of float, int, str, bool
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from eddy.streams.messages.validation import InvalidMessage, joined_reasons

FLOAT = "float"
INT = "int"
STR = "str"
BOOL = "bool"
FIELD_TYPES = (FLOAT, INT, STR, BOOL)
JSON_TYPES = {FLOAT: "number", INT: "integer", STR: "string", BOOL: "boolean"}
NUMERIC_TYPES = (FLOAT, INT)
DECLARATION_KEYS = ("type", "min", "max", "categories", "required")
# The error class of an event or request whose raw fields do not fit the declared ones.
RAW_FIELDS_ERROR = "raw_fields"
# A reason quotes a wrong value only this far: reasons travel in dead-letter headers.
SHOWN_VALUE_CHARS = 40


class FieldDeclarationError(ValueError):
    """A ``[fields.<name>]`` declaration that does not describe a field; ``field`` names it."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"field {field!r}: {reason}")
        self.field = field


@dataclass(frozen=True)
class RawField:
    """One declared raw field: its type, and for numbers a range, for strings categories."""

    name: str
    type: str
    minimum: float | None = None
    maximum: float | None = None
    categories: tuple[str, ...] | None = None
    required: bool = True

    @classmethod
    def from_table(cls, name: str, table: object) -> RawField:
        """The field declared by ``table`` (one ``[fields.<name>]`` table of eddy.toml)."""
        if not isinstance(table, Mapping):
            raise FieldDeclarationError(name, "expected a table with at least a type")
        unknown = sorted(set(table) - set(DECLARATION_KEYS))
        if unknown:
            raise FieldDeclarationError(
                name, f"unknown keys {unknown}; known: {', '.join(DECLARATION_KEYS)}"
            )
        kind = table.get("type")
        if kind not in FIELD_TYPES:
            raise FieldDeclarationError(
                name, f"type {kind!r} is not one of {', '.join(FIELD_TYPES)}"
            )
        minimum = _bound(name, kind, "min", table.get("min"))
        maximum = _bound(name, kind, "max", table.get("max"))
        if minimum is not None and maximum is not None and minimum > maximum:
            raise FieldDeclarationError(name, f"min {minimum} is above max {maximum}")
        required = table.get("required", True)
        if not isinstance(required, bool):
            raise FieldDeclarationError(name, f"required must be true or false, not {required!r}")
        return cls(name, kind, minimum, maximum, _categories(name, kind, table), required)

    def problem(self, value: object) -> str | None:
        """Why ``value`` does not fit this field (None: it does). A null counts as absent."""
        if value is None:
            return f"field {self.name!r} is required, got null" if self.required else None
        if not _has_type(value, self.type):
            return f"field {self.name!r} must be {_article(self.type)}, got {type(value).__name__}"
        if isinstance(value, int | float) and not isinstance(value, bool):
            return self._range_problem(value)
        if self.categories is not None and value not in self.categories:
            return f"field {self.name!r} is {_shown(value)}, not one of its categories"
        return None

    def _range_problem(self, value: float) -> str | None:
        if not math.isfinite(value):
            return f"field {self.name!r} must be a finite number, got {value}"
        if self.minimum is not None and value < self.minimum:
            return f"field {self.name!r} is {value}, below its min {self.minimum:g}"
        if self.maximum is not None and value > self.maximum:
            return f"field {self.name!r} is {value}, above its max {self.maximum:g}"
        return None


@dataclass(frozen=True)
class RawSchema:
    """The declared raw fields of a project's events, in declaration order."""

    fields: tuple[RawField, ...]

    @classmethod
    def from_table(cls, table: Mapping[str, object]) -> RawSchema:
        """The schema declared by eddy.toml's ``[fields]`` table.

        Raises :class:`FieldDeclarationError` (a ValueError) naming the first field whose
        declaration is not valid.
        """
        return cls(tuple(RawField.from_table(name, spec) for name, spec in table.items()))

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(field.name for field in self.fields)

    def problems(self, fields: Mapping[str, object], *, partial: bool = False) -> list[str]:
        """Every reason ``fields`` (an event's raw fields) do not fit: unknown fields first
        (by name), then each declared field's problem in declaration order. ``partial``
        (a prediction request's fields, merged over the entity's online features): a
        field left out or null is no problem, a wrong one still is."""
        declared = set(self.names)
        reasons = [f"unknown field {_shown(name)}" for name in sorted(set(fields) - declared)]
        for field in self.fields:
            value = fields.get(field.name)
            if partial and value is None:
                continue
            if field.name in fields:
                reason = field.problem(value)
            else:
                reason = f"missing required field {field.name!r}" if field.required else None
            if reason is not None:
                reasons.append(reason)
        return reasons

    def json_schema(self, *, partial: bool = False) -> dict[str, Any]:
        """The JSON Schema of raw fields fitting this declaration, for other teams'
        producers (``eddy apply`` writes it into the applied contracts); ``partial`` as
        in :meth:`problems`: no field is required and any may be null.

        >>> schema = RawSchema.from_table({"size": {"type": "int", "min": 0}})
        >>> schema.json_schema()["properties"], schema.json_schema()["required"]
        ({'size': {'type': 'integer', 'minimum': 0.0}}, ['size'])
        """
        properties = {}
        for field in self.fields:
            typed: dict[str, Any] = {"type": JSON_TYPES[field.type]}
            if field.minimum is not None:
                typed["minimum"] = field.minimum
            if field.maximum is not None:
                typed["maximum"] = field.maximum
            if field.categories is not None:
                typed["enum"] = list(field.categories)
            nullable = partial or not field.required
            properties[field.name] = {"anyOf": [typed, {"type": "null"}]} if nullable else typed
        required = [] if partial else [f.name for f in self.fields if f.required]
        return {
            "type": "object",
            "additionalProperties": False,
            "properties": properties,
            "required": required,
        }

    def refusal(
        self, fields: Mapping[str, object], *, partial: bool = False
    ) -> InvalidMessage | None:
        """The refusal of a message whose raw ``fields`` do not fit (None: they do), in
        the vocabulary every dead letter and error answer uses: error class
        :data:`RAW_FIELDS_ERROR`, the reasons naming each field.

        >>> schema = RawSchema.from_table({"size": {"type": "int", "max": 2}})
        >>> print(schema.refusal({"size": 3, "colour": 1}))
        raw_fields: unknown field 'colour'; field 'size' is 3, above its max 2
        >>> schema.refusal({}, partial=True) is None
        True
        """
        reasons = self.problems(fields, partial=partial)
        return InvalidMessage(RAW_FIELDS_ERROR, joined_reasons(reasons)) if reasons else None


def _has_type(value: object, kind: str) -> bool:
    """Whether ``value`` is of the declared ``kind``: a bool is no number, and an int is
    a float (JSON writes 3.0 as 3 as often as not)."""
    if kind == BOOL:
        return isinstance(value, bool)
    if isinstance(value, bool):
        return False
    if kind == INT:
        return isinstance(value, int)
    if kind == FLOAT:
        return isinstance(value, int | float)
    return isinstance(value, str)


def _bound(name: str, kind: str, key: str, value: object) -> float | None:
    if value is None:
        return None
    if kind not in NUMERIC_TYPES:
        raise FieldDeclarationError(name, f"{key} applies to numbers, not to a {kind}")
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise FieldDeclarationError(name, f"{key} must be a finite number, not {value!r}")
    return float(value)


def _categories(name: str, kind: str, table: Mapping[str, object]) -> tuple[str, ...] | None:
    categories = table.get("categories")
    if categories is None:
        return None
    if kind != STR:
        raise FieldDeclarationError(name, f"categories apply to a str, not to a {kind}")
    if (
        not isinstance(categories, list)
        or not categories
        or not all(isinstance(c, str) for c in categories)
    ):
        raise FieldDeclarationError(name, "categories must be a non-empty list of strings")
    return tuple(categories)


def _article(kind: str) -> str:
    return f"an {kind}" if kind == INT else f"a {kind}"


def _shown(value: object) -> str:
    """``repr(value)``, cut to :data:`SHOWN_VALUE_CHARS`."""
    text = repr(value)
    return text if len(text) <= SHOWN_VALUE_CHARS else text[:SHOWN_VALUE_CHARS] + "..."
