"""One benchmark command: every figure of docs/benchmarks.md, measured side by side.

    .venv/bin/python scripts/bench.py            # full run, writes docs/benchmarks.md
    .venv/bin/python scripts/bench.py --quick    # smoke check: small sizes, one run

In one run, each part of Eddy is measured next to a bare baseline doing the same I/O:

- feature ingestion: ``eddy run features`` vs a bare aiokafka + Redis loop, a faust
  no-op agent and the pipeline in-process (``bench_features.py``);
- learning: ``eddy run learner`` and the learner in-process vs bare River loops and a
  bare kafka-python consume loop (``bench_learner.py``), plus detection delays;
- prediction: ``eddy run predictor`` vs a bare kafka-python echo on the same request
  stream, throughput and round-trip p50/p99/p99.9 (``bench_predictor.py``);
- drift alert → promoted champion, seconds, next to the bare fit (``bench_retrain.py``);
- scaling: feature workers and predictors with 1, 2 and 4 processes and as many
  partitions (``bench_scaling.py``), on the single-node stack and again on the clustered
  one (``scripts/stack.sh up --cluster``: 3 brokers, replication factor 3, a Redis
  Cluster of 3 masters; started for the section when not running, stopped after);
- memory: the peak resident set (``VmHWM``) of every process the runs start;
- performance estimation: Eddy's estimate of a served classifier's accuracy from its
  answers vs the realized accuracy, vs Eddy's label-based alert and vs NannyML's CBPE,
  on seeded streams with a known change (``bench_estimate.py``; CPU only, no stack).

Every figure is reported as the median, min and max over the runs, with ratios to its
baseline and the function that measured it; the report goes to stdout and to a
Markdown file (docs/benchmarks.md for a full run of every section; a file under
.eddy/bench otherwise). The explanatory prose of that file lives here, next to the
numbers it quotes. Uses the running stack (``eddy up``), each measurement on a
throw-away topic prefix and data folder of its own.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import bench_end_to_end
import bench_estimate
import bench_features
import bench_learner
import bench_predictor
import bench_retrain
import bench_scaling
import bench_state

from eddy.services.config.settings import Settings
from eddy.streams.drift.estimate import BINS, EstimateConfig
from eddy.streams.transport.clients import make_consumer, make_redis

DOCS = ROOT / "docs" / "benchmarks.md"
BENCH_DIR = bench_features.BENCH_DIR
MEMORY_SAMPLE_S = 0.2
STAT_STARTTIME = 19  # /proc/<pid>/stat field 22, counted after the command's ")"
STAT_PPID = 1  # field 4, counted likewise
KIB_PER_MIB = 1024
FEATURE_TARGET = 0.5  # eddy run features / bare
FEATURE_PEER_TARGET = 2.0  # eddy run features / the Quix Streams peer on the same features
PIPELINE_TARGET = 0.8  # FeaturePipeline.handle in-process / bare
LEARNER_PROCESS_TARGET = 0.5  # eddy run learner / bare River loop
LEARNER_TARGET = 1.0  # the in-process learner, one by one, default drift cadence / bare
DRIFT_COST_TARGET = 0.10  # what the default drift cadence may cost the in-process learner
PREDICTOR_P99_TARGET = 1.2  # eddy p99 / bare echo p99
PREDICTOR_THROUGHPUT_TARGET = 0.8  # eddy / bare consume -> predict -> produce
PROMOTION_TARGET_S = 60.0  # "seconds, not minutes"


@dataclass(frozen=True)
class Sizes:
    runs: int
    events: int
    examples: int
    batch: int
    windows: tuple[int, ...]
    backlog: int
    paced: int
    rate: float
    scale_events: int
    scale_requests: int
    e2e_events: int
    e2e_requests: int
    processes: tuple[int, ...] = (1, 2, 4)
    estimate: bench_estimate.Sizes = bench_estimate.FULL  # its own seeds: --runs leaves them
    state_events: int = 500  # timed events per state depth (bench_state.py)


FULL = Sizes(
    3, 50_000, 100_000, 500, (10_000, 100_000), 20_000, 3_000, 250.0, 30_000, 10_000, 30_000, 10_000
)
QUICK = Sizes(
    1,
    10_000,
    3_000,
    500,
    (2_000,),
    3_000,
    1_000,
    250.0,
    10_000,
    3_000,
    5_000,
    2_000,
    estimate=bench_estimate.QUICK,
    state_events=100,
)


@dataclass(frozen=True)
class Column:
    header: str
    fmt: str


@dataclass
class Row:
    label: str
    source: str
    baseline: str | None
    values: dict[str, list[float]] = field(default_factory=dict)

    def median(self, column: str) -> float:
        return statistics.median(self.values[column])


@dataclass
class Table:
    title: str
    columns: dict[str, Column]
    rows: dict[str, Row] = field(default_factory=dict)

    def add(
        self, label: str, value: float, source: str, baseline: str | None = None, column: str = ""
    ) -> None:
        column = column or next(iter(self.columns))
        row = self.rows.setdefault(label, Row(label, source, baseline))
        row.values.setdefault(column, []).append(value)
        shown = format(value, self.columns[column].fmt)
        print(f"  {label}: {shown} {self.columns[column].header}   <- {source}", flush=True)

    def median(self, label: str, column: str = "") -> float:
        return self.rows[label].median(column or next(iter(self.columns)))

    def ratio(self, label: str, baseline: str, column: str = "") -> float:
        return self.median(label, column) / self.median(baseline, column)


RATE = {"rate": Column("events/s", ",.0f")}
EXAMPLES = {"rate": Column("examples/s", ",.0f")}
REQUESTS = {"rate": Column("requests/s", ",.0f")}
LATENCY = {
    "throughput": Column("requests/s", ",.0f"),
    "p50": Column("p50 ms", ".1f"),
    "p99": Column("p99 ms", ".1f"),
    "p99.9": Column("p99.9 ms", ".1f"),
}
SECONDS = {"champion": Column("alert → champion s", ".2f"), "fit": Column("bare fit s", ".2f")}
MEMORY = {"peak": Column("peak RSS MiB", ",.0f")}
E2E = {"events": Column("events/s", ",.0f"), "requests": Column("requests/s answered", ",.0f")}
ESTIMATE_ERROR = {
    "accuracy": Column("accuracy MAE", ".3f"),
    "accuracy_after": Column("accuracy MAE, windows after the change", ".3f"),
    "roc_auc": Column("ROC AUC MAE", ".3f"),
}
ESTIMATE_ALERTS = {
    "estimated": Column("estimated alert", ",.0f"),
    "disagrees": Column("labels disagree", ",.0f"),
    "label": Column("label-based alert", ",.0f"),
    "earlier": Column("estimated alert earlier by", ",.0f"),
}
FALSE_ALARMS = {
    "estimated": Column("estimated alerts", ".0f"),
    "disagrees": Column("labels disagree", ".0f"),
    "label": Column("label-based alerts", ".0f"),
}
STATE_COSTS = {
    "fold": Column("fold µs", ".1f"),
    "vector": Column("vector µs", ".1f"),
    "write": Column("write µs", ".1f"),
    "read": Column("read µs", ".1f"),
    "bare_write": Column("bare write µs", ".1f"),
    "bare_read": Column("bare read µs", ".1f"),
    "bytes": Column("state bytes", ",.0f"),
}
ESTIMATE_EARLIER_TARGET = 5_000  # events, covariate shift, labels 10,000 events late


class PeakMemory(threading.Thread):
    """Peak resident set (``VmHWM``) of every Eddy service process this command starts
    (``eddy run ...``), and during which measurement (:attr:`section`) it ran.

    The baselines' processes are left out: they import the benchmark scripts' modules,
    so their size would say nothing about a bare loop.
    """

    def __init__(self) -> None:
        super().__init__(name="peak-memory", daemon=True)
        self.section = ""
        self.peaks: dict[tuple[int, str], tuple[str, str, int]] = {}
        self._stopping = threading.Event()

    def run(self) -> None:
        while not self._stopping.wait(MEMORY_SAMPLE_S):
            for pid in bench_features.descendants(os.getpid()):
                with contextlib.suppress(OSError, ValueError, IndexError):
                    self._sample(pid)

    def _sample(self, pid: int) -> None:
        proc = Path(f"/proc/{pid}")
        service = _service_of(pid)
        status = (proc / "status").read_text().splitlines()
        kib = next((int(line.split()[1]) for line in status if line.startswith("VmHWM:")), None)
        if service is None or kib is None:  # not a service, or already exited
            return
        key = (pid, (proc / "stat").read_text().rsplit(")", 1)[1].split()[STAT_STARTTIME])
        section = self.peaks[key][0] if key in self.peaks else self.section
        self.peaks[key] = (section, service, kib)  # VmHWM only grows

    def stop(self) -> None:
        self._stopping.set()
        self.join(timeout=5)

    def table(self) -> Table:
        table = Table("Memory per process", MEMORY)
        for section, service, kib in self.peaks.values():
            name = f"{service} ({section})"
            row = table.rows.setdefault(name, Row(name, f"PeakMemory: VmHWM of {service}", None))
            row.values.setdefault("peak", []).append(kib / KIB_PER_MIB)
        return table


def eddy_service(argv: list[bytes]) -> str | None:
    """``eddy run <service>`` from a process's command line (None: something else).

    >>> eddy_service([b"/v/bin/python", b"/v/bin/eddy", b"run", b"features", b""])
    'eddy run features'
    >>> eddy_service([b"python", b"scripts/bench_predictor.py", b"echo", b""]) is None
    True
    """
    args = [a.decode(errors="replace") for a in argv if a]
    if len(args) >= 3 and Path(args[-3]).name == "eddy" and args[-2] == "run":
        return f"eddy run {args[-1]}"
    return None


def _service_of(pid: int) -> str | None:
    """The service a process is: ``eddy run <service>``, or the reader process such a
    service started (multiprocessing's spawn_main, whose parent is the service)."""
    proc = Path(f"/proc/{pid}")
    argv = (proc / "cmdline").read_bytes().split(b"\0")
    if not any(b"spawn_main" in arg for arg in argv):
        return eddy_service(argv)
    parent = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[STAT_PPID])
    service = eddy_service(Path(f"/proc/{parent}/cmdline").read_bytes().split(b"\0"))
    return None if service is None else f"{service}, reader process"


@dataclass
class Bench:
    base: Settings
    sizes: Sizes
    memory: PeakMemory
    tables: dict[str, Table] = field(default_factory=dict)
    detection: list[list[str]] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    # Per service of the end-to-end runs: (resident MiB half-way, at the end) per run.
    e2e_memory: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    estimates: list[bench_estimate.Outcome] = field(default_factory=list)

    def table(self, key: str, title: str, columns: dict[str, Column]) -> Table:
        return self.tables.setdefault(key, Table(title, columns))

    def features(self) -> None:
        table = self.table("features", "Feature ingestion, one worker", RATE)
        sources = {
            "bare": "bench_features.bare_loop",
            "noop": "bench_features.worker_rate (bench_features.py noop-worker)",
            "pipeline": "bench_features.pipeline_rate",
            "floor": "bench_floor.contract_floor",
            "floor_writes": "bench_floor.writes_floor",
            "eddy": "bench_features.worker_rate (eddy run features)",
            "eddy_faust": "bench_features.worker_rate (eddy run features, faust engine)",
            "quix": "bench_features.worker_rate (scripts/peers/quix_features.py)",
            "faust": "bench_features.worker_rate (bench_features.py same-work-worker)",
        }
        for run in range(self.sizes.runs):
            print(f"features, run {run + 1}", flush=True)
            rates = bench_features.measure(self.base, self.sizes.events)
            for key, label in bench_features.LABELS.items():
                baseline = None if key == "bare" else bench_features.LABELS["bare"]
                table.add(label, rates[key], sources[key], baseline)
        depth = self.table("state_depth", "An entity's state per event, by depth", STATE_COSTS)
        for run in range(self.sizes.runs):
            print(f"state depth, run {run + 1}", flush=True)
            for per_hour, costs in bench_state.measure(self.sizes.state_events).items():
                label = f"{per_hour:,} events an hour"
                source = f"bench_state.depth_costs({per_hour})"
                for step, micros in costs.micros.items():
                    depth.add(label, micros, source, column=step)
                depth.add(label, costs.state_bytes, source, column="bytes")

    def learner(self) -> None:
        table = self.table("learner", "Learning", EXAMPLES)
        rows = bench_learner.sea(self.sizes.examples)
        batch, sparse = self.sizes.batch, bench_learner.SPARSE_CHECKS
        measures: dict[str, tuple[Callable[[], float], str]] = {
            "bare": (lambda: bench_learner.bare_loop(rows), "bench_learner.bare_loop"),
            "floor": (lambda: bench_learner.watched_floor(rows), "bench_learner.watched_floor"),
            "one_by_one": (lambda: bench_learner.learner_core(rows), "bench_learner.learner_core"),
            "mini_batch": (
                lambda: bench_learner.learner_core(rows, batch=batch),
                f"bench_learner.learner_core(batch={batch})",
            ),
            "one_by_one_sparse": (
                lambda: bench_learner.learner_core(rows, check_every=sparse),
                f"bench_learner.learner_core(check_every={sparse})",
            ),
            "mini_batch_sparse": (
                lambda: bench_learner.learner_core(rows, batch=batch, check_every=sparse),
                f"bench_learner.learner_core(batch={batch}, check_every={sparse})",
            ),
            "bare_tree": (
                lambda: bench_learner.bare_loop(rows, "tree"),
                "bench_learner.bare_loop(tree)",
            ),
            "tree": (
                lambda: bench_learner.learner_core(rows, "hoeffding_adaptive_tree"),
                "bench_learner.learner_core(hoeffding_adaptive_tree)",
            ),
            "consume": (
                lambda: bench_learner.bare_consume(rows, self.base),
                "bench_learner.bare_consume",
            ),
            "consume_decode": (
                lambda: bench_learner.bare_consume(rows, self.base, validate=True),
                "bench_learner.bare_consume(validate=True)",
            ),
            "consume_trusted": (
                lambda: bench_learner.bare_consume(rows, self.base, trusted=True),
                "bench_learner.bare_consume(trusted=True)",
            ),
            "read_learn": (
                lambda: bench_learner.read_and_learn(rows, self.base),
                "bench_learner.read_and_learn",
            ),
            "read_learn_batch": (
                lambda: bench_learner.read_and_learn(rows, self.base, batch),
                f"bench_learner.read_and_learn(batch={batch})",
            ),
            "reader_learn": (
                lambda: bench_learner.read_and_learn(rows, self.base, reader_process=True),
                "bench_learner.read_and_learn(reader_process=True)",
            ),
            "reader_learn_batch": (
                lambda: bench_learner.read_and_learn(rows, self.base, batch, reader_process=True),
                f"bench_learner.read_and_learn(batch={batch}, reader_process=True)",
            ),
            "process": (
                lambda: bench_learner.learner_process(rows, self.base),
                "bench_learner.learner_process (eddy run learner)",
            ),
            "process_batch": (
                lambda: bench_learner.learner_process(rows, self.base, batch),
                f"bench_learner.learner_process(batch={batch}) (eddy run learner)",
            ),
            "process_thread": (
                lambda: bench_learner.learner_process(rows, self.base, reader_process=False),
                "bench_learner.learner_process(reader_process=False)",
            ),
            "process_thread_batch": (
                lambda: bench_learner.learner_process(rows, self.base, batch, reader_process=False),
                f"bench_learner.learner_process(batch={batch}, reader_process=False)",
            ),
        }
        labels = dict(bench_learner.ROWS)
        for run in range(self.sizes.runs):
            print(f"learner, run {run + 1}", flush=True)
            for key, (measure, source) in measures.items():
                baseline = labels[bench_learner.BASELINE.get(key, "bare")]
                table.add(
                    labels[key], measure(), source, None if baseline == labels[key] else baseline
                )
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            bench_learner.detection_table()
        lines = [line.split() for line in out.getvalue().splitlines()]
        self.detection = [cells for cells in lines if len(cells) == 5 and cells[0] != "detector"]

    def prediction(self) -> None:
        table = self.table("prediction", "Prediction", LATENCY)
        sizes = self.sizes
        source = {
            "echo": "bench_predictor.measure_system (bench_predictor.py echo)",
            "bare_predict": "bench_predictor.measure_system (bench_predictor.py predict)",
            "predictor": "bench_predictor.measure_system (eddy run predictor)",
        }
        for run in range(sizes.runs):
            print(f"prediction, run {run + 1}", flush=True)
            results = bench_predictor.measure(self.base, sizes.backlog, sizes.paced, sizes.rate)
            for key, result in results.items():
                label = bench_predictor.LABELS[key]
                baseline = None if key == "echo" else bench_predictor.LABELS["echo"]
                table.add(label, result.throughput, source[key], baseline, "throughput")
                for q in (50.0, 99.0, 99.9):
                    table.add(label, result.percentile(q), source[key], baseline, f"p{q:g}")

    def retrain(self) -> None:
        table = self.table("retrain", "Drift alert → new champion", SECONDS)
        for window in self.sizes.windows:
            print(f"retrain, window {window:,}", flush=True)
            seconds, fits = bench_retrain.measure_window(self.base, window, self.sizes.runs)
            label = f"{window:,} examples"
            source = "bench_retrain.alert_to_champion; bench_retrain.bare_fit"
            for value in seconds:
                table.add(label, value, source, column="champion")
            for value in fits:
                table.add(label, value, source, column="fit")

    def scaling(self) -> None:
        self._scale(self.base, "")

    def scaling_cluster(self) -> None:
        with clustered_stack(self.base) as cluster:
            self._scale(cluster, "_cluster", ", clustered stack")

    def _scale(self, base: Settings, key: str, where: str = "") -> None:
        services = {
            "features": ("Scaling: feature workers", RATE, bench_scaling.feature_workers),
            "predictor": ("Scaling: predictors", REQUESTS, bench_scaling.predictors),
        }
        sizes = {"features": self.sizes.scale_events, "predictor": self.sizes.scale_requests}
        one = self.sizes.processes[0]
        for service, (title, columns, measure) in services.items():
            table = self.table(f"scaling_{service}{key}", title + where, columns)
            for n in self.sizes.processes:
                print(f"scaling {service}{where}, {_scale_label(n)}", flush=True)
                self.memory.section = f"scaling{where}, {_scale_label(n)}"
                for rate in measure(base, n, sizes[service], self.sizes.runs):
                    table.add(
                        _scale_label(n),
                        rate,
                        f"bench_scaling.{measure.__name__}",
                        None if n == one else _scale_label(one),
                    )

    def end_to_end(self) -> None:
        table = self.table("end_to_end", "End to end, every service running", E2E)
        for run in range(self.sizes.runs):
            print(f"end to end, run {run + 1}", flush=True)
            result = bench_end_to_end.measure(
                self.base, self.sizes.e2e_events, self.sizes.e2e_requests
            )
            label, source = "events in → champion answers out", "bench_end_to_end.measure"
            table.add(label, result.events_per_s, source, column="events")
            table.add(label, result.requests_per_s, source, column="requests")
            for service, (halfway, end) in result.rss_mib.items():
                self.e2e_memory.setdefault(service, []).append((halfway, end))

    def estimate(self) -> None:
        errors = self.table("estimate_error", "Estimated vs realized, per window", ESTIMATE_ERROR)
        alerts = self.table("estimate_alerts", "Alerts, events after the change", ESTIMATE_ALERTS)
        false = self.table("estimate_false", "False alarms", FALSE_ALARMS)
        print("estimate", flush=True)
        self.estimates = bench_estimate.measure(self.sizes.estimate)
        for o in sorted(self.estimates, key=bench_estimate.order):
            label = f"{o.scenario}, {o.method}"
            source = (
                "bench_estimate.nannyml_outcomes (scripts/peers/nannyml_cbpe.py)"
                if o.method == bench_estimate.NANNYML
                else "bench_estimate.replay"
            )
            errors.add(label, o.accuracy_mae, source, column="accuracy")
            errors.add(label, o.accuracy_mae_after, source, column="accuracy_after")
            errors.add(label, o.roc_auc_mae, source, column="roc_auc")
            found = [o.false_estimated, o.false_disagreements, o.false_label_alerts]
            for column, count in zip(FALSE_ALARMS, found, strict=True):
                if count is not None:  # None: NannyML has no such alert
                    false.add(label, count, source, column=column)
            if o.scenario == bench_estimate.CONTROL:
                continue
            earlier = None
            if o.label_alert is not None and o.degraded is not None:
                earlier = o.label_alert - o.degraded
            fired = [o.degraded, o.disagreed, o.label_alert, earlier]
            alerts.rows.setdefault(label, Row(label, source, None))  # a row even if none fired
            for column, events in zip(ESTIMATE_ALERTS, fired, strict=True):
                if events is not None:
                    alerts.add(label, events, source, column=column)

    SECTIONS = (
        "features",
        "learner",
        "prediction",
        "retrain",
        "scaling",
        "scaling_cluster",
        "end_to_end",
        "estimate",
    )

    def run(self, sections: list[str]) -> list[str]:
        """Measure ``sections`` in order; returns those that failed (their tables are
        dropped, the others are still reported)."""
        failed = []
        for section in sections:
            self.memory.section = SECTION_NAMES.get(section, section)
            before = set(self.tables)
            started = time.monotonic()
            try:
                getattr(self, section)()
            except Exception:
                traceback.print_exc()
                print(f"{section}: FAILED, left out of the report", flush=True)
                failed.append(section)
                for key in set(self.tables) - before:
                    del self.tables[key]
            self.seconds[section] = time.monotonic() - started
            print(f"{section}: {self.seconds[section] / 60:.1f} min", flush=True)
        self.tables["memory"] = self.memory.table()
        return failed


def _end_to_end_text(bench: Bench) -> str:
    t = bench.tables["end_to_end"]
    label = next(iter(t.rows))
    events = t.median(label, "events")
    features = bench.tables.get("features")
    peers = ""
    if features is not None:
        labels = bench_features.LABELS
        quix, alone = features.median(labels["quix"]), features.median(labels["eddy"])
        peers = f"""

Next to the parts measured alone above: `eddy run features` alone ran at {alone:,.0f}
events/s, so with every service sharing the machine the whole loop keeps
{events / alone:.2f}x of it. The Quix Streams peer computing the features alone, before
any learning or serving, ran at {quix:,.0f} events/s: a system built from the peers would
add a learner and a predictor to that, sharing the same cores, so its sum can only be
slower than {quix:,.0f} events/s end to end, which Eddy's whole loop reaches
{events / quix:.2f}x."""
    growth = "\n".join(
        f"| eddy run {service} | "
        + ", ".join(f"{a:,.0f} → {b:,.0f}" for a, b in bench.e2e_memory[service])
        + " |"
        for service in sorted(bench.e2e_memory)
    )
    service, grew = max(
        ((name, end - halfway) for name, runs in bench.e2e_memory.items() for halfway, end in runs),
        key=lambda item: item[1],
    )
    return f"""## End to end (`scripts/bench_end_to_end.py`)

`eddy run features`, `learner`, `predictor` and `retrainer` run together on a fresh
deployment with the prediction benchmark's champion. {bench.sizes.e2e_events:,} events (one
in {bench_features.LABEL_EVERY} labelled) and {bench.sizes.e2e_requests:,} prediction requests
are sent at the same time; the clock stops when the feature workers committed every event,
the learner sealed a checkpoint holding every training example and every answer was read
back. Events/s is the events over that time; the requests were answered within it.

{markdown(t)}{peers}

Resident memory of each service, in MiB, once half the events were committed → at the
end, per run; the most any grew over the second half of a run is {grew:,.0f} MiB
(`eddy run {service}`):

| service | RSS half-way → end, per run |
|---|---|
{growth}"""


def _estimate_text(bench: Bench) -> str:
    be, sizes, config = bench_estimate, bench.sizes.estimate, EstimateConfig()
    errors, alerts = bench.tables["estimate_error"], bench.tables["estimate_alerts"]
    outcomes, runs = bench.estimates, len(sizes.seeds)
    late = be.eddy_method(be.DELAYS[-1])

    def of(scenario: str, method: str) -> list[be.Outcome]:
        return [o for o in outcomes if o.scenario == scenario and o.method == method]

    compared = [  # where estimation should work: every delay against NannyML
        (f"{scenario}, {method}", f"{scenario}, {be.NANNYML}")
        for scenario in (be.CONTROL, be.COVARIATE)
        for method in be.METHODS[:-1]
    ]

    def against_nannyml(key: str, name: str) -> str:
        worse = [
            f"{eddy}: {errors.median(eddy, key):.4f} against {errors.median(peer, key):.4f}"
            for eddy, peer in compared
            if errors.median(eddy, key) > errors.median(peer, key)
        ]
        if not worse:
            return f"{name}: no worse in all {len(compared)}"
        return f"{name}: no worse in {len(compared) - len(worse)} of {len(compared)}; worse in " + (
            "; ".join(worse)
        )

    def auc_bias(scenario: str, method: str) -> float:
        return statistics.median(o.roc_auc_bias for o in of(scenario, method))

    biases = ", ".join(
        f"{auc_bias(be.CONTROL, be.eddy_method(d)):+.4f} at D = {d:,}" for d in be.DELAYS
    )
    auc_limit = ""
    if any(
        errors.median(eddy, "roc_auc") > errors.median(peer, "roc_auc") for eddy, peer in compared
    ):
        worst = max(
            (errors.median(eddy, "roc_auc") - errors.median(peer, "roc_auc"), eddy, peer)
            for eddy, peer in compared
        )
        gap, eddy_row, peer_row = worst
        spread = min(
            max(errors.rows[row].values["roc_auc"]) - min(errors.rows[row].values["roc_auc"])
            for row in (eddy_row, peer_row)
        )
        within = (
            f"The largest gap, {gap:.4f}, is {'within' if gap < spread else 'beyond'} the spread "
            f"over seeds of either row ({spread:.4f})"
        )
        auc_limit = f""" What limits Eddy's ROC AUC: both estimates run low (mean estimated
minus realized over the windows, median over seeds, on the control: Eddy {biases};
NannyML {auc_bias(be.CONTROL, be.NANNYML):+.4f}). {within}. Eddy calibrates one value per
score bin ({BINS} bins, {1 / BINS:g} wide, an isotonic fit over the bins with a prior at
each bin's centre); NannyML fits isotonic regression on the reference's raw scores. With
50 bins Eddy's bias was about -0.009 (a confident model's answers crowd the lowest bin,
where pairs count as coin flips); reading the map between bin centres for the ROC AUC
changed nothing measurable, so it is not done."""

    error_met = all(
        errors.median(eddy, key) <= errors.median(peer, key)
        for eddy, peer in compared
        for key in ("accuracy", "roc_auc")
    )
    covariate = of(be.COVARIATE, late)
    earlier = [
        o.label_alert - o.degraded
        for o in covariate
        if o.label_alert is not None and o.degraded is not None
    ]
    earlier_met = len(earlier) == runs and min(earlier) >= ESTIMATE_EARLIER_TARGET
    control = [o for o in outcomes if o.scenario == be.CONTROL and o.method != be.NANNYML]
    control_alarms = sum(o.false_estimated + (o.false_disagreements or 0) for o in control)
    elsewhere = [o for o in outcomes if o.scenario != be.CONTROL and o.method != be.NANNYML]
    before_change = sum(o.false_estimated + (o.false_disagreements or 0) for o in elsewhere)
    nannyml_control = sum(o.false_estimated for o in of(be.CONTROL, be.NANNYML))
    label_control = sum(o.false_label_alerts or 0 for o in control)
    fewer = [
        f"{label}, {alerts.columns[key].header}: {len(row.values.get(key, []))} of {runs}"
        for label, row in alerts.rows.items()
        for key in ("estimated", "disagrees", "label")
        if 0 < len(row.values.get(key, [])) < runs
    ]
    concept = [o for o in outcomes if o.scenario == be.CONCEPT and o.method != be.NANNYML]
    concept_fired = [o.degraded for o in concept if o.degraded is not None]
    concept_estimated = (
        f"""The estimated alert fired there in {len(concept_fired)} of {len(concept)} replays,
only once labels had moved the calibration table (median
{statistics.median(concept_fired):,.0f} events after the change)."""
        if concept_fired
        else f"""The estimated alert fired there in none of the {len(concept)} replays: the
scores did not move, and the reference window is estimated with the same calibration
as the current one, so the labels that recalibrate the table move both alike."""
    )
    x2 = f"{'-' if be.X2 < 0 else '+'} {abs(be.X2):g}"

    def realized(scenario: str, field: str) -> float:
        return statistics.median(getattr(o, field) for o in of(scenario, be.eddy_method(0)))

    fired = (
        f"Cells over fewer runs than seeds (it fired in only some): {'; '.join(fewer)}."
        if fewer
        else "Every alert shown fired in every run."
    )
    took = bench.seconds.get("estimate", 0.0)
    return f"""## Performance estimated before the labels (`scripts/bench_estimate.py`)

Per seed ({runs} seed{"s" if runs > 1 else ""}; figures are the median and min-max over them, not
the best run), a binary stream with a fixed true rule over four standard normal
inputs, P(positive | x) = sigmoid({be.SLOPE:g} (x1 - {be.CENTRE:g}) {x2} x2 + x3 x4),
and a served model fitted on {sizes.reference:,} reference examples by scikit-learn's
`HistGradientBoostingClassifier` (the retrainer's default estimator: a good model, not a
perfectly calibrated one). {sizes.reference:,} more reference examples are its holdout:
they seed the version's calibration table (`Calibration.from_pairs`), as training does,
and are NannyML's reference. Three streams of {sizes.events:,} answers, changing at answer
{sizes.change_at:,}: the **control** (nothing changes; realized accuracy
{realized(be.CONTROL, "realized_after"):.3f}); a **covariate shift** (x1's mean moves from 0
to {be.SHIFT:g}, toward the line where the model decides; the rule is unchanged: the
realized accuracy falls from {realized(be.COVARIATE, "realized_before"):.3f} to
{realized(be.COVARIATE, "realized_after"):.3f}, medians over seeds, and the scores show it);
a **concept shift** (x2's effect reverses, its coefficient {be.X2:g} → {-be.X2:g}; the
inputs, so the scores, stay as they were while the realized accuracy falls from
{realized(be.CONCEPT, "realized_before"):.3f} to {realized(be.CONCEPT, "realized_after"):.3f}:
no estimate from scores can see it). Each stream is replayed event by event once per
label delay D ({", ".join(f"{d:,}" for d in be.DELAYS)} events): answer i reaches
`EstimateWatch.served` at event i, and its label reaches `EstimateWatch.labelled` and
`ServedWatch.update_many` (Eddy's label-based alert: its concept findings) at event i + D.
Both run with Eddy's defaults: `EstimateConfig()` (a window of {config.window:,} answers
checked every {config.check_every}, `min_drop` {config.min_drop:g}, `band_z`
{config.band_z:g}), and the learner's detector, cooldown and seed.

Error of the estimate: per window of {config.window:,} answers (aligned chunks), the
estimate as known at the window's last answer (calibrated by the labels arrived by then)
against the window's realized accuracy and ROC AUC, computed afterwards from every label;
the mean absolute error over the {sizes.events // config.window} windows, and over the
windows after the change. NannyML's CBPE (rows "{be.NANNYML}": `nannyml.CBPE` 0.13.1 in its
own virtualenv, `scripts/peers/nannyml_cbpe.py`) is fitted on the same holdout and estimates
the same windows in batch, with its own thresholds. The two differ in what they know:
NannyML sees each window whole and calibrates on the reference only, so label delay does
not concern it; Eddy estimates as answers arrive and also calibrates on the labels as
they land (with D = 0, a window's estimate has been calibrated on most of that window's
own labels).

{markdown(errors)}

**The target, an estimate error no worse than NannyML's on the same windows,
{verdict(error_met)}.** Eddy's median MAE against NannyML's, on the control and the
covariate shift at each delay ({len(compared)} rows, where estimation should work):
{against_nannyml("accuracy", "accuracy")}. {against_nannyml("roc_auc", "ROC AUC")}.{auc_limit}
On the concept shift neither can follow the change (the estimate stays
where it was while accuracy falls); Eddy's error there shrinks as labels recalibrate its
table, fastest with the shortest delay.

Alerts, in events after the change (an empty cell: it never fired in any run; NannyML has
no label-based alert or label check): the estimated alert (`estimated_degradation`;
NannyML: the end of its first window flagged on accuracy), the labels-disagree finding
(`estimate_disagrees`), the label-based alert, and how many events earlier the estimated
alert fired than the label-based one (label-based minus estimated; negative: later).

{markdown(alerts)}

{fired}

**Under a {be.DELAYS[-1]:,}-event label delay on the covariate shift, the estimated alert
fired {min(earlier, default=0):,} to {max(earlier, default=0):,} events before the
label-based one ({len(earlier)} of {runs} runs with both): the target (at least
{ESTIMATE_EARLIER_TARGET:,} events earlier) {verdict(earlier_met)}.** With labels on time
(D = 0) the label-based alert is the earlier one: the estimate needs a good part of its
{config.window:,}-answer window to be past the change before it
falls by `min_drop`, while ADWIN sees the errors rise within a few hundred labels. On the
concept shift the estimate cannot fire from the scores; what catches it is the label
check, which fired {alerts.median(f"{be.CONCEPT}, {late}", "disagrees"):,.0f} events after
the change at D = {be.DELAYS[-1]:,}, the label-based alert
{alerts.median(f"{be.CONCEPT}, {late}", "label"):,.0f} (medians). {concept_estimated}

False alarms: every finding on the control, and every one before the change in the
other two streams, per run.

{markdown(bench.tables["estimate_false"])}

**The target, 0 false alarms on the control, {verdict(control_alarms == 0)}**
({control_alarms} estimated or labels-disagree findings over {len(control)} control
replays; {before_change} before the change in the {len(elsewhere)} others). On the same
control runs the label-based alert raised {label_control} and NannyML flagged
{nannyml_control} window(s). The section took {took / 60:.1f} min on this machine
({len(sizes.seeds) * len(be.SCENARIOS) * len(be.DELAYS)} replays of
{sizes.events:,} answers on {be.REPLAY_WORKERS} worker processes, then NannyML)."""


def _scale_label(n: int) -> str:
    return f"{n} process{'es' if n > 1 else ''}, {n} partition{'s' if n > 1 else ''}"


# --- the report --------------------------------------------------------------------------


def cell(values: list[float], fmt: str) -> str:
    """Median and spread of one figure.

    >>> cell([3.0, 1.0, 2.0], ".1f")
    '2.0 (1.0-3.0)'
    >>> cell([5.0], ",.0f")
    '5'
    """
    median = format(statistics.median(values), fmt)
    if len(values) == 1:
        return median
    return f"{median} ({format(min(values), fmt)}-{format(max(values), fmt)})"


def markdown(table: Table) -> str:
    """A table of medians (min-max); ratios to each row's baseline as a column (one
    figure per row) or as rows below (several figures per row)."""
    columns = list(table.columns.items())
    baselines = {row.baseline for row in table.rows.values() if row.baseline}
    ratio_column = len(columns) == 1 and bool(baselines)
    headers = ["what", *(f"{c.header}, median (min-max)" for _, c in columns)]
    if ratio_column:
        headers.append(f"ratio to {min(baselines)}" if len(baselines) == 1 else "ratio")
    lines = [
        "| " + " | ".join([*headers, "measured by"]) + " |",
        "|" + "---|" * (len(headers) + 1),
    ]
    for row in table.rows.values():
        cells = [cell(row.values[key], c.fmt) if key in row.values else "" for key, c in columns]
        if ratio_column:
            cells.append(_ratio_text(table, row, columns[0][0], baselines))
        lines.append("| " + " | ".join([row.label, *cells, f"`{row.source}`"]) + " |")
    if len(columns) > 1:
        for row in table.rows.values():
            if row.baseline:
                ratios = [f"{table.ratio(row.label, row.baseline, key):.2f}" for key, _ in columns]
                label = f"*ratio: {row.label} / {row.baseline}*"
                lines.append("| " + " | ".join([label, *ratios, ""]) + " |")
    return "\n".join(lines)


def _ratio_text(table: Table, row: Row, column: str, baselines: set[str]) -> str:
    if row.baseline is None:
        return "baseline" if row.label in baselines else ""
    ratio = f"{table.ratio(row.label, row.baseline, column):.2f}"
    return ratio if len(baselines) == 1 else f"{ratio} (to {row.baseline})"


def verdict(met: bool) -> str:
    return "is met" if met else "is not met"


def machine() -> str:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.machine(),
    )
    memory_kib = next(
        int(line.split()[1])
        for line in Path("/proc/meminfo").read_text().splitlines()
        if line.startswith("MemTotal:")
    )
    return (
        f"{cpu}, {os.cpu_count()} cores, {memory_kib / KIB_PER_MIB**2:.0f} GiB, "
        f"Python {platform.python_version()}"
    )


def stack_versions(settings: Settings) -> str:
    consumer = make_consumer(settings, group_id=None)
    kafka = ".".join(map(str, consumer.config["api_version"]))
    consumer.close()
    redis = make_redis(settings)
    version = redis.info("server")["redis_version"]
    redis.close()
    return f"Kafka {kafka} (API version probed) at {settings.kafka_bootstrap}, Redis {version}"


SECTION_NAMES = {
    "features": "feature ingestion",
    "learner": "learning",
    "prediction": "prediction",
    "retrain": "alert → champion",
    "scaling_cluster": "scaling, clustered stack",
    "end_to_end": "end to end",
    "estimate": "performance estimation",
}
STACKLESS = {"estimate"}  # sections that need no Kafka or Redis: no stack to describe


def render(bench: Bench, command: str, started: datetime) -> str:
    """The Markdown report: commands, machine, then each section's table and prose."""
    sizes, base = bench.sizes, bench.base
    took = ", ".join(f"{name} {s / 60:.1f}" for name, s in bench.seconds.items())
    on_stack = set(bench.seconds) - STACKLESS
    stack = stack_versions(base) if on_stack else "no Kafka or Redis (no section here uses them)"
    parts = [
        f"""# Benchmarks

Generated on {started:%Y-%m-%d} by `{command}`: every figure below was
measured by that one command in one run, against the single-node Kafka broker and Redis
started by `eddy up` (the performance-estimation section needs neither: it runs on the
CPU alone). Each part of Eddy is measured next to a bare baseline doing the
same I/O in the same run; figures are medians over {sizes.runs} run(s) with the spread
(min-max), ratios are ratios of medians, and the last column names the function under
`scripts/` that measured the figure. Tests never assert on these numbers.

```
.venv/bin/python scripts/bench.py            # full run, 3 runs per figure: writes this file
.venv/bin/python scripts/bench.py --quick    # smoke check: small sizes, one run
```

Anything but a complete full run (`--quick`, `--sections ...`, a failed section) writes
its report under `.eddy/bench/` instead; `--runs N` changes the number of runs.

Each section also runs alone, with its own options: `scripts/bench_features.py`,
`scripts/bench_learner.py`, `scripts/bench_predictor.py`, `scripts/bench_retrain.py`,
`scripts/bench_scaling.py`, `scripts/bench_end_to_end.py`, `scripts/bench_estimate.py`,
`scripts/bench_state.py`. The
first run builds the peers' own virtualenvs (`.eddy/peers-venv`, Quix Streams from PyPI;
`.eddy/nannyml-venv`, NannyML from PyPI). The explanations here are part of the
generator: edit them in `scripts/bench.py`.

Machine: {machine()}; {stack}. This run took
{sum(bench.seconds.values()) / 60:.1f} min (minutes per section: {took})."""
    ]
    for key, section in (
        ("features", _features_text),
        ("learner", _learner_text),
        ("prediction", _prediction_text),
        ("retrain", _retrain_text),
        ("scaling_features scaling_features_cluster", _scaling_text),
        ("end_to_end", _end_to_end_text),
        ("estimate_error", _estimate_text),
    ):
        if any(table in bench.tables for table in key.split()):
            parts.append(section(bench))
    if bench.tables["memory"].rows:
        parts.append(_memory_text(bench))
    return "\n\n".join(parts) + "\n"


def _features_text(bench: Bench) -> str:
    t, labels = bench.tables["features"], bench_features.LABELS
    bare, noop = t.median(labels["bare"]), t.median(labels["noop"])
    pipeline, eddy = t.median(labels["pipeline"]), t.median(labels["eddy"])
    on_faust, quix = t.median(labels["eddy_faust"]), t.median(labels["quix"])
    faust_peer = t.median(labels["faust"])
    floor, writes = t.median(labels["floor"]), t.median(labels["floor_writes"])
    met = eddy / bare >= FEATURE_TARGET and eddy / quix >= FEATURE_PEER_TARGET
    every = met and pipeline / bare >= PIPELINE_TARGET
    return f"""## Feature ingestion (`scripts/bench_features.py`)

{bench.sizes.events:,} pre-produced events per run over {bench_features.ENTITIES:,} entities
on {bench_features.PARTITIONS} partitions, one in {bench_features.LABEL_EVERY} labelled. Worker
rates are taken from committed offsets, first commit to last, so start-up is excluded. The
pipeline row is Eddy's `FeaturePipeline.handle` in the benchmark's own process (with the
worker's state cache), fed the same records in batches of {bench.base.feature_batch_size}.
The two peers compute Eddy's default features (`eddy/streams/features/definitions.py`:
count, sum, mean, min, max, std and last amount over a 1-hour tumbling window; count,
sum and mean over 10 minutes every minute; distinct countries over a day; the ratio of
the amount to the hour's mean; the time since the previous event; 1 hour of allowed
lateness) and write them to Redis in batches: a Quix Streams 3.28.1 application
(`scripts/peers/quix_features.py`: tumbling and hopping windows with its own RocksDB
state, written by its `RedisSink` at each 1 s checkpoint) and a faust-streaming agent with
windowed tables (`bench_features.py same-work-worker`). Every run checks each peer's
values for every entity against Eddy's own computation before counting its figure. The
peers do less than Eddy per event: no validation or dead letters, no de-duplication by
event id, no training examples, no snapshots for late labels, no compare-and-set.

{markdown(t)}

Ratios: eddy / Quix Streams peer **{eddy / quix:.2f}** (target ≥ {FEATURE_PEER_TARGET});
eddy / bare **{eddy / bare:.2f}** (target ≥ {FEATURE_TARGET}); pipeline in-process / bare
**{pipeline / bare:.2f}** (target ≥ {PIPELINE_TARGET}); eddy / faust tables peer
{eddy / faust_peer:.2f}; poll engine / faust engine {eddy / on_faust:.2f}.

**{"Every target is met" if every else "Not every target is met"}.**
What the numbers say:

- **Engines.** `eddy run features` consumes on Eddy's poll runtime by default
  ({eddy:,.0f} events/s); in a faust agent the same pipeline reaches {on_faust:,.0f}. A
  faust agent that does nothing at all reads {noop:,.0f} events/s here: faust's per-event
  stream is a ceiling below what the pipeline does on its own.
- **Peers.** Computing the same features, Quix Streams reaches {quix:,.0f} events/s and
  faust's windowed tables {faust_peer:,.0f}: each event updates a window of each kind
  (ten hopping windows for the 10-minute one) in their state stores and changelogs.
  Eddy keeps one partial aggregate per bucket of time and entity and computes the
  windows when a vector is read.
- **The ceiling is Eddy's per-event Python.** In-process the pipeline runs at
  {pipeline:,.0f} events/s ({pipeline / bare:.2f}x the bare loop, about
  {1e6 / pipeline:,.0f} µs an event): it decodes and validates each event, folds it into
  its entity's buckets, builds the point-in-time vector of every event (the training
  example of a labelled one, the snapshot a late label joins to of every other), and per
  batch encodes the changed states and makes three Redis and one Kafka round trips. The
  bare loop does none of it. The worker adds the consumer and the commit per batch
  ({eddy / pipeline:.2f}x the in-process figure).
- **What the contract itself costs** (`scripts/bench_floor.py`: the same records and
  batches, each batch's effects durable before the next starts, as in `handle`, with the
  clients Eddy uses). The writes a batch must make, alone (the examples sent and
  acknowledged, then the states and snapshots in one Redis round trip, every byte
  computed beforehand), run at {writes:,.0f} events/s ({writes / bare:.2f}x the bare
  loop). A lean Python implementation of the whole batch (each event's vector of the
  default features and those writes, none of Eddy's validation, de-duplication, lateness
  or compare-and-set), checked to route every event and compute every vector as Eddy
  does, runs at {floor:,.0f} ({floor / bare:.2f}x).
  {_floor_verdict(eddy / bare, pipeline / bare, floor / bare, writes / bare)}
- **Next lever:** a columnar state per partition, the batch's events folded as arrays
  rather than one Python object per event and bucket (it changes the stored state's
  format, so every store would be rebuilt once). {_lever_bound(pipeline, writes)}

{_state_depth_text(bench)}

More worker processes spread the partitions: see "Scaling out" below."""


def _floor_verdict(worker: float, pipeline: float, floor: float, writes: float) -> str:
    """What the contract floors say of the feature targets (all ratios to the bare loop)."""
    said = []
    if floor > writes:
        said.append("(The lean implementation measured faster than its own writes: noise.)")
    if pipeline > floor:
        said.append("(The pipeline measured faster than the lean implementation.)")
    if pipeline >= PIPELINE_TARGET:
        said.append(f"The pipeline meets the in-process target (≥ {PIPELINE_TARGET}x).")
    elif writes < PIPELINE_TARGET:
        said.append(
            f"The writes alone stay below the in-process target (≥ {PIPELINE_TARGET}x): on "
            "this schedule, with these clients, no implementation of the contract reaches it."
        )
    elif floor < PIPELINE_TARGET:
        said.append(
            f"The writes leave room for the in-process target (≥ {PIPELINE_TARGET}x), but "
            "the lean Python implementation stays below it: only per-event work cheaper "
            "than this Python's could reach it."
        )
    else:
        said.append(
            f"Both floors clear the in-process target (≥ {PIPELINE_TARGET}x): the gap is "
            "Eddy's own work."
        )
    if worker >= FEATURE_TARGET:
        said.append(f"The worker meets its target (≥ {FEATURE_TARGET}x).")
    elif floor < FEATURE_TARGET:
        said.append(
            f"The worker's target (≥ {FEATURE_TARGET}x) adds consuming and committing to "
            "all of this, and the lean implementation stays below it too (a worker could "
            "fold the next batch while one batch's writes wait, which these floors do not)."
        )
    else:
        said.append(
            f"The lean implementation clears the worker's target (≥ {FEATURE_TARGET}x), "
            "which adds consuming and committing: the floors do not rule that one out."
        )
    return " ".join(said)


def _lever_bound(pipeline: float, writes: float) -> str:
    """How much a rewrite of the per-event work could win while the writes stay as they are."""
    if writes <= pipeline:
        return "The pipeline already runs at the pace of its writes alone."
    return (
        f"If the writes stay as they are, such a rewrite could at most multiply the "
        f"pipeline's rate by {writes / pipeline:.1f} (the writes alone over the pipeline)."
    )


def _state_depth_text(bench: Bench) -> str:
    t = bench.tables["state_depth"]
    labels = list(t.rows)
    busiest, steady = labels[-1], labels[1] if len(labels) > 1 else labels[0]

    def over_bare(label: str, step: str) -> float:
        return t.median(label, step) / t.median(label, f"bare_{step}")

    return f"""**State depth** (`scripts/bench_state.py`, CPU only). The stream above puts each
entity's events within one second, so its states hold one bucket per source. A live
entity's events spread over time: per depth, one entity's events at that pace over the
longest time a state keeps anything (a day and an hour with the default features), then
{bench.sizes.state_events:,} more, each timed through what the services do with it:
**fold** (`apply_event`, the feature worker), **vector** (`feature_vector`, a training
example or snapshot per event in the worker, every request in the predictor), **write**
(`encode_state` after the event: the worker writes each changed state once per batch,
the buckets the event did not touch encoded at the previous write, as in its state cache) and
**read** (`decode_state` of those bytes: the predictor, for every request; the worker when
its state cache misses). The bare floor beside them is the JSON codec alone on the same
document: `orjson.dumps` of the state as stored, `orjson.loads` of its bytes. Medians of
the events' times, then of the runs.

{markdown(t)}

At {steady} a write costs {over_bare(steady, "write"):.2f}x the bare dump and a read
{over_bare(steady, "read"):.2f}x the bare load (Eddy builds a bucket object per bucket;
the predictor reads every bucket of a state). Before 2026-12-06 (measured by hand with
this script, one run of 500 events at the parent of `fa7ae9a`): a source's buckets were kept
as long as the longest window of any source (the day's window of countries kept a day of
`amount`'s one-minute buckets), each bucket kept up to 64 distinct values whether a
`distinct` operation read them or not, and every write encoded every bucket again: at 60 events an
hour a state weighed 272,946 bytes, a write took 2,425 µs and a read 3,932 µs; at 3,600
an hour, 1,064,834 bytes, 13,492 µs and 22,339 µs. A fold took 248 and 923 µs; with the
buckets kept for their own windows, still 297 µs at 3,600 an hour, where the ids of the
last hour's events (kept to refuse duplicates) are most of the state: the fold filtered
them all at every newer event. They are now kept in time order and forgotten from their
oldest end. **Next lever**, for reads: at {busiest} those ids are most of what a read
parses, and a vector never uses them; kept under a key of their own beside the
state (same slot), the predictor's reads would fetch and parse only the buckets and last
values."""


def _learner_text(bench: Bench) -> str:
    t, labels = bench.tables["learner"], dict(bench_learner.ROWS)

    def over_bare(key: str) -> float:
        return t.ratio(labels[key], labels["bare"])

    process, process_batch = over_bare("process"), over_bare("process_batch")
    one, sparse = over_bare("one_by_one"), over_bare("one_by_one_sparse")
    drift_cost = 1 - one / sparse
    floor = over_bare("floor")
    floor_verdict = (
        f"it clears the one-by-one target (≥ {LEARNER_TARGET}x)"
        if floor >= LEARNER_TARGET
        else f"even it misses the one-by-one target (≥ {LEARNER_TARGET}x)"
    )
    detection = "\n".join("| " + " | ".join(cells) + " |" for cells in bench.detection)
    return f"""## Learning (`scripts/bench_learner.py`)

{bench.sizes.examples:,} examples of River's SEA generator (3 numeric features, binary) per
run; `StandardScaler | LogisticRegression` in the logistic rows, a Hoeffding Adaptive Tree
in the tree rows; mini-batches of {bench.sizes.batch}. The in-process rows learn as the
worker does, with the garbage collector set as the worker sets it (for the bare loops too).
The process rows read the examples from Kafka and are timed from the first checkpoint to
the one holding every example. (Until 2026-12-05 a run had 20,000 examples: the process
then learned for about a second, and its rate, 18,000-19,000 examples/s, measured its
first second, not its pace.)

{markdown(t)}

**`eddy run learner` reaches {process:.2f}x the bare River loop one by one and
{process_batch:.2f}x with mini-batches: the target (≥ {LEARNER_PROCESS_TARGET}x)
{verdict(max(process, process_batch) >= LEARNER_PROCESS_TARGET)}.** It reads and decodes in
a reader process by default (`EDDY_LEARNER_READER_PROCESS`,
`eddy/services/ops/reader_process.py`); reading on its own thread it reaches
{over_bare("process_thread"):.2f}x and {over_bare("process_thread_batch"):.2f}x.
In-process, one by one at the default drift cadence, the learner reaches {one:.2f}x
(target ≥ {LEARNER_TARGET}x: {verdict(one >= LEARNER_TARGET)}) and
{over_bare("mini_batch"):.2f}x with mini-batches; the default cadence costs it
{drift_cost:.0%} against tests every {bench_learner.SPARSE_CHECKS} examples
(target under {DRIFT_COST_TARGET:.0%}: {verdict(drift_cost < DRIFT_COST_TARGET)}).
Where the time goes, measured in the rows above:

- **Reading and decoding.** A bare kafka-python loop reads
  {t.median(labels["consume"]):,.0f} examples/s; with the generic validating decoder
  {t.median(labels["consume_decode"]):,.0f}/s, and with the learner's own,
  {t.median(labels["consume_trusted"]):,.0f}/s ({over_bare("consume_trusted"):.2f}x the bare
  River loop, before any learning). Training examples are Eddy's own output: the learner
  takes one written exactly as Eddy's encoder writes it, every field plainly valid, without
  building the pydantic model, and sends anything else through the full validator, which
  accepts it or dead-letters it with its reason (`eddy/streams/learning/intake.py`).
  Reading, decoding and learning on one thread add up: the same examples read, decoded
  and learned by `Learner` on one thread, with no checkpoints, offsets or metrics, run at
  {over_bare("read_learn"):.2f}x one by one and {over_bare("read_learn_batch"):.2f}x with
  mini-batches, the ceiling of a learner process that reads on its own thread. With the
  reading and decoding in a second process that hands each poll's decoded examples to the
  learning one over a pipe, the same run reaches {over_bare("reader_learn"):.2f}x and
  {over_bare("reader_learn_batch"):.2f}x: the ceiling of the reader-process design, which
  `eddy run learner` runs by default.
- **Learning and monitoring.** Per example the learner also updates cumulative and rolling
  accuracy and log loss, a cumulative ROC AUC and the concept-drift detector, and feeds two
  windowed drift monitors (every feature, and the prediction), tested every
  `EDDY_DRIFT_CHECK_EVERY` examples ({bench.base.drift_check_every} by default). Tested
  every {bench_learner.SPARSE_CHECKS} instead, the learner runs at {sparse:.2f}x one by one
  and {over_bare("mini_batch_sparse"):.2f}x with mini-batches. The least a learner watching
  its own error does (one probability call, an accuracy, one ADWIN, `learn_one`:
  `bench_learner.watched_floor`) runs at {floor:.2f}x the bare loop, which asks its model
  for the probabilities twice: {floor_verdict}. Eddy's learner runs at {one / floor:.2f}x of
  that floor; the rest is its encoding, rolling metrics, calibration, model history and
  monitors. River's own predict and learn on a model that has been pickled (every checkpoint
  pickles it) also run slower than on one that never was, which the bare loop never does:
  reading an object's `__dict__` (as pickling does) turns CPython 3.11's inline attribute
  values into a dictionary for good, and attribute reads get slower (measured by hand: a
  River pipeline pickled once learns about 12% slower than a fresh one, and one whose
  objects' `__dict__` was only read, as much).
- **Checkpoints** are sealed (pickled) on the learning thread and signed, written and synced
  on a writer thread; their offsets are committed once the file is durable. Under a
  backlog they take at most `EDDY_CHECKPOINT_MAX_SHARE` ({bench.base.checkpoint_max_share:.0%})
  of the learner's time.

**Where the reader-process learner stands against its ceiling** (measured by hand on
2026-12-05, one run of 200,000 examples in mini-batches of 500 at 50,458 examples/s): the
learning process is busy 86% of the time (about 17 µs of CPU an example), the reader
process 67%: the learning process is still the bottleneck. Learning and monitoring are
most of it (River's own learning about 10 µs an example in the in-process rows); a model
pickled at every checkpoint learns about 5% slower. What this bound moved by, by hand on
the same day: a KS test costs 15 µs per feature per check (24 before; one lookup instead
of two when no value is in both samples), the dedup memory takes a batch's digests at
once, computed in the reader process (1.5 µs an example before), and a checkpoint's seal
takes 1.1 ms (3.2 before: the model history's 5,000 kept examples are pickled 500 at a
time, each full block once, not all at every checkpoint); the data-drift monitor splits
and checks a batch's columns once for all the checks inside it, and mini-batch frames name
their columns with plain strings (pandas' default Arrow strings cost about 0.4 µs an
example). **Next lever:** fewer objects
per example between the two processes (a batch of columns rather than a tuple, an example
and a feature dictionary per record). (A registry snapshot no longer lists every version
to find a replayed one: `Registry.learned_exactly` asks SQLite.)

Detection on 0/1 error streams (rate 0.1 → 0.5 at item {bench_learner.CHANGE_AT:,};
{bench_learner.STREAM_LENGTH:,} items; seeded), Eddy's adapter next to the same River detector
run bare (`bench_learner.detection_table`):

| detector | Eddy delay | Eddy false alarms | River delay | River false alarms |
|---|---|---|---|---|
{detection}

From the test suite, not this command (`pytest tests/unit/test_detectors.py`, golden
tests): on 100,000 stationary Bernoulli(0.2) errors (seed 42), adwin 0 false alarms,
page_hinkley 3, ddm 0, eddm 20 (all before item 5,200), hddm_a 0, hddm_w 9. End to end
with River models: SEA variant 0 → 3 at 5,000 with a Hoeffding tree and ADWIN: first alert
at 5,119; Friedman global drift at 5,000 and 10,000 with a linear regression and
Page-Hinkley: alerts at 5,015 and 10,031."""


def _prediction_text(bench: Bench) -> str:
    t, sizes = bench.tables["prediction"], bench.sizes
    echo, eddy = bench_predictor.LABELS["echo"], bench_predictor.LABELS["predictor"]
    bare = bench_predictor.LABELS["bare_predict"]
    p99_met = t.ratio(eddy, echo, "p99") <= PREDICTOR_P99_TARGET
    throughput_met = t.ratio(eddy, bare, "throughput") >= PREDICTOR_THROUGHPUT_TARGET
    return f"""## Prediction (`scripts/bench_predictor.py`)

The same requests go to `eddy run predictor`, to a bare kafka-python echo (consume →
send each request's bytes back → wait for the acknowledgements → commit, with the
predictor's client settings) and to a bare consume → predict → produce loop (the echo
plus, per batch, orjson parsing, one Redis read of the entities' online features, the
vectors built with the training code, the same champion's scores, and an answer of
request id and probability), each on topics of its own with
{bench_predictor.PARTITIONS} partitions. Throughput: {sizes.backlog:,} requests produced
before the process starts, counted from the first answer read back to the last. Latency:
once caught up, {sizes.paced:,} requests sent at {sizes.rate:g}/s, each timed from just
before it is sent to when its answer is read back from `predictions`. The predictor
serves a scikit-learn champion (`{bench.base.retrain_estimator}`, the retrainer's default)
and joins online features from Redis for {bench_predictor.ENTITIES:,} entities.

{markdown(t)}

Round trip: the predictor's p50 is {t.ratio(eddy, echo, "p50"):.2f}x the echo's and its p99
{t.ratio(eddy, echo, "p99"):.2f}x (**the target, p99 ≤ {PREDICTOR_P99_TARGET}x the echo's,
{verdict(p99_met)}**). Throughput is {t.ratio(eddy, bare, "throughput"):.2f}x the bare consume →
predict → produce loop (**the target, ≥ {PREDICTOR_THROUGHPUT_TARGET}x,
{verdict(throughput_met)}**) and {t.ratio(eddy, echo, "throughput"):.2f}x the echo; the bare
predict loop itself reaches {t.ratio(bare, echo, "throughput"):.2f}x the echo, so joining the
features and scoring is most of the distance from the echo. The bare predict loop scores
on one native thread, as the predictor does (with the library's default thread pools it
fought the other processes for the two cores). Between the same consume and commit the
predictor also validates each request (and dead-letters a bad one with an error answer),
writes the feature snapshot of every request (for late labels) and the request log (for
`eddy trace` and for re-sending an answer after a crash), shadow-scores challengers when
there are any, and answers with the full contract (version, per-class probabilities,
latency, freshness). Three things keep that cheap: a batch's Redis writes (snapshots and
their count, shadow log, answer cache, request log) travel in one round trip, made before
any answer is sent, the snapshots and the request log as one script call each (with a `SET` per
request, the request log's share of the predictor's samples under py-spy was 16%; as one
call, 9%); an answer is validated once and written to JSON from
its fields; and offsets are committed without waiting for the coordinator's reply (each
batch's only once its answers are acknowledged; at most two commits on their way, past
that or after a failed one the predictor waits; a crash can leave up to three batches
uncommitted, which the next owner re-sends as logged). The predictor also freezes its
start-up objects out of the garbage collector's passes; the bare loops do neither of these
two. What is left between the predictor and the bare loop, measured in-process by hand on
2026-12-05 (not by this command): about 4 to 5 ms of Redis writes per batch of 200 (mostly
Redis's own time), 3 ms of building answers and 2 ms of validating requests. The p99 rides
on the machine: on two cores shared with Kafka, Redis and the benchmark's own producer and
reader, a slow batch is a producer acknowledgement or a Redis reply that waited for a
core. The watchdog (`eddy/services/ops/liveness.py`) reads the end offsets every 5 s
rather than every second: a read on its thread held the serving thread back (p99 1.29x the
echo's with a read every second, 1.10x at 5 s, 1.00x with none; 5 runs each, by hand on
2026-12-05)."""


def _retrain_text(bench: Bench) -> str:
    t = bench.tables["retrain"]
    slowest = max(v for row in t.rows.values() for v in row.values["champion"])
    return f"""## Drift alert → new champion (`scripts/bench_retrain.py`)

A running `eddy run retrainer` (debounce 0) receives one drift alert once it has joined its
consumer group; the clock stops when the new champion's announcement is read back from
`model-updates`. Windows of labelled examples (8 numeric features) on 3 partitions; default
estimator (`{bench.base.retrain_estimator}`); empty registry, so the candidate is promoted.
Next to it, the bare scikit-learn fit of the same rows in the benchmark's process.

{markdown(t)}

**The target, seconds rather than minutes, {verdict(slowest < PROMOTION_TARGET_S)}** (slowest
run {slowest:.1f} s).
The rest of the time is reading and decoding the window from Kafka, held-out scoring,
signing and registering the skops artifact, and announcing. With the default
`EDDY_RETRAIN_DEBOUNCE_S` of {bench.base.retrain_debounce_s:g} s, add up to that for a burst of
alerts to settle."""


def _scaling_text(bench: Bench) -> str:
    sizes = bench.sizes
    tables = "\n\n".join(
        f"{bench.tables[key].title}:\n\n{markdown(bench.tables[key])}"
        for key in ("scaling_features", "scaling_predictor")
        if key in bench.tables
    )
    clustered = "\n\n".join(
        f"{bench.tables[key].title}:\n\n{markdown(bench.tables[key])}"
        for key in ("scaling_features_cluster", "scaling_predictor_cluster")
        if key in bench.tables
    )
    if clustered:
        clustered = _CLUSTERED_TEXT.format(cores=os.cpu_count(), tables=clustered)
    return f"""## Scaling out (`scripts/bench_scaling.py`)

N processes of one service in one consumer group, over N partitions of a fresh deployment.
The load is produced once the group is stable with N members and every partition
assigned, so start-up and rebalancing are excluded. Feature workers: {sizes.scale_events:,}
events, events/s from the group's first commit to its last. Predictors:
{sizes.scale_requests:,} requests, answers/s from the first answer read back to the last.
The ratio to one process is the speed-up.

{tables}

This machine has {os.cpu_count()} cores, shared by the workers with Kafka, Redis and the
benchmark's own producer and reader: past that many processes, workers compete for CPU
rather than add it. Kafka spreads partitions, not the records within one, so N processes
need at least N partitions.{clustered}"""


_CLUSTERED_TEXT = """

### On the clustered stack

The same measurements on `scripts/stack.sh up --cluster`, on the same {cores} cores:
three KRaft brokers (each also a controller; topics with replication factor 3,
`min.insync.replicas=2`, producers `acks=all`) and a Redis Cluster of three masters with
a replica each (`EDDY_REDIS_CLUSTER=true`: every batch split per hash slot, one pipeline
per master). Nine server processes share the cores with the workers here, so these
figures show what replication and slot-splitting cost, not what more machines would
add: on a real cluster each broker and master has cores of its own.

{tables}"""


def _memory_text(bench: Bench) -> str:
    return f"""## Memory per process

Peak resident set size (`VmHWM` of `/proc/<pid>/status`, sampled every {MEMORY_SAMPLE_S:g} s
by `bench.py`'s `PeakMemory`) of every Eddy service process the runs above started:
median (min-max) over the processes launched. In parentheses, the measurement that
started them. The baselines' processes are not listed: they import the benchmark
scripts' modules, so their size says nothing about a bare loop.

{markdown(bench.tables["memory"])}"""


@contextlib.contextmanager
def clustered_stack(base: Settings) -> Iterator[Settings]:
    """``base`` pointed at the clustered stack, started for the measurement unless it
    runs already (then left running)."""
    script = ["bash", str(ROOT / "scripts" / "stack.sh")]
    running = subprocess.run([*script, "status", "--cluster"], capture_output=True, check=False)
    started = running.returncode != 0
    if started:
        subprocess.run([*script, "up", "--cluster"], check=True)
    try:
        exports = subprocess.run(
            [*script, "env", "--cluster"], capture_output=True, text=True, check=True
        ).stdout
        yield base.pointed_at(exports)
    finally:
        if started:
            subprocess.run([*script, "down", "--cluster"], check=False)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small sizes, one run")
    parser.add_argument(
        "--sections", nargs="+", choices=Bench.SECTIONS, default=list(Bench.SECTIONS)
    )
    parser.add_argument("--runs", type=int, help="runs per figure (default: 3, quick: 1)")
    parser.add_argument("--output", type=Path, help="the Markdown report's path")
    args = parser.parse_args()
    sizes = QUICK if args.quick else FULL
    if args.runs:
        sizes = replace(sizes, runs=args.runs)
    memory = PeakMemory()
    memory.start()
    bench = Bench(Settings.from_env().model_copy(update={"metrics_port": 0}), sizes, memory)
    started = datetime.now(UTC)
    try:
        failed = bench.run(args.sections)
    finally:
        memory.stop()
    complete = not args.quick and list(args.sections) == list(Bench.SECTIONS) and not failed
    mode = "failed" if failed else "quick" if args.quick else "full" if complete else "partial"
    output = args.output or (DOCS if complete else BENCH_DIR / f"benchmarks-{mode}.md")
    command = " ".join([".venv/bin/python scripts/bench.py", *sys.argv[1:]])
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(render(bench, command, started))
    for table in bench.tables.values():
        print(f"\n{table.title}\n{markdown(table)}")
    print(f"\nreport written to {output}")
    if failed:
        sys.exit(f"failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
