"""One fault per scenario, done to the running deployment while the load goes on.

Each function returns when its fault is over (the service killed, the broker or Redis
back), and records what it did in the scenario's ledger: kills, broker restarts, alerts
injected, and notes for the figures. Restarting the killed services is the supervisors'
job, not this module's.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from chaos import cluster
from chaos.fleet import Fleet
from chaos.ledger import Ledger, versions_for
from chaos.observe import Inspector
from chaos.plan import KILLED, Mode, slow_retrainer_settings
from chaos.stack import PrivateClusterStack, PrivateStack
from chaos.traffic import Traffic
from eddy.services.config.settings import Settings
from eddy.services.registry.triggers import Trigger
from eddy.streams.store.slots import slot_of
from eddy.streams.transport.clients import make_redis
from eddy.streams.transport.topics import Topic, topic_name

POLL_S = 0.02  # how fast a registration is noticed (the kill must beat the commit)
RESTARTED_TIMEOUT_S = 120.0
REGISTERED_TIMEOUT_S = 120.0
POLL_TIMEOUT_WARNING = "Consumer poll timeout has expired"
RETRAINED = "retrained"
STORE_LOSS = "the online store lost writes it had acknowledged"
READ_ATTEMPTS = 5
READ_RETRY_S = 1.0

log = logging.getLogger(__name__)


@dataclass
class Context:
    mode: Mode
    settings: Settings
    stack: PrivateStack | PrivateClusterStack
    fleet: Fleet
    traffic: Traffic
    inspector: Inspector
    seed: int = 0

    @property
    def single(self) -> PrivateStack:
        if not isinstance(self.stack, PrivateStack):
            raise TypeError("this fault is for the single stack")
        return self.stack

    @property
    def cluster(self) -> PrivateClusterStack:
        if not isinstance(self.stack, PrivateClusterStack):
            raise TypeError("this fault is for the clustered stack")
        return self.stack


def _wait_for(condition: Callable[[], bool], timeout_s: float, poll_s: float = 0.5) -> bool:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(poll_s)
    return True


def _running_again(ctx: Context, service: str, old_pid: int) -> bool:
    return _wait_for(lambda: ctx.fleet.pid(service) not in (None, old_pid), RESTARTED_TIMEOUT_S)


def _retrained(ctx: Context, alert_id: str) -> bool:
    return versions_for(ctx.inspector.versions(), alert_id) > 0


def nothing(ctx: Context, ledger: Ledger) -> None:
    """The control scenario: load only."""


def kill_service(ctx: Context, ledger: Ledger) -> None:
    """SIGKILL the scenario's service ``mode.kills`` times, waiting for each restart."""
    service = KILLED[ledger.name]
    for kill in range(ctx.mode.kills):
        if kill:
            time.sleep(ctx.mode.kill_gap_s)
        pid = ctx.fleet.kill(service)
        ledger.kills[service] += 1
        if not _running_again(ctx, service, pid):
            ledger.problems.append(
                f"{service} was not running again {RESTARTED_TIMEOUT_S} s after a kill"
            )
            return


def kill_retrainer_after_registering(ctx: Context, ledger: Ledger) -> None:
    """An alert, then SIGKILL the retrainer the moment its version is in the registry:
    the retrain is done, its offset not yet committed (the crash that replays it)."""
    targeted = 0
    for kill in range(ctx.mode.kills):
        alert_id = f"{ledger.name}-alert-{kill}"
        ctx.traffic.alert(ledger, alert_id)
        registered = _wait_for(
            functools.partial(_retrained, ctx, alert_id), REGISTERED_TIMEOUT_S, POLL_S
        )
        if not registered:
            ledger.problems.append(
                f"{alert_id} was not retrained within {REGISTERED_TIMEOUT_S:.0f} s "
                "(the retrainer was killed then anyway)"
            )
        pid = ctx.fleet.kill("retrainer")
        ledger.kills["retrainer"] += 1
        targeted += registered
        if not _running_again(ctx, "retrainer", pid):
            ledger.problems.append(
                f"retrainer was not running again {RESTARTED_TIMEOUT_S} s after a kill"
            )
            return
        time.sleep(ctx.mode.kill_gap_s)
    ledger.notes["kills right after a registration"] = targeted


def restart_kafka(ctx: Context, ledger: Ledger) -> None:
    ctx.single.stop_kafka(ctx.mode.kafka_signal)
    ledger.broker_restarts += 1
    ledger.notes["broker stopped with"] = ctx.mode.kafka_signal.name
    time.sleep(ctx.mode.kafka_down_s)
    ctx.single.up()


def stop_redis(ctx: Context, ledger: Ledger) -> None:
    ctx.single.stop_redis()
    time.sleep(ctx.mode.redis_down_s)
    ctx.single.up()


def lose_redis(ctx: Context, ledger: Ledger) -> None:
    ledger.requests_before_redis_loss = set(ledger.requests_sent)
    ctx.single.lose_redis()
    ledger.notes["redis came back"] = "empty"


def fill_redis(ctx: Context, ledger: Ledger) -> None:
    """Redis full: with noeviction every write is refused while reads go on."""
    client = make_redis(ctx.settings)
    try:
        limit = client.config_get("maxmemory")["maxmemory"]
        client.config_set("maxmemory", 1)
        time.sleep(ctx.mode.redis_down_s)
        client.config_set("maxmemory", limit)
    finally:
        client.close()
    ledger.notes["maxmemory restored to"] = limit


def flood(ctx: Context, ledger: Ledger) -> None:
    ctx.traffic.flood(ledger, ctx.mode.flood_copies)


def fuzz(ctx: Context, ledger: Ledger) -> None:
    ctx.traffic.fuzz(ledger, ctx.mode.fuzz_records)


def slow_retrain(ctx: Context, ledger: Ledger) -> None:
    """The retrainer again, now with a max poll interval shorter than its retrain (a
    window of every example there is); then two alerts, one after the other's retrain."""
    log = ctx.settings.data_dir / "logs" / "retrainer.log"
    ledger.notes["log from byte"] = log.stat().st_size if log.exists() else 0
    ctx.fleet.start("retrainer", slow_retrainer_settings(ctx.settings, ctx.mode))
    first, second = f"{ledger.name}-alert-0", f"{ledger.name}-alert-1"
    ctx.traffic.alert(ledger, first)  # read from the group's committed offset, once it joins
    _wait_for(functools.partial(_retrained, ctx, first), REGISTERED_TIMEOUT_S)
    ctx.traffic.alert(ledger, second)


def slow_retrain_notes(ctx: Context, ledger: Ledger) -> None:
    """From the retrainer's log: how long the first retrain took, and whether the
    consumer's poll timeout expired (the premise of the scenario)."""
    log = ctx.settings.data_dir / "logs" / "retrainer.log"
    start = int(ledger.notes.pop("log from byte", 0))
    seconds: list[float] = []
    expired = 0
    for line in _lines(log, start):
        if POLL_TIMEOUT_WARNING in line:
            expired += 1
        entry = _json(line)
        if entry.get("message") != RETRAINED:
            continue
        trigger = Trigger.from_dict(entry.get("trigger") or {})
        if ledger.alerts[0] in trigger.alert_ids:
            seconds.append(float(entry.get("seconds", 0.0)))
    limit_s = ctx.mode.slow_poll_interval_ms / 1000
    ledger.notes["max poll interval s"] = limit_s
    ledger.notes["first alert's retrain s"] = seconds
    ledger.notes["poll timeouts expired"] = expired
    if not seconds or max(seconds) <= limit_s:
        ledger.problems.append(
            f"premise not met: no retrain of {ledger.alerts[0]} took longer than the max poll "
            f"interval ({limit_s} s)"
        )


def kill_broker(ctx: Context, ledger: Ledger) -> None:
    """SIGKILL the broker leading most ``events`` partitions under load; time until the
    controller has moved their leadership; keep it down for the mode's Kafka outage,
    then ``start-node`` it (it returns once all three brokers are in again)."""
    stack = ctx.cluster
    events = topic_name(Topic.EVENTS, ctx.settings.topic_prefix)
    node, led = cluster.busiest(cluster.leaders(stack.bootstrap(), events), ctx.seed)
    applied = _applied_count(ctx, ledger)
    killed = time.monotonic()
    stack.kill_kafka(node)
    ledger.broker_restarts += 1  # its group coordinators move: a batch may be answered again
    moved = cluster.wait_leaders_moved(stack.bootstrap(), events, node, ctx.mode.kafka_down_s)
    time.sleep(max(0.0, killed + ctx.mode.kafka_down_s - time.monotonic()))
    down_applied = _applied_count(ctx, ledger)
    starting = time.monotonic()
    stack.start_node(f"kafka-{node}")
    back = time.monotonic()
    ledger.notes["broker killed"] = (
        f"kafka-{node} (SIGKILL; it led {led} of {ctx.settings.partitions} events partitions)"
    )
    ledger.notes["leaders moved after s"] = None if moved is None else round(moved, 1)
    ledger.notes["broker down s"] = round(starting - killed, 1)
    ledger.notes["events applied while it was down"] = _difference(down_applied, applied)
    ledger.notes["start-node took s"] = round(back - starting, 1)
    if moved is None:
        ledger.problems.append(
            f"the partitions kafka-{node} led had no other leader {ctx.mode.kafka_down_s:.0f} s "
            "after it was killed"
        )


def kill_redis_master(ctx: Context, ledger: Ledger) -> None:
    """SIGKILL the Redis master serving most of the scenario's feature keys under load;
    time until its replica says it is a master; keep it down for the mode's Redis outage,
    then ``start-node`` it (it rejoins as a replica of the promoted one)."""
    stack = ctx.cluster
    ledger.notes["log from byte"] = _log_size(ctx, "features")
    nodes = cluster.cluster_nodes(stack.redis_port(1))
    slots = [slot_of(ctx.inspector.store.key(entity)) for entity in ledger.entities]
    per_master = cluster.keys_per_master(nodes, slots)
    port = min(per_master, key=lambda p: (-per_master[p], p))
    replica = cluster.replica_of(nodes, port)
    node = stack.redis_node(port)
    applied = _applied_count(ctx, ledger)
    killed = time.monotonic()
    stack.kill_redis(node)
    promoted = None if replica is None else cluster.wait_promoted(replica, ctx.mode.redis_down_s)
    time.sleep(max(0.0, killed + ctx.mode.redis_down_s - time.monotonic()))
    down_applied = _applied_count(ctx, ledger)
    starting = time.monotonic()
    stack.start_node(f"redis-{node}")
    back = time.monotonic()
    ledger.notes["master killed"] = (
        f"redis-{node} (SIGKILL; 127.0.0.1:{port}, it served {per_master[port]} of the "
        f"scenario's {len(slots)} feature keys; its replica 127.0.0.1:{replica})"
    )
    ledger.notes["replica promoted after s"] = None if promoted is None else round(promoted, 1)
    ledger.notes["master down s"] = round(starting - killed, 1)
    ledger.notes["events applied while it was down"] = _difference(down_applied, applied)
    ledger.notes["start-node took s"] = round(back - starting, 1)
    ledger.notes["it rejoined as"] = cluster.role(port)
    if promoted is None:
        ledger.problems.append(
            f"the replica of redis-{node} was not promoted within {ctx.mode.redis_down_s:.0f} s"
        )


def store_repair_notes(ctx: Context, ledger: Ledger) -> None:
    """From the feature worker's log: the online store's losses it found (a watermark
    below what it had applied) and repaired from ``events``."""
    start = int(ledger.notes.pop("log from byte", 0))
    lost = [
        _json(line).get("lost")
        for line in _lines(ctx.settings.data_dir / "logs" / "features.log", start)
        if STORE_LOSS in line
    ]
    ledger.notes["store losses repaired from events"] = lost or "none found"
    restarted_notes(ctx, ledger)


def restarted_notes(ctx: Context, ledger: Ledger) -> None:
    """Which services exited and were restarted by their supervisors during the scenario."""
    ledger.notes["restarted by their supervisors"] = dict(+ledger.restarts) or "none"


def _log_size(ctx: Context, service: str) -> int:
    log = ctx.settings.data_dir / "logs" / f"{service}.log"
    return log.stat().st_size if log.exists() else 0


def _applied_count(ctx: Context, ledger: Ledger) -> int | None:
    """How many event ids the scenario's entities hold now (None: unreadable). A cluster
    client's first command after a failover fails and refreshes its slot map: so a few
    tries."""
    for attempt in range(READ_ATTEMPTS):
        try:
            return sum(len(s.seen) for s in ctx.inspector.states(ledger.entities).values())
        except Exception as exc:  # the store in the middle of its failover
            log.info("online store unreadable", extra={"error": repr(exc), "attempt": attempt})
            time.sleep(READ_RETRY_S)
    return None


def _difference(after: int | None, before: int | None) -> int | str:
    return "unknown" if after is None or before is None else after - before


def _lines(path: Path, start: int) -> list[str]:
    if not path.exists():
        return []
    with path.open("rb") as handle:
        handle.seek(start)
        return handle.read().decode(errors="replace").splitlines()


def _json(line: str) -> dict[str, Any]:
    try:
        value = orjson.loads(line)
    except orjson.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


FAULTS: dict[str, Callable[[Context, Ledger], None]] = {
    "baseline": nothing,
    "kill-features": kill_service,
    "kill-learner": kill_service,
    "kill-predictor": kill_service,
    "kill-retrainer": kill_retrainer_after_registering,
    "kafka-restart": restart_kafka,
    "redis-outage": stop_redis,
    "redis-loss": lose_redis,
    "redis-full": fill_redis,
    "malformed-flood": flood,
    "slow-retrain": slow_retrain,
    "fuzz": fuzz,
    "cluster-baseline": nothing,
    "kill-broker": kill_broker,
    "kill-redis-master": kill_redis_master,
}
# Run after the scenario has caught up (or given up), before its figures are taken.
AFTERWARDS: dict[str, Callable[[Context, Ledger], None]] = {
    "slow-retrain": slow_retrain_notes,
    "kill-broker": restarted_notes,
    "kill-redis-master": store_repair_notes,
}
