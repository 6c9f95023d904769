"""A Kafka broker and a Redis of the run's own, to break without disturbing anyone.

``scripts/stack.sh`` starts them on the run's ports (``STACK_*_PORT``) with the run's data
folder (``EDDY_DATA_DIR``), so the shared stack on the default ports is never touched.
The faults stop exactly the processes this stack started: their pids come from the
stack's own pid files and are checked against ``/proc/<pid>/cmdline`` first.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from chaos.plan import Ports
from eddy.services.config.settings import ENV_PREFIX, PROJECT_ROOT

STACK_SCRIPT = PROJECT_ROOT / "scripts" / "stack.sh"
# Not the clustered stack's 19092-19094 (the test session runs both at once).
PREFERRED = Ports(kafka=18092, controller=18093, redis=16379)
STOP_TIMEOUT_S = 60.0
STOP_POLL_S = 0.1
UP_TIMEOUT_S = 300.0


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
        """Reuse jars another stack already fetched (a link), instead of Maven again.

        ``stack.sh`` re-fetches only when its stamp no longer matches the pom; it then
        replaces the link, never the shared folder.
        """
        libs = self.data_dir / "kafka" / "libs"
        if libs.exists() or not (shared_libs / ".pom.sha256").exists():
            return
        libs.parent.mkdir(parents=True, exist_ok=True)
        libs.symlink_to(shared_libs, target_is_directory=True)

    def _script(self, action: str) -> str:
        result = subprocess.run(
            ["bash", str(STACK_SCRIPT), action],  # noqa: S607 (bash from PATH, as eddy up)
            env=self.env,
            capture_output=True,
            text=True,
            timeout=UP_TIMEOUT_S,
            check=False,
        )
        if result.returncode != 0:
            raise StackError(f"stack.sh {action} failed:\n{result.stderr}{result.stdout}")
        return result.stderr + result.stdout

    def up(self) -> str:
        """Start whatever of the two is not running (both answer when this returns)."""
        return self._script("up")

    def down(self) -> str:
        return self._script("down")

    def _pid(self, pidfile: Path, *signature: str) -> int:
        """The pid in ``pidfile`` if that process's command line has ``signature``."""
        try:
            pid = int(pidfile.read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, ValueError) as exc:
            raise StackError(f"no running process from {pidfile}: {exc}") from None
        if not all(part in cmdline for part in signature):
            raise StackError(f"pid {pid} in {pidfile} is not this stack's ({signature})")
        return pid

    def kafka_pid(self) -> int:
        return self._pid(self.data_dir / "kafka" / "broker.pid", "kafka.Kafka", str(self.data_dir))

    def redis_pid(self) -> int:
        return self._pid(
            self.data_dir / "redis" / "redis.pid", "redis-server", f":{self.ports.redis}"
        )

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
