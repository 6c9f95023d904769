"""Eddy's services for the run, each under Eddy's own supervisor (as ``eddy run all`` does).

One :class:`~eddy.services.ops.supervisor.Supervisor` per service, so one service can be started
again with other settings (the slow-retrain scenario's retrainer) while the others keep
running. A thread drives every supervisor's restart checks; nothing here restarts a
service by hand, so "resumes by itself" means what it says.
"""

from __future__ import annotations

import signal
import threading
from collections import Counter
from pathlib import Path

from eddy.services.config.settings import Settings
from eddy.services.ops.supervisor import CHECK_EVERY_S, Supervisor


class FleetError(RuntimeError):
    """A service is not running where the run expected it."""


class Fleet:
    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self._supervisors: dict[str, Supervisor] = {}
        self._settings: dict[str, Settings] = {}
        self._retired: Counter[str] = Counter()  # restarts of replaced supervisors
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._checker = threading.Thread(target=self._check, name="fleet-checks", daemon=True)

    def start(self, name: str, settings: Settings) -> None:
        """Run ``eddy run <name>`` with ``settings``, replacing a running one (SIGTERM)."""
        supervisor = Supervisor([name], self.log_dir, env=settings.child_env())
        with self._lock:
            old = self._supervisors.pop(name, None)
        if old is not None:
            old.stop()
            self._retired[name] += old.children[0].restarts
        supervisor.start()
        with self._lock:
            self._supervisors[name] = supervisor
            self._settings[name] = settings
        if not self._checker.is_alive():
            self._checker.start()

    def restart_all(self) -> None:
        """Every service stopped and started again with its settings: the repair an
        operator would do by hand (the run records when it had to)."""
        with self._lock:
            started = dict(self._settings)
        for name, settings in started.items():
            self.start(name, settings)

    def _check(self) -> None:
        while not self._stop.wait(CHECK_EVERY_S):
            with self._lock:
                supervisors = list(self._supervisors.values())
            for supervisor in supervisors:
                supervisor.check()

    def kill(self, name: str) -> int:
        """SIGKILL the service's process; returns its pid. Its supervisor restarts it."""
        with self._lock:
            process = self._supervisors[name].children[0].process
        if process is None or process.poll() is not None:
            raise FleetError(f"{name} is not running")
        process.send_signal(signal.SIGKILL)
        return process.pid

    def pid(self, name: str) -> int | None:
        with self._lock:
            process = self._supervisors[name].children[0].process
        return process.pid if process is not None and process.poll() is None else None

    def restarts(self) -> Counter[str]:
        """Restarts so far per service (kills included: a killed service is restarted)."""
        with self._lock:
            counts = Counter({n: s.children[0].restarts for n, s in self._supervisors.items()})
        return counts + self._retired

    def stop(self) -> None:
        """Stop every service at once (each supervisor waits for its own)."""
        self._stop.set()
        with self._lock:
            supervisors = list(self._supervisors.values())
        stopping = [threading.Thread(target=s.stop) for s in supervisors]
        for thread in stopping:
            thread.start()
        for thread in stopping:
            thread.join()
