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
from eddy.streams.transport.topics import Topic, spec_for

SCHEMA_DIR = Path(__file__).resolve().parent / "schemas"


def rendered() -> dict[str, str]:
    """File name → text of every topic's schema (topics without a contract have none)."""
    files: dict[str, str] = {}
    for topic in Topic:
        contract = spec_for(topic, prefix="", partitions=1).contract
        if contract is not None:
            text = json.dumps(json_schema(contract), indent=2, sort_keys=True) + "\n"
            files[f"{topic.value}.schema.json"] = text
    return files


def stale(directory: Path = SCHEMA_DIR) -> list[str]:
    """Names of schema files that are missing or differ from the models."""
    return [
        name
        for name, text in rendered().items()
        if not (directory / name).is_file() or (directory / name).read_text() != text
    ]


def write(directory: Path = SCHEMA_DIR) -> list[str]:
    """(Re)write every schema file; returns the names written."""
    directory.mkdir(parents=True, exist_ok=True)
    files = rendered()
    for name, text in files.items():
        (directory / name).write_text(text)
    return sorted(files)
