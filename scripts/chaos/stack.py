"""A Kafka broker and a Redis of the run's own, to break without disturbing anyone;
and a clustered stack of the run's own (three brokers, a Redis Cluster of six nodes).

``scripts/stack.sh`` starts them on the run's ports (``STACK_*_PORT``,
``STACK_CLUSTER_*_PORT``) with the run's data folder (``EDDY_DATA_DIR``), so the shared
stacks on the default ports are never touched. The faults stop exactly the processes
this stack started: their pids come from the stack's own pid files (one per node on the
cluster) and are checked against ``/proc/<pid>/cmdline`` first.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from chaos.plan import ClusterPorts, Ports
from eddy.services.config.settings import ENV_PREFIX, PROJECT_ROOT

STACK_SCRIPT = PROJECT_ROOT / "scripts" / "stack.sh"
# Not the clustered stack's 19092-19094 (the test session runs both at once).
PREFERRED = Ports(kafka=18092, controller=18093, redis=16379)
STOP_TIMEOUT_S = 60.0
STOP_POLL_S = 0.1
UP_TIMEOUT_S = 300.0
# Below Linux's ephemeral range (32768+), and clear of the shared clustered stack
# (19092-19094, 19192-19194, 17001-17006, 17101-17106).
CLUSTER_PREFERRED = ClusterPorts(kafka=23092, controller=23192, redis=23301, redis_bus=23401)
CLUSTER_SEARCH = range(20_000, 32_000, 10)
KAFKA_NODES = 3
REDIS_NODES = 6


class StackError(RuntimeError):
    """The private stack could not be started, stopped or found."""


def _free(port: int) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _any_free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def choose_ports(preferred: Ports = PREFERRED) -> Ports:
    """The preferred ports when all are free, else ports the system says are free."""
    if all(_free(p) for p in (preferred.kafka, preferred.controller, preferred.redis)):
        return preferred
    return Ports(_any_free_port(), _any_free_port(), _any_free_port())


def choose_cluster_ports(preferred: ClusterPorts = CLUSTER_PREFERRED) -> ClusterPorts:
    """The preferred base ports when every node's port is free, else other bases (in
    steps of ten below the ephemeral range) whose every port is."""

    def blocks_free(ports: ClusterPorts) -> bool:
        return all(
            _free(base + k)
            for base, count in (
                (ports.kafka, KAFKA_NODES),
                (ports.controller, KAFKA_NODES),
                (ports.redis, REDIS_NODES),
                (ports.redis_bus, REDIS_NODES),
            )
            for k in range(count)
        )

    if blocks_free(preferred):
        return preferred
    bases = [b for b in CLUSTER_SEARCH if all(_free(b + k) for k in range(REDIS_NODES))]
    if len(bases) < 4:
        raise StackError("no free ports for a private cluster below 32000")
    chosen = ClusterPorts(*random.sample(bases, 4))
    if not blocks_free(chosen):
        raise StackError(f"ports of {chosen} were taken while choosing; try again")
    return chosen


class PrivateStack:
    def __init__(self, data_dir: Path, ports: Ports, inherited: dict[str, str]) -> None:
        """``inherited``: the environment to run ``stack.sh`` in; Eddy's settings are
        dropped from it (``EDDY_KAFKA_BOOTSTRAP`` or ``EDDY_REDIS_URL`` would make the
        script start nothing) except the data folder, which is the stack's."""
        self.data_dir = data_dir
        self.ports = ports
        self.env = {k: v for k, v in inherited.items() if not k.startswith(ENV_PREFIX)} | {
            "EDDY_DATA_DIR": str(data_dir),
            "STACK_KAFKA_PORT": str(ports.kafka),
            "STACK_CONTROLLER_PORT": str(ports.controller),
            "STACK_REDIS_PORT": str(ports.redis),
            "STACK_PYTHON": sys.executable,
        }

    def share_kafka_jars(self, shared_libs: Path) -> None:
        _share_kafka_jars(self.data_dir, shared_libs)

    def _script(self, action: str) -> str:
        return _stack_script(self.env, action)

    def up(self) -> str:
        """Start whatever of the two is not running (both answer when this returns)."""
        return self._script("up")

    def down(self) -> str:
        return self._script("down")

    def describe(self) -> str:
        return f"Kafka 127.0.0.1:{self.ports.kafka}, Redis 127.0.0.1:{self.ports.redis}"

    def kafka_pid(self) -> int:
        return _pid(self.data_dir / "kafka" / "broker.pid", "kafka.Kafka", str(self.data_dir))

    def redis_pid(self) -> int:
        return _pid(self.data_dir / "redis" / "redis.pid", "redis-server", f":{self.ports.redis}")

    def stop_kafka(self, how: signal.Signals) -> None:
        _stop(self.kafka_pid(), how)

    def stop_redis(self) -> None:
        """SIGTERM: Redis writes its append-only file out and exits (a clean stop)."""
        _stop(self.redis_pid(), signal.SIGTERM)

    def lose_redis(self) -> None:
        """SIGKILL Redis and delete what it persisted, then start it: it comes back
        empty, as after a failover to a replica that lagged or a lost disk."""
        _stop(self.redis_pid(), signal.SIGKILL)
        folder = self.data_dir / "redis"
        for path in [*folder.glob("appendonlydir*"), *folder.glob("*.rdb"), *folder.glob("*.aof")]:
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()
        self.up()


class PrivateClusterStack:
    """``scripts/stack.sh ... --cluster`` on the run's base ports and data folder: nodes
    ``kafka-1..3`` and ``redis-1..6``, each with its own pid file, so one node can be
    killed and started again alone (``start-node``)."""

    def __init__(self, data_dir: Path, ports: ClusterPorts, inherited: dict[str, str]) -> None:
        """``inherited`` as for :class:`PrivateStack`."""
        self.data_dir = data_dir
        self.ports = ports
        self.nodes_dir = data_dir / "cluster"
        self.env = {k: v for k, v in inherited.items() if not k.startswith(ENV_PREFIX)} | {
            "EDDY_DATA_DIR": str(data_dir),
            "STACK_CLUSTER_KAFKA_PORT": str(ports.kafka),
            "STACK_CLUSTER_CONTROLLER_PORT": str(ports.controller),
            "STACK_CLUSTER_REDIS_PORT": str(ports.redis),
            "STACK_CLUSTER_REDIS_BUS_PORT": str(ports.redis_bus),
            "STACK_PYTHON": sys.executable,
        }

    def share_kafka_jars(self, shared_libs: Path) -> None:
        """The cluster's nodes run the jars in the stack's ``kafka/libs``, as the single
        broker does."""
        _share_kafka_jars(self.data_dir, shared_libs)

    def _script(self, *args: str) -> str:
        return _stack_script(self.env, *args, "--cluster")

    def up(self) -> str:
        """Start whatever node is not running (every one is in when this returns)."""
        return self._script("up")

    def down(self) -> str:
        return self._script("down")

    def exports(self) -> str:
        """The ``export EDDY_*=...`` lines that point Eddy at this cluster."""
        return self._script("env")

    def start_node(self, node: str) -> str:
        """Start ``node`` (``kafka-N`` or ``redis-N``) again; returns when the cluster is
        whole again (three brokers in; every Redis node agrees on three masters)."""
        return self._script("start-node", node)

    def describe(self) -> str:
        p = self.ports
        return (
            f"Kafka 127.0.0.1:{p.kafka}-{p.kafka + KAFKA_NODES - 1} "
            f"(controllers {p.controller}-{p.controller + KAFKA_NODES - 1}), "
            f"Redis Cluster 127.0.0.1:{p.redis}-{p.redis + REDIS_NODES - 1} "
            f"(bus {p.redis_bus}-{p.redis_bus + REDIS_NODES - 1})"
        )

    def bootstrap(self) -> str:
        return ",".join(f"127.0.0.1:{self.ports.kafka + k}" for k in range(KAFKA_NODES))

    def redis_port(self, node: int) -> int:
        return self.ports.redis + node - 1

    def redis_node(self, port: int) -> int:
        """The node number (1..6) listening on ``port``."""
        node = port - self.ports.redis + 1
        if not 1 <= node <= REDIS_NODES:
            raise StackError(f"port {port} is none of this cluster's Redis nodes")
        return node

    def kafka_pid(self, node: int) -> int:
        folder = self.nodes_dir / f"kafka-{node}"
        return _pid(folder / "broker.pid", "kafka.Kafka", str(folder / "server.properties"))

    def redis_pid(self, node: int) -> int:
        return _pid(
            self.nodes_dir / f"redis-{node}" / "redis.pid",
            "redis-server",
            f"127.0.0.1:{self.redis_port(node)}",
        )

    def kill_kafka(self, node: int) -> None:
        """SIGKILL broker ``node`` and wait until it is gone."""
        _stop(self.kafka_pid(node), signal.SIGKILL)

    def kill_redis(self, node: int) -> None:
        """SIGKILL Redis node ``node`` and wait until it is gone."""
        _stop(self.redis_pid(node), signal.SIGKILL)


def _share_kafka_jars(data_dir: Path, shared_libs: Path) -> None:
    """Reuse jars another stack already fetched (a link), instead of Maven again.

    ``stack.sh`` re-fetches only when its stamp no longer matches the pom; it then
    replaces the link, never the shared folder.
    """
    libs = data_dir / "kafka" / "libs"
    if libs.exists() or not (shared_libs / ".pom.sha256").exists():
        return
    libs.parent.mkdir(parents=True, exist_ok=True)
    libs.symlink_to(shared_libs, target_is_directory=True)


def _stack_script(env: dict[str, str], *args: str) -> str:
    result = subprocess.run(
        ["bash", str(STACK_SCRIPT), *args],  # noqa: S607 (bash from PATH, as eddy up)
        env=env,
        capture_output=True,
        text=True,
        timeout=UP_TIMEOUT_S,
        check=False,
    )
    if result.returncode != 0:
        raise StackError(f"stack.sh {' '.join(args)} failed:\n{result.stderr}{result.stdout}")
    return result.stderr + result.stdout


def _pid(pidfile: Path, *signature: str) -> int:
    """The pid in ``pidfile`` if that process's command line has ``signature``."""
    try:
        pid = int(pidfile.read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except (OSError, ValueError) as exc:
        raise StackError(f"no running process from {pidfile}: {exc}") from None
    if not all(part in cmdline for part in signature):
        raise StackError(f"pid {pid} in {pidfile} is not this stack's ({signature})")
    return pid


def _stop(pid: int, how: signal.Signals) -> None:
    """Signal ``pid`` and wait until it has exited."""
    os.kill(pid, how)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while _running(pid):
        if time.monotonic() > deadline:
            raise StackError(f"pid {pid} still running {STOP_TIMEOUT_S}s after {how.name}")
        time.sleep(STOP_POLL_S)


def _running(pid: int) -> bool:
    """Alive and not a zombie waiting for its parent."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"
