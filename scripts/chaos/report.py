"""The figures as a table (printed, and recorded in ``docs/reliability.md``) and as JSON.

Pure text, apart from :func:`record`, which rewrites only the part of the document
between the figures markers, so the prose around it stays as written.

>>> from chaos.ledger import Figures
>>> table([Figures("baseline", events_in=3, applied=3)]).splitlines()[2].split("|")[1:4]
[' baseline ', ' 3 ', ' 3 ']
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from chaos.ledger import Figures

BEGIN = "<!-- chaos-figures:begin (written by scripts/chaos.py --record) -->"
END = "<!-- chaos-figures:end -->"

COLUMNS = (
    "scenario",
    "events in",
    "applied",
    "dead-lettered",
    "lost",
    "double-counted",
    "learned / expected",
    "requests",
    "answered",
    "repeats (bound)",
    "differing repeats",
    "versions (duplicates)",
    "alert retrains",
    "kills",
    "unplanned restarts",
    "caught up after",
    "verdict",
)


def _row(f: Figures) -> list[str]:
    caught = "-" if f.recovered_s is None else f"{f.recovered_s:.0f} s"
    return [
        f.scenario,
        str(f.events_in),
        str(f.applied),
        str(f.dead_lettered),
        str(f.lost),
        str(f.double_counted + f.state_mismatches),
        f"{f.examples_learned} / {f.examples_expected}",
        str(f.requests_in),
        str(f.answered),
        f"{f.repeated_answers} ({f.repeat_bound})",
        str(f.differing_repeats),
        f"{f.versions} ({f.duplicate_versions})",
        " ".join(map(str, f.alert_retrains)) or "-",
        str(f.kills),
        str(f.unplanned_restarts),
        caught,
        "pass" if f.passed else "FAIL",
    ]


def table(figures: list[Figures]) -> str:
    """A Markdown table, one row per scenario."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(_row(f)) + " |" for f in figures]
    return "\n".join(lines)


def details(figures: list[Figures]) -> str:
    """Each scenario's problems and notes, as a list under the table."""
    lines = []
    names = tuple(f"{f.scenario}: " for f in figures)
    for f in figures:
        for problem in f.problems:
            if not problem.startswith(names):  # the whole run repeats the scenarios' ones
                lines.append(f"- **{f.scenario}**: {problem}")
        notes = {k: v for k, v in f.notes.items() if v not in ({}, [], None)}
        if notes:
            shown = "; ".join(f"{k}: {v}" for k, v in notes.items())
            lines.append(f"- {f.scenario} (notes): {shown}")
    return "\n".join(lines)


def section(header: dict[str, Any], figures: list[Figures]) -> str:
    verdict = "PASS" if all(f.passed for f in figures) else "FAIL"
    lines = [
        f"Run of {header['date']}: `{header['command']}` ({header['mode']} mode), "
        f"{header['runtime_s']:.0f} s in all, on {header['machine']}. "
        f"Verdict: **{verdict}**.",
        "",
        table(figures),
        "",
    ]
    if extra := details(figures):
        lines += [extra, ""]
    return "\n".join(lines)


def as_json(header: dict[str, Any], figures: list[Figures]) -> dict[str, Any]:
    return {
        **header,
        "passed": all(f.passed for f in figures),
        "scenarios": [dataclasses.asdict(f) | {"passed": f.passed} for f in figures],
    }


def record(document: Path, text: str) -> None:
    """Replace what is between the markers of ``document`` with ``text``."""
    content = document.read_text()
    before, found, rest = content.partition(BEGIN)
    _, found_end, after = rest.partition(END)
    if not (found and found_end):
        raise ValueError(f"{document} has no figures markers ({BEGIN} ... {END})")
    document.write_text(f"{before}{BEGIN}\n{text}\n{END}{after}")
