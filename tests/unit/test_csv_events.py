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
    found = list(csv_event_lines(rows, schema, source="readings"))
    assert [line for line, _ in found] == list(range(2, len(found) + 2))
    return [orjson.loads(item) for _, item in found if isinstance(item, bytes)]


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


def test_a_row_with_more_cells_than_the_header_is_refused_with_its_line() -> None:
    text = "entity_id,event_time,amount\nu1,2026-01-01T00:00:00Z,1\nu2,2026-01-01T00:00:00Z,2,3\n"
    found = list(csv_event_lines(csv.DictReader(io.StringIO(text)), None, source="f"))
    assert isinstance(found[0][1], bytes)
    assert found[1] == (3, "1 more cells than the header has columns")


def test_a_non_finite_number_is_kept_as_text_not_sent_as_a_silent_null() -> None:
    header = "entity_id,event_time,temperature,door_open,visits,site"
    text = f"{header}\ngh-1,2026-01-01T00:00:00Z,nan,,,north\n"
    [event] = events(text, SCHEMA)
    assert event["features"] == {"temperature": "nan", "site": "north"}
    assert SCHEMA.problems(event["features"]) == ["field 'temperature' must be a float, got str"]  # type: ignore[arg-type]


def test_eddy_produce_reports_a_line_whose_fields_do_not_fit_the_project() -> None:
    from eddy.services.ops.console import Rejection, numbered, validate_lines
    from eddy.streams.transport.topics import Topic, spec_for

    spec = spec_for(Topic.EVENTS, prefix="", partitions=1)
    fitting = orjson.dumps(
        {
            "event_id": "e1",
            "entity_id": "gh-1",
            "event_time": "2026-01-01T00:00:00Z",
            "features": {"temperature": 20.0, "site": "north"},
        }
    )
    too_hot = fitting.replace(b"20.0", b"99.0").replace(b"e1", b"e2")
    checked = list(validate_lines(spec, numbered([fitting, too_hot]), SCHEMA))
    assert checked[0][0] == 1  # type: ignore[index]
    assert checked[1] == Rejection(2, "raw_fields", "field 'temperature' is 99.0, above its max 60")
    assert not isinstance(next(iter(validate_lines(spec, numbered([too_hot])))), Rejection)
