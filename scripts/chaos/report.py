"""The figures as a table (printed, and recorded in ``docs/reliability.md``) and as JSON.

Pure text, apart from :func:`record`, which rewrites only the part of the document
between one phase's figures markers, so the prose around it, and the other phase's
figures, stay as written.

>>> from chaos.ledger import Figures
>>> table([Figures("baseline", events_in=3, applied=3)]).splitlines()[2].split("|")[1:4]
[' baseline ', ' 3 ', ' 3 ']
>>> fault_times([Figures("kill-broker", notes={"broker down s": 30.2,
...     "leaders moved after s": 3.4, "broker killed": "kafka-2 (SIGKILL)"})])
'kill-broker: kafka-2 down 30.2 s, leaders moved after 3.4 s'
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chaos.ledger import Figures

BEGIN = "<!-- chaos-figures:begin (written by scripts/chaos.py --record) -->"
END = "<!-- chaos-figures:end -->"
CLUSTER_BEGIN = "<!-- chaos-cluster-figures:begin (written by scripts/chaos.py --record) -->"
CLUSTER_END = "<!-- chaos-cluster-figures:end -->"
MARKERS = {"single": (BEGIN, END), "cluster": (CLUSTER_BEGIN, CLUSTER_END)}
TITLES = {"single": "the single stack", "cluster": "the clustered stack"}
# What a cluster fault's notes say about its times, in the order told.
FAULT_TIMES = (
    ("broker killed", "{} down"),
    ("broker down s", " {} s"),
    ("leaders moved after s", ", leaders moved after {} s"),
    ("master killed", "{} down"),
    ("master down s", " {} s"),
    ("replica promoted after s", ", replica promoted after {} s"),
)


@dataclass
class Phase:
    """The scenarios played on one stack, by one deployment."""

    name: str  # "single" or "cluster"
    figures: list[Figures]  # one per scenario, then the phase's whole ("all")
    runtime_s: float
    stack: str  # what it ran on

    @property
    def passed(self) -> bool:
        return all(f.passed for f in self.figures)


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


def fault_times(figures: list[Figures]) -> str:
    """The cluster faults' times (victim, down for, failover seen), one per scenario."""
    told = []
    for f in figures:
        parts = [
            form.format(str(f.notes[key]).split(" (")[0])
            for key, form in FAULT_TIMES
            if f.notes.get(key) is not None
        ]
        if parts:
            told.append(f"{f.scenario}: {''.join(parts)}")
    return "; ".join(told)


def section(header: dict[str, Any], phase: Phase) -> str:
    verdict = "PASS" if phase.passed else "FAIL"
    on = f"on {phase.stack}, " if phase.name == "cluster" else ""
    lines = [
        f"Run of {header['date']}: `{header['command']}` ({header['mode']} mode, "
        f"{TITLES[phase.name]}), {phase.runtime_s:.0f} s {on}on {header['machine']}. "
        f"Verdict: **{verdict}**.",
        "",
    ]
    if times := fault_times(phase.figures):
        lines += [f"Faults: {times}.", ""]
    lines += [table(phase.figures), ""]
    if extra := details(phase.figures):
        lines += [extra, ""]
    return "\n".join(lines)


def as_json(header: dict[str, Any], phases: list[Phase]) -> dict[str, Any]:
    """The header, ``scenarios`` (the single stack's rows, as ever) and, when the
    cluster phase ran, ``cluster`` with its own."""
    by_name = {p.name: p for p in phases}
    single = by_name.get("single")
    out: dict[str, Any] = {
        **header,
        "passed": all(p.passed for p in phases),
        "scenarios": _rows(single.figures) if single else [],
    }
    if cluster := by_name.get("cluster"):
        out["cluster"] = {
            "passed": cluster.passed,
            "runtime_s": round(cluster.runtime_s, 1),
            "stack": cluster.stack,
            "scenarios": _rows(cluster.figures),
        }
    return out


def _rows(figures: list[Figures]) -> list[dict[str, Any]]:
    return [dataclasses.asdict(f) | {"passed": f.passed} for f in figures]


def record(document: Path, text: str, phase: str = "single") -> None:
    r"""Replace what is between ``phase``'s markers in ``document`` with ``text``: the
    other phase's figures stay (a ``--cluster`` run keeps the single stack's).

    >>> import tempfile
    >>> doc = Path(tempfile.mkdtemp()) / "reliability.md"
    >>> _ = doc.write_text(f"{BEGIN}\nsingle\n{END}\n{CLUSTER_BEGIN}\nold\n{CLUSTER_END}\n")
    >>> record(doc, "cluster", "cluster")
    >>> short = {BEGIN: "B", END: "E", CLUSTER_BEGIN: "CB", CLUSTER_END: "CE"}
    >>> [short.get(line, line) for line in doc.read_text().splitlines()]
    ['B', 'single', 'E', 'CB', 'cluster', 'CE']
    """
    begin, end = MARKERS[phase]
    content = document.read_text()
    before, found, rest = content.partition(begin)
    _, found_end, after = rest.partition(end)
    if not (found and found_end):
        raise ValueError(f"{document} has no figures markers ({begin} ... {end})")
    document.write_text(f"{before}{begin}\n{text}\n{end}{after}")
