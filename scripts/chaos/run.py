"""The timeline of a chaos run.

A run has up to two phases, each with a stack and a deployment of its own: the single
stack's scenarios, then (full mode) the cluster's. In each phase:

1. start a private Kafka and Redis (``scripts/stack.sh`` on ports and a data folder of
   the run's own; with ``--cluster``: three brokers and a Redis Cluster, and the
   deployment pointed at them by the script's exports), create the topics, fill the
   retraining window, start the four services under supervisors and wait for the first
   champion;
2. per scenario: load on the scenario's own entities, the fault, more load, then wait
   (up to the mode's deadline) until everything sent is accounted for and every
   consumer group has caught up, with nobody's help: the time that takes is the
   scenario's recovery time;
3. read the final state, account every scenario against it (and the phase's whole);
4. stop everything the phase started (also on failure).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import platform
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from chaos.faults import AFTERWARDS, FAULTS, Context
from chaos.fleet import Fleet
from chaos.ledger import Bounds, Ledger, account, account_totals, pending
from chaos.observe import Inspector, Tap
from chaos.plan import SERVICES, Mode, Scenario, deployment_settings
from chaos.report import Phase
from chaos.stack import (
    PrivateClusterStack,
    PrivateStack,
    choose_cluster_ports,
    choose_ports,
)
from chaos.traffic import Traffic
from eddy.services.config.settings import Settings
from eddy.services.ops.logs import NOISY_LIBRARIES, JsonLineFormatter
from eddy.services.registry.store import CHAMPION
from eddy.streams.transport.admin import ensure_topics

CHECK_EVERY_S = 1.0
DRAIN_S = 60.0

Say = Callable[[str], None]


@dataclass
class Outcome:
    phases: list[Phase]
    runtime_s: float
    workdir: Path
    header: dict[str, str | float]

    @property
    def passed(self) -> bool:
        return all(p.passed for p in self.phases)


def run(base: Settings, mode: Mode, workdir: Path, seed: int, command: str, say: Say) -> Outcome:
    """The single stack's scenarios, then the cluster's (each phase has its own stack and
    deployment, started and stopped by it); a mode without scenarios for a phase skips it."""
    started = time.monotonic()
    workdir.mkdir(parents=True, exist_ok=True)
    _log_to(workdir / "driver.log")
    clock = _Clock(started, say)
    phases = []
    if mode.scenarios:
        ports = choose_ports()
        stack = PrivateStack(workdir / "stack", ports, base.child_env())
        stack.share_kafka_jars(base.data_dir / "kafka" / "libs")
        settings = deployment_settings(base, ports, workdir / "deployment", _key())
        phases.append(_phase("single", mode, mode.scenarios, stack, settings, seed, clock))
    if mode.cluster_scenarios:
        cluster_ports = choose_cluster_ports()
        cluster = PrivateClusterStack(workdir / "cluster-stack", cluster_ports, base.child_env())
        cluster.share_kafka_jars(base.data_dir / "kafka" / "libs")
        # The first nodes' ports here; the cluster's exports (every broker, the Redis
        # Cluster client, replication factor 3) once its stack has said them.
        settings = deployment_settings(
            base, cluster_ports.first(), workdir / "cluster-deployment", _key()
        )
        phases.append(
            _phase("cluster", mode, mode.cluster_scenarios, cluster, settings, seed, clock)
        )
    runtime = time.monotonic() - started
    header: dict[str, str | float] = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": command,
        "mode": mode.name,
        "runtime_s": round(runtime, 1),
        "machine": f"{os.cpu_count()} cores, Python {platform.python_version()}",
        "workdir": str(workdir),
    }
    return Outcome(phases, runtime, workdir, header)


def _key() -> str:
    return secrets.token_hex(32)


def _phase(
    name: str,
    mode: Mode,
    scenarios: tuple[Scenario, ...],
    stack: PrivateStack | PrivateClusterStack,
    settings: Settings,
    seed: int,
    clock: _Clock,
) -> Phase:
    """Start the stack, the topics, the load's warm-up and the services; play
    ``scenarios``; account for them; stop everything the phase started."""
    started = time.monotonic()
    fleet = Fleet(settings.data_dir / "logs")
    stack_up = False
    tap: Tap | None = None
    traffic: Traffic | None = None
    inspector: Inspector | None = None
    try:
        clock.say(f"{name} phase, private stack: {stack.describe()}")
        stack.up()
        stack_up = True
        if isinstance(stack, PrivateClusterStack):
            settings = settings.pointed_at(stack.exports())
        ensure_topics(settings)
        traffic = Traffic(settings, mode, seed)
        warm_up = traffic.warm_up_examples(mode.warm_up)
        filler = traffic.window_filler(mode.filler)
        clock.say(
            f"stack up, topics created, {len(warm_up):,} warm-up examples and "
            f"{len(filler):,} for the retraining window"
        )
        tap = Tap(settings)
        tap.start()
        inspector = Inspector(settings)
        for service in SERVICES:
            fleet.start(service, settings)
        context = Context(mode, settings, stack, fleet, traffic, inspector, seed)
        warm = _warm_up(context, warm_up)
        clock.say("warm: a champion serves" if warm else "warm-up incomplete; going on")
        # After a scenario that did not catch up, the suite repairs the deployment so the
        # next scenario is judged on its own (the failed one keeps its verdict).
        ledgers = [
            _play(context, scenario, tap, clock, repair=scenario is not scenarios[-1])
            for scenario in scenarios
        ]
        inspector.wait_drained(tap, DRAIN_S)
        entities = set().union(*(ledger.entities for ledger in ledgers))
        observed = inspector.observe(tap, entities)
        bounds = Bounds(settings.predictor_batch_size, settings.topic_prefix)
        figures = [account(ledger, observed, bounds) for ledger in ledgers]
        total = account_totals(figures, ledgers, observed, warm_up)
        if not warm:
            total.problems.append("the deployment did not warm up (no champion, or examples)")
    finally:
        clock.say(f"{name} phase: stopping the services and the private stack")
        # Each step runs whatever the one before it raised: the stack must go down.
        with contextlib.ExitStack() as cleanup:
            if stack_up:
                cleanup.callback(stack.down)
            for client in (tap, traffic, inspector):
                if client is not None:
                    cleanup.callback(client.close)
            cleanup.callback(fleet.stop)
    return Phase(name, [*figures, total], time.monotonic() - started, stack.describe())


class _Clock:
    def __init__(self, started: float, say: Say) -> None:
        self.started = started
        self._say = say

    def say(self, text: str) -> None:
        self._say(f"[{time.monotonic() - self.started:6.1f}s] {text}")


def _log_to(path: Path) -> None:
    """The driver's own logs (and its clients' warnings during outages) go to a file:
    the terminal shows the timeline and the figures."""
    handler = logging.FileHandler(path)
    handler.setFormatter(JsonLineFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    for chatty in NOISY_LIBRARIES:
        logging.getLogger(chatty).setLevel(logging.WARNING)


def _warm_up(ctx: Context, examples: set[str]) -> bool:
    """A champion serves and the learner has learned the warm-up examples."""
    deadline = time.monotonic() + ctx.mode.warm_up_s
    while time.monotonic() < deadline:
        try:
            champion = ctx.inspector.registry.alias(ctx.settings.model_name, CHAMPION)
            state = ctx.inspector.checkpoints.latest()
            learned = state is not None and all(e in state.learned for e in examples)
        except Exception:  # the registry or checkpoint is being written: look again
            champion, learned = None, False
        if champion is not None and learned:
            return True
        time.sleep(CHECK_EVERY_S)
    return False


def _play(ctx: Context, scenario: Scenario, tap: Tap, clock: _Clock, *, repair: bool) -> Ledger:
    mode = ctx.mode
    ledger = Ledger(
        scenario.name,
        entities={f"{scenario.name}-u{k}" for k in range(mode.entities)},
        started=time.time(),
    )
    restarts = ctx.fleet.restarts()
    stop = threading.Event()
    load = threading.Thread(target=ctx.traffic.run, args=(ledger, stop), name="chaos-load")
    clock.say(f"{scenario.name}: {scenario.fault}")
    load.start()
    try:
        time.sleep(mode.lead_s)
        FAULTS[scenario.name](ctx, ledger)
        fault_over = time.monotonic()
        time.sleep(mode.tail_s)
    finally:
        stop.set()
        load.join()
    ctx.traffic.settle(ledger)
    waiting = _catch_up(ctx, ledger, tap, fault_over)
    if ledger.recovered_s is None:
        clock.say(f"{scenario.name}: NOT caught up after {mode.catch_up_s:.0f} s: {waiting}")
        if repair:
            ctx.fleet.restart_all()
            repaired_at = time.monotonic()
            still = _catch_up(ctx, dataclasses.replace(ledger, notes={}), tap, repaired_at)
            ledger.notes["repair"] = "the suite restarted every service; caught up " + (
                "never" if still else f"{time.monotonic() - repaired_at:.0f} s later"
            )
            clock.say(f"{scenario.name}: {ledger.notes['repair']}")
    else:
        clock.say(f"{scenario.name}: caught up {ledger.recovered_s:.1f} s after the fault")
    ledger.ended = time.time()
    ledger.restarts = ctx.fleet.restarts() - restarts
    if scenario.name in AFTERWARDS:
        AFTERWARDS[scenario.name](ctx, ledger)
    return ledger


def _catch_up(ctx: Context, ledger: Ledger, tap: Tap, fault_over: float) -> list[str]:
    """Wait until nothing of the scenario is pending; returns what still was, if anything."""
    bounds = Bounds(ctx.settings.predictor_batch_size, ctx.settings.topic_prefix)
    deadline = fault_over + ctx.mode.catch_up_s
    waiting = ["nothing observed yet"]
    while time.monotonic() < deadline:
        try:
            observed = ctx.inspector.observe(tap, ledger.entities)
        except Exception as exc:  # Kafka or Redis still coming back: look again
            waiting = [f"state unreadable: {exc!r}"]
        else:
            waiting = pending(account(ledger, observed, bounds), observed.lag)
            if not waiting:
                ledger.recovered_s = round(time.monotonic() - fault_over, 1)
                ledger.lag = observed.lag
                return []
            ledger.lag = observed.lag
        time.sleep(CHECK_EVERY_S)
    return waiting
