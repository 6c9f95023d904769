"""Lineage helpers: the facts a registered version records about where it came from.

Both producers of versions, the retrainer and the learner's snapshot hook, record the
same provenance: the code version, the versions of the libraries that fitted and will
load the model, and the source offsets it learned from. They live here, beside the
registry that stores them, so neither producer depends on the other to describe a
version, and a reader (the governance report) finds what "unknown" means in one place.

>>> from eddy.streams.messages.contracts import SourceOffset
>>> offset_ranges([SourceOffset(topic="events", partition=0, offset=o) for o in (7, 3, 5)])
{'events[0]': [3, 7]}
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterable
from datetime import UTC, datetime
from importlib import metadata

from eddy.services.config.settings import PROJECT_ROOT
from eddy.services.registry.store import Version
from eddy.streams.messages.contracts import SourceOffset

# The libraries whose versions every registered version records.
LIBRARIES = ("scikit-learn", "river", "numpy", "skops")
UNKNOWN_CODE_VERSION = "unknown"  # the code version recorded where git cannot tell it
ABSENT_LIBRARY = "absent"  # the version recorded for a library that is not installed
# The lineage window's calibration table of a binary classifier's answers on examples
# it did not learn from (Calibration.as_table): where the live estimate starts.
CALIBRATION_KEY = "calibration"


def code_version() -> str:
    """The short git commit of the running code, or ``unknown`` without git."""
    try:
        return subprocess.run(  # noqa: S603
            ["git", "-C", str(PROJECT_ROOT), "rev-parse", "--short", "HEAD"],  # noqa: S607
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return UNKNOWN_CODE_VERSION


def library_versions() -> dict[str, str]:
    """The installed version of each of :data:`LIBRARIES`."""
    found = {}
    for name in LIBRARIES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = ABSENT_LIBRARY
    return found


def offset_ranges(sources: Iterable[SourceOffset]) -> dict[str, list[int]]:
    """First and last source offset per source partition: the lineage of the data."""
    ranges: dict[str, list[int]] = {}
    for source in sources:
        key = f"{source.topic}[{source.partition}]"
        first, last = ranges.get(key, [source.offset, source.offset])
        ranges[key] = [min(first, source.offset), max(last, source.offset)]
    return ranges


def window_time(version: Version, key: str) -> datetime | None:
    """A time a version's lineage window records (``to``: its newest example's)."""
    value = version.lineage.window.get(key)
    return datetime.fromisoformat(value) if isinstance(value, str) else None


def iso(epoch_s: float) -> str:
    """Epoch seconds as ISO 8601 UTC, to the millisecond: one fixed width, so text order
    is time order (reports and backtests print times this way).

    >>> iso(0.25)
    '1970-01-01T00:00:00.250+00:00'
    """
    return datetime.fromtimestamp(epoch_s, UTC).isoformat(timespec="milliseconds")
