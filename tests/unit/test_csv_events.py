"""A CSV file of one's own as events (``eddy produce events --csv``)."""

from __future__ import annotations

import csv
import io

import orjson

from eddy.streams.messages.contracts import Event
from eddy.streams.messages.csv_events import csv_event_lines
from eddy.streams.messages.raw_schema import RawSchema

SCHEMA = RawSchema.from_table(
    {
        "temperature": {"type": "float", "min": -40, "max": 60},
        "door_open": {"type": "bool", "required": False},
        "visits": {"type": "int", "required": False},
        "site": {"type": "str", "categories": ["north", "south"]},
    }
)
CSV = """entity_id,event_time,temperature,door_open,visits,site,label
gh-1,2026-01-01T00:00:00Z,21.5,1,3,north,true
gh-2,2026-01-01T00:00:01Z,-3,,,south,0
gh-3,2026-01-01T00:00:02Z,warm,maybe,2.5,east,
"""


def events(text: str, schema: RawSchema | None) -> list[dict[str, object]]:
    rows = csv.DictReader(io.StringIO(text))
    return [orjson.loads(line) for line in csv_event_lines(rows, schema, source="readings")]


def test_rows_become_events_typed_as_the_project_declares() -> None:
    first, second, third = events(CSV, SCHEMA)
    assert first == {
        "event_id": "readings-2",
        "entity_id": "gh-1",
        "event_time": "2026-01-01T00:00:00Z",
        "features": {"temperature": 21.5, "door_open": True, "visits": 3, "site": "north"},
        "label": True,
    }
    Event.model_validate(first)
    assert SCHEMA.problems(first["features"]) == []  # type: ignore[arg-type]
    # Empty cells are missing values; a 0 label is a number, not false.
    assert second["features"] == {"temperature": -3.0, "site": "south"}
    assert second["label"] == 0
    assert "label" not in third
    assert second["event_id"] == "readings-3"


def test_a_cell_of_the_wrong_kind_is_kept_for_the_worker_to_refuse_with_its_reason() -> None:
    third = events(CSV, SCHEMA)[2]
    assert third["features"] == {
        "temperature": "warm",
        "door_open": "maybe",
        "visits": "2.5",
        "site": "east",
    }
    reasons = SCHEMA.problems(third["features"])  # type: ignore[arg-type]
    assert "field 'temperature' must be a float, got str" in reasons
    assert "field 'site' is 'east', not one of its categories" in reasons


def test_without_a_project_numbers_are_numbers_and_an_event_id_column_is_kept() -> None:
    text = "event_id,entity_id,event_time,amount,country\nmine-1,u1,2026-01-01T00:00:00Z,12,NL\n"
    [event] = events(text, None)
    assert event["event_id"] == "mine-1"
    assert event["features"] == {"amount": 12, "country": "NL"}


def test_the_greenhouse_examples_readings_fit_its_declared_fields() -> None:
    import subprocess
    import sys

    from eddy.services.config.settings import PROJECT_ROOT
    from eddy.services.project.loading import load_project

    example = PROJECT_ROOT / "examples" / "greenhouse"
    project = load_project(example)
    made = subprocess.run(
        [sys.executable, str(example / "make_readings.py")],
        capture_output=True,
        text=True,
        check=True,
    )
    produced = events(made.stdout, project.schema)
    assert len(produced) > project.settings["snapshot_every"]
    for event in produced:
        Event.model_validate(event)
        assert project.schema.problems(event["features"]) == [], event  # type: ignore[arg-type]
    assert {e["label"] for e in produced} == {True, False}
