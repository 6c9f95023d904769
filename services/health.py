"""Readiness probes: does the broker answer a metadata request, does Redis answer PING?

``scripts/stack.sh`` waits on these after starting a service, and ``eddy status`` reports
them. A port that accepts connections is not enough: a starting broker listens before
it can serve metadata.

    python -m services.health kafka --wait 60
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable

from services.settings import Settings
from streams.clients import make_admin, make_redis

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
    """A one-line description of the Redis server; raises when it does not answer."""
    client = make_redis(settings, socket_timeout=PROBE_TIMEOUT_MS / 1000)
    try:
        info = client.info("server")
        return f"redis {info['redis_version']}, aof {client.config_get('appendonly')}"
    finally:
        client.close()


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
