"""Is the local Kafka cluster whole: are all its brokers registered and unfenced?

``scripts/stack.sh up --cluster`` waits on this after starting the three KRaft nodes, and
``status --cluster`` reports it. A broker's port that answers is not enough: a broker
serves metadata only once the controller quorum has registered and unfenced it, and
only unfenced brokers appear in the metadata every broker hands out. So the cluster is
ready when that list names every node id, asked through any of the bootstrap servers.

    python scripts/stack/kafka_brokers.py --expect 3 --wait 90 127.0.0.1:19092,127.0.0.1:19093

It uses kafka-python alone, not Eddy's settings: the stack is checked the same way
whatever the ``EDDY_*`` variables of the shell say.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time

from kafka import KafkaAdminClient

PROBE_INTERVAL_S = 0.5
# One probe gives up quickly, so that --wait retries and a stopped cluster is told fast.
PROBE_TIMEOUT_MS = 2_000


def cluster_view(bootstrap: str) -> dict[str, object]:
    """The cluster's metadata (id, unfenced brokers) from any bootstrap server."""
    admin = KafkaAdminClient(
        bootstrap_servers=bootstrap.split(","),
        client_id="eddy-stack",
        api_version_auto_timeout_ms=PROBE_TIMEOUT_MS,
        request_timeout_ms=PROBE_TIMEOUT_MS,
    )
    try:
        return dict(admin.describe_cluster())
    finally:
        admin.close()


def verdict(view: dict[str, object], expect: int) -> tuple[bool, str]:
    """(whole, one line) for a cluster view: whole when node ids 1..expect are all there.

    (Its ``controller_id`` is left out: in KRaft, brokers answer a random broker there,
    not the active controller.)

    >>> verdict({"cluster_id": "c", "brokers": [{"node_id": 1}, {"node_id": 3}]}, 3)
    (False, 'cluster c, brokers 1,3 of 1..3 (missing 2)')
    """
    present = sorted(int(b["node_id"]) for b in view["brokers"])  # type: ignore[attr-defined]
    missing = sorted(set(range(1, expect + 1)) - set(present))
    line = f"cluster {view['cluster_id']}, brokers {','.join(map(str, present))} of 1..{expect}"
    if missing:
        line += f" (missing {','.join(map(str, missing))})"
    return not missing, line


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("bootstrap", help="comma-separated host:port of the brokers")
    parser.add_argument("--expect", type=int, required=True, help="node ids 1..N must be in")
    parser.add_argument("--wait", type=float, default=0.0, help="seconds to keep trying")
    args = parser.parse_args(argv)
    # kafka-python logs every refused connection of a starting cluster: not news here.
    logging.getLogger("kafka").setLevel(logging.CRITICAL)
    deadline = time.monotonic() + args.wait
    while True:
        try:
            whole, line = verdict(cluster_view(args.bootstrap), args.expect)
        except Exception as exc:  # any failure to answer means "not ready yet"
            whole, line = False, f"no answer ({type(exc).__name__}: {exc})"
        if whole or time.monotonic() >= deadline:
            print(f"kafka: {'whole' if whole else 'NOT whole'}: {line}")
            return 0 if whole else 1
        time.sleep(PROBE_INTERVAL_S)


if __name__ == "__main__":
    sys.exit(main())
