"""Readiness probes: does the broker answer a metadata request, does Redis answer PING?

``scripts/stack.sh`` waits on these after starting a service, and ``eddy status`` reports
them. A port that accepts connections is not enough: a starting broker listens before
it can serve metadata. Redis's answer includes its memory policy, with a warning when
it could lose feature state (see :func:`memory_warning`).

    python -m eddy.services.ops.health kafka --wait 60
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from typing import Any

from redis.cluster import RedisCluster

from eddy.services.config.settings import Settings
from eddy.streams.transport.clients import make_admin, make_redis

PROBE_INTERVAL_S = 0.25
# One probe gives up quickly so that --wait can retry and a down service is told fast.
PROBE_TIMEOUT_MS = 2_000


def kafka_answer(settings: Settings) -> str:
    """A one-line description of the cluster; raises when the broker does not answer."""
    admin = make_admin(
        settings, api_version_auto_timeout_ms=PROBE_TIMEOUT_MS, request_timeout_ms=PROBE_TIMEOUT_MS
    )
    try:
        cluster = admin.describe_cluster()
        brokers = ", ".join(f"{b['host']}:{b['port']}" for b in cluster["brokers"])
        return f"cluster {cluster['cluster_id']}, brokers {brokers}"
    finally:
        admin.close()


def redis_answer(settings: Settings) -> str:
    """A one-line description of the Redis server; raises when it does not answer.

    Read from INFO alone (managed Redis services often refuse CONFIG).
    """
    client = make_redis(settings, socket_timeout=PROBE_TIMEOUT_MS / 1000)
    try:
        if isinstance(client, RedisCluster):  # every master, described one after another
            masters = client.get_primaries()  # type: ignore[no-untyped-call]
            sections = [
                client.info(section, target_nodes=RedisCluster.PRIMARIES)
                for section in ("server", "memory", "persistence")
            ]
            return f"redis cluster of {len(masters)} masters: " + " | ".join(
                f"{node.name}: "
                + _described(
                    sections[0][node.name] | sections[1][node.name] | sections[2][node.name]
                )
                for node in masters
            )
        info = client.info("server") | client.info("memory") | client.info("persistence")
    finally:
        client.close()
    return _described(info)


def _described(info: dict[str, Any]) -> str:
    limit, policy = int(info.get("maxmemory", 0)), str(info.get("maxmemory_policy", "unknown"))
    described = (
        f"redis {info['redis_version']}, aof {'on' if info.get('aof_enabled') else 'off'}, "
        f"memory {info.get('used_memory_human', '?')} of "
        f"{info.get('maxmemory_human', limit) if limit else 'unlimited'}, policy {policy}"
    )
    warning = memory_warning(limit, policy)
    return described if warning is None else f"{described}; WARNING: {warning}"


def memory_warning(limit: int, policy: str) -> str | None:
    """What a Redis memory configuration risks for the online feature store, if anything.

    An evicting policy drops an entity's state without a trace while its events' offsets
    stay committed; ``noeviction`` refuses the write instead, the feature worker stops
    before committing, and nothing is lost. No limit lets Redis grow until the OS kills it.

    >>> memory_warning(2**31, "noeviction") is None
    True
    >>> memory_warning(2**31, "allkeys-lru")
    'policy allkeys-lru evicts feature state when memory is full; set maxmemory-policy noeviction'
    >>> memory_warning(0, "noeviction")
    'no maxmemory: Redis can grow until the machine runs out; set maxmemory'
    """
    if policy != "noeviction":
        return (
            f"policy {policy} evicts feature state when memory is full; "
            "set maxmemory-policy noeviction"
        )
    if limit == 0:
        return "no maxmemory: Redis can grow until the machine runs out; set maxmemory"
    return None


PROBES: dict[str, Callable[[Settings], str]] = {"kafka": kafka_answer, "redis": redis_answer}


def wait_until_ready(name: str, settings: Settings, timeout_s: float) -> tuple[bool, str]:
    """Probe ``name`` until it answers or ``timeout_s`` passes; (ready, detail)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return True, PROBES[name](settings)
        except Exception as exc:  # any failure to answer means "not ready yet"
            if time.monotonic() >= deadline:
                return False, f"{type(exc).__name__}: {exc}"
        time.sleep(PROBE_INTERVAL_S)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("service", choices=sorted(PROBES))
    parser.add_argument("--wait", type=float, default=0.0, help="seconds to keep trying")
    args = parser.parse_args(argv)
    ready, detail = wait_until_ready(args.service, Settings.from_env(), args.wait)
    print(f"{args.service}: {'healthy' if ready else 'NOT answering'} ({detail})")
    return 0 if ready else 1


if __name__ == "__main__":
    sys.exit(main())
