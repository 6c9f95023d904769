"""The JSON Schema files in ``eddy/streams/messages/schemas/``, generated from
:mod:`eddy.streams.messages.contracts`.

Other teams' producers and consumers validate against these files, so they are kept in
the repository; ``eddy schemas --write`` regenerates them and a test fails when they
drift from the models.
"""

from __future__ import annotations

import json
from pathlib import Path

from eddy.streams.messages.contracts import json_schema
from eddy.streams.messages.raw_schema import RawSchema
from eddy.streams.transport.topics import Topic, spec_for

SCHEMA_DIR = Path(__file__).resolve().parent / "schemas"
# Where each topic's messages carry the raw fields a project declares.
RAW_FIELDS_OF = {Topic.EVENTS: "features", Topic.PREDICTION_REQUESTS: "features"}


def rendered(raw: RawSchema | None = None) -> dict[str, str]:
    """File name → text of every topic's schema (topics without a contract have none).

    With a project's declared ``raw`` fields, the raw fields of events and of prediction
    requests are those fields only (``eddy apply`` writes these into the deployment).
    """
    files: dict[str, str] = {}
    for topic in Topic:
        contract = spec_for(topic, prefix="", partitions=1).contract
        if contract is None:
            continue
        schema = json_schema(contract)
        if raw is not None and topic in RAW_FIELDS_OF:
            schema["properties"][RAW_FIELDS_OF[topic]] = raw.json_schema(
                partial=topic is Topic.PREDICTION_REQUESTS
            )
        files[f"{topic.value}.schema.json"] = json.dumps(schema, indent=2, sort_keys=True) + "\n"
    return files


def stale(directory: Path = SCHEMA_DIR) -> list[str]:
    """Names of schema files that are missing or differ from the models."""
    return [
        name
        for name, text in rendered().items()
        if not (directory / name).is_file() or (directory / name).read_text() != text
    ]


def write(directory: Path = SCHEMA_DIR, raw: RawSchema | None = None) -> list[str]:
    """(Re)write every schema file (with ``raw``: as :func:`rendered`); returns the names."""
    directory.mkdir(parents=True, exist_ok=True)
    files = rendered(raw)
    for name, text in files.items():
        (directory / name).write_text(text)
    return sorted(files)
