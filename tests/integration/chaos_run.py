"""The chaos suite's short run, started once per test session, in the background.

The run keeps its own broker, Redis and services (other ports, its own folder) and
spends most of its time waiting for them, so the session starts it as soon as the tests
are collected and runs the unit tests and doctests meanwhile (conftest orders them
first); ``test_chaos.py`` then waits for its figures.

The session's controller starts it, and the test worker that runs ``test_chaos.py`` may
be another process: so everything about the run is a file in its folder (the figures,
the output, the exit code, the pid), and this module, run as a script, is the small
parent that writes the exit code when ``scripts/chaos.py`` ends. Output goes to files,
never to pipes a busy session would not drain.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Any

import orjson

CHAOS = Path(__file__).resolve().parents[2] / "scripts" / "chaos.py"
FOLDER_NAME = "chaos"
# The suite's own deadlines bound it (each scenario gives up after its catch-up
# deadline); this only stops a hung run.
RUN_TIMEOUT_S = 1800
STOP_TIMEOUT_S = 180
POLL_S = 1.0
OUTPUT_TAIL = 12_000


class ChaosRun:
    """The run whose files are in ``folder``, seen from any process of the session."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.figures = folder / "figures.json"
        self.output = folder / "output.log"
        self.exit_code = folder / "exit-code"
        self.pid = folder / "pid"

    def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        parent = subprocess.Popen(
            [sys.executable, __file__, str(self.folder)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.pid.write_text(str(parent.pid))
        _PARENTS.append(parent)  # kept, and reaped at the end: an unreaped Popen warns

    def started(self) -> bool:
        return self.pid.exists()

    def finished(self) -> bool:
        return self.exit_code.exists()

    def result(self) -> tuple[dict[str, Any], str, int]:
        """The figures (empty when it wrote none), the output's tail, the exit code."""
        if not self.started():
            raise RuntimeError(f"no chaos run was started in this session ({self.folder})")
        if not self._wait(RUN_TIMEOUT_S):
            self.stop()
        code = int(self.exit_code.read_text()) if self.finished() else -1
        output = self.output.read_text(errors="replace")[-OUTPUT_TAIL:]
        report = orjson.loads(self.figures.read_bytes()) if self.figures.exists() else {}
        return report, output, code

    def stop(self) -> None:
        """SIGTERM: the suite stops its private stack and services."""
        if self.started() and not self.finished():
            try:
                os.kill(int(self.pid.read_text()), signal.SIGTERM)
            except ProcessLookupError:
                return
            self._wait(STOP_TIMEOUT_S)

    def passed(self) -> bool:
        return self.finished() and self.exit_code.read_text().strip() == "0"

    def _wait(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while not self.finished():
            if time.monotonic() > deadline:
                return False
            time.sleep(POLL_S)
        return True


# The parents this process started (the session's controller starts one).
_PARENTS: list[subprocess.Popen[bytes]] = []


def session_run(session_folder: Path) -> ChaosRun:
    return ChaosRun(session_folder / FOLDER_NAME)


def start_once(session_folder: Path) -> None:
    """Start the session's run unless it was started already (only the controller calls)."""
    run = session_run(session_folder)
    if not run.started():
        run.start()


def stop_if_started(session_folder: Path) -> None:
    """Stop the run if it still goes; remove its folder if it passed (a failed run's
    logs and state stay, named in its output)."""
    run = session_run(session_folder)
    run.stop()
    for parent in _PARENTS:
        try:
            parent.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            parent.kill()
            parent.wait()
    if run.passed():
        shutil.rmtree(run.folder, ignore_errors=True)


def _run_and_record_exit(folder: Path) -> None:
    run = ChaosRun(folder)
    with run.output.open("wb") as out:
        chaos = subprocess.Popen(
            [
                *(sys.executable, str(CHAOS), "--short"),
                *("--workdir", str(folder), "--json", str(run.figures)),
            ],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )

        def forward(signum: int, _frame: FrameType | None) -> None:
            chaos.send_signal(signum)

        signal.signal(signal.SIGTERM, forward)
        code = chaos.wait()
    written = run.exit_code.with_suffix(".tmp")
    written.write_text(str(code))
    written.replace(run.exit_code)


if __name__ == "__main__":
    _run_and_record_exit(Path(sys.argv[1]))
