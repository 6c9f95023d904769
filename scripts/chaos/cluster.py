"""Who leads and who serves on the private cluster, and how long a failover takes.

The cluster faults pick their victim here (the broker leading most ``events``
partitions, the Redis master serving most of a scenario's feature keys) and time what
follows a ``kill -9``: until no partition of ``events`` is led by the dead broker any
more, until the dead master's replica says it is a master. The parsing is pure; the
probes ask the brokers' metadata (any live broker answers) and each Redis node's own
``CLUSTER NODES``, never Eddy's clients.

>>> busiest({0: 2, 1: 2, 2: 3})
(2, 2)
>>> sorted({busiest({0: 1, 1: 2, 2: 3}, seed)[0] for seed in range(20)})
[1, 2, 3]
>>> nodes = parse_cluster_nodes(
...     "a1 127.0.0.1:23301@23401 myself,master - 0 0 1 connected 0-5460\\n"
...     "b2 127.0.0.1:23304@23404 slave a1 0 0 1 connected\\n"
... )
>>> nodes[0].port, nodes[0].is_master, nodes[0].serves(5460), nodes[1].master_id
(23301, True, True, 'a1')
>>> replica_of(nodes, 23301), master_serving(nodes, 17)
(23304, 23301)
"""

from __future__ import annotations

import contextlib
import logging
import random
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

import redis
from kafka import KafkaAdminClient

log = logging.getLogger(__name__)

PROBE_S = 0.1
PROBE_TIMEOUT_MS = 2_000


def busiest(leaders: dict[int, int], seed: int = 0) -> tuple[int, int]:
    """(node, partitions it leads) for the node leading most of ``leaders`` (partition →
    leader); among equals (a fresh cluster spreads the leaders evenly) the run's seed
    chooses, so runs of different seeds kill different brokers."""
    counts = Counter(leaders.values())
    most = max(counts.values())
    node = random.Random(seed).choice(sorted(n for n in counts if counts[n] == most))
    return node, most


@dataclass(frozen=True)
class RedisNode:
    """One line of ``CLUSTER NODES``."""

    node_id: str
    port: int
    flags: frozenset[str]
    master_id: str | None
    slots: tuple[tuple[int, int], ...]

    @property
    def is_master(self) -> bool:
        return "master" in self.flags and not self.failed

    @property
    def failed(self) -> bool:
        return bool({"fail", "fail?"} & self.flags)

    def serves(self, slot: int) -> bool:
        return any(first <= slot <= last for first, last in self.slots)


def parse_cluster_nodes(text: str) -> list[RedisNode]:
    nodes = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 8:
            continue
        address = parts[1].split("@")[0]
        slots = []
        for item in parts[8:]:
            if item.startswith("["):  # a slot being migrated: not served yet
                continue
            first, _, last = item.partition("-")
            slots.append((int(first), int(last or first)))
        nodes.append(
            RedisNode(
                node_id=parts[0],
                port=int(address.rpartition(":")[2]),
                flags=frozenset(parts[2].split(",")),
                master_id=None if parts[3] == "-" else parts[3],
                slots=tuple(slots),
            )
        )
    return nodes


def master_serving(nodes: list[RedisNode], slot: int) -> int | None:
    """The port of the (live) master serving ``slot``."""
    return next((n.port for n in nodes if n.is_master and n.serves(slot)), None)


def replica_of(nodes: list[RedisNode], master_port: int) -> int | None:
    """The port of a replica of the master on ``master_port``."""
    master = next((n for n in nodes if n.port == master_port), None)
    if master is None:
        return None
    return next((n.port for n in nodes if n.master_id == master.node_id), None)


def keys_per_master(nodes: list[RedisNode], slots: Iterable[int]) -> Counter[int]:
    """How many of ``slots`` (one per key) each master's port serves."""
    return Counter(port for slot in slots if (port := master_serving(nodes, slot)) is not None)


def cluster_nodes(port: int) -> list[RedisNode]:
    """``CLUSTER NODES`` as the node on ``port`` sees the cluster."""
    client = redis.Redis(
        host="127.0.0.1", port=port, socket_timeout=1, socket_connect_timeout=1,
        decode_responses=True,
    )  # fmt: skip
    try:
        text = client.execute_command("CLUSTER", "NODES")  # type: ignore[no-untyped-call]
        return parse_cluster_nodes(str(text))
    finally:
        client.close()


def myself(port: int) -> RedisNode | None:
    """The node on ``port`` as it sees itself (None when it does not answer)."""
    try:
        nodes = cluster_nodes(port)
    except redis.RedisError:
        return None
    return next((n for n in nodes if "myself" in n.flags), None)


def role(port: int) -> str:
    """``master`` or ``replica of 127.0.0.1:<port>``, as the node on ``port`` says."""
    try:
        nodes = cluster_nodes(port)
    except redis.RedisError as exc:
        return f"unknown ({exc})"
    me = next((n for n in nodes if "myself" in n.flags), None)
    if me is None:
        return "unknown"
    if me.is_master:
        return "master"
    master = next((n.port for n in nodes if n.node_id == me.master_id), None)
    return f"replica of 127.0.0.1:{master}"


def wait_promoted(port: int, timeout_s: float) -> float | None:
    """Seconds until the node on ``port`` says it is a master (None: not in time)."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        me = myself(port)
        if me is not None and me.is_master:
            return time.monotonic() - started
        time.sleep(PROBE_S)
    return None


def _admin(bootstrap: str) -> KafkaAdminClient:
    return KafkaAdminClient(
        bootstrap_servers=bootstrap.split(","),
        client_id="chaos-probe",
        request_timeout_ms=PROBE_TIMEOUT_MS,
        api_version_auto_timeout_ms=PROBE_TIMEOUT_MS,
    )


def leaders(bootstrap: str, topic: str) -> dict[int, int]:
    """Partition → leader's node id of ``topic``, from any broker that answers."""
    admin = _admin(bootstrap)
    try:
        described = admin.describe_topics([topic])
    finally:
        admin.close()
    return {p["partition"]: p["leader"] for t in described for p in t["partitions"]}


def wait_leaders_moved(bootstrap: str, topic: str, dead: int, timeout_s: float) -> float | None:
    """Seconds until no partition of ``topic`` is led by broker ``dead`` (nor leaderless):
    the controller has fenced it and elected new leaders (None: not in time)."""
    started = time.monotonic()
    admin: KafkaAdminClient | None = None
    try:
        while time.monotonic() - started < timeout_s:
            try:
                if admin is None:
                    admin = _admin(bootstrap)
                described = admin.describe_topics([topic])
            except Exception as exc:  # a probe through the dead broker: ask another
                log.info("leader probe failed", extra={"error": repr(exc)})
                if admin is not None:
                    with contextlib.suppress(Exception):
                        admin.close()
                admin = None
            else:
                now = [p["leader"] for t in described for p in t["partitions"]]
                if now and all(leader not in (dead, -1) for leader in now):
                    return time.monotonic() - started
            time.sleep(PROBE_S)
        return None
    finally:
        if admin is not None:
            admin.close()
