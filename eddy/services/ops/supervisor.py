"""``eddy run all``: every service as a child process, restarted when it crashes.

Each service runs as ``eddy run <name>`` with the same environment; its output goes to
``<data>/logs/<name>.log`` (JSON lines). A child that exits while the supervisor is
running is restarted after a backoff that doubles on each quick crash and resets once
it has stayed up for a while; the log line says why it ended (a crash, a signal, or its
liveness check finding it stalled: :mod:`eddy.services.ops.liveness`). SIGINT or SIGTERM stops
every child with SIGTERM, waits, then SIGKILLs stragglers.

>>> delays = RestartPolicy(initial_s=1, max_s=8, stable_s=60)
>>> [delays.next_delay(uptime_s=2) for _ in range(5)]
[1, 2, 4, 8, 8]
>>> delays.next_delay(uptime_s=120)
1
>>> exit_reason(STALLED_EXIT_CODE), exit_reason(-9), exit_reason(1)
('stalled: no progress while records waited', 'killed by SIGKILL', 'exit code 1')
"""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eddy.services.ops.liveness import STALLED_EXIT_CODE

log = logging.getLogger(__name__)

SERVICES = ("features", "learner", "retrainer", "predictor", "monitor")
STOP_GRACE_S = 20.0
CHECK_EVERY_S = 0.5


def exit_reason(code: int) -> str:
    """Why a child ended, in words, for the restart log line."""
    if code == STALLED_EXIT_CODE:
        return "stalled: no progress while records waited"
    if code < 0:
        return f"killed by {signal.Signals(-code).name}"
    return f"exit code {code}"


@dataclass
class RestartPolicy:
    """Capped exponential backoff; a child that stayed up ``stable_s`` starts afresh."""

    initial_s: float = 1.0
    max_s: float = 30.0
    stable_s: float = 60.0
    _next: float = field(default=0.0, init=False)

    def next_delay(self, uptime_s: float) -> float:
        if uptime_s >= self.stable_s or self._next == 0.0:
            self._next = self.initial_s
        else:
            self._next = min(self._next * 2, self.max_s)
        return self._next


@dataclass
class Child:
    name: str
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    restart_at: float | None = None
    restarts: int = 0
    policy: RestartPolicy = field(default_factory=RestartPolicy)


class Supervisor:
    def __init__(
        self,
        names: Sequence[str],
        log_dir: Path,
        env: dict[str, str] | None = None,
        policy: Callable[[], RestartPolicy] = RestartPolicy,
    ) -> None:
        self.children = [Child(name, policy=policy()) for name in names]
        self.log_dir = log_dir
        self.env = env
        self._stopping = False

    def start(self) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        for child in self.children:
            self._spawn(child)

    def _spawn(self, child: Child) -> None:
        command = [str(Path(sys.executable).with_name("eddy")), "run", child.name]
        with (self.log_dir / f"{child.name}.log").open("ab") as out:
            child.process = subprocess.Popen(  # noqa: S603 (our own command)
                command, env=self.env, stdout=out, stderr=subprocess.STDOUT
            )
        child.started_at = time.monotonic()
        child.restart_at = None
        log.info("started", extra={"service": child.name, "pid": child.process.pid})

    def check(self) -> None:
        """Restart children that died, once their backoff has passed."""
        now = time.monotonic()
        for child in self.children:
            if child.process is None or self._stopping:
                continue
            code = child.process.poll()
            if code is None:
                continue
            if child.restart_at is None:
                delay = child.policy.next_delay(now - child.started_at)
                child.restart_at = now + delay
                log.warning(
                    "service exited; restarting",
                    extra={
                        "service": child.name,
                        "exit_code": code,
                        "reason": exit_reason(code),
                        "restart_in_s": delay,
                    },
                )
            elif now >= child.restart_at:
                child.restarts += 1
                self._spawn(child)

    def run(self) -> None:
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)
        self.start()
        try:
            while not self._stopping:
                self.check()
                time.sleep(CHECK_EVERY_S)
        finally:
            self.stop()

    def request_stop(self, *_: Any) -> None:
        self._stopping = True

    def stop(self) -> None:
        self._stopping = True
        running = [c.process for c in self.children if c.process and c.process.poll() is None]
        for process in running:
            process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        for process in running:
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        log.info("all services stopped")
