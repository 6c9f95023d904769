"""The chaos suite's short run, started once per test session, in the background.

The run keeps its own broker, Redis and services (other ports, its own folder) and
spends most of its time waiting for them, so the session starts it as soon as the tests
are collected and runs the unit tests and doctests meanwhile (conftest orders them
first); ``test_chaos.py`` then waits for its figures. Output goes to files, never to
pipes a busy session would not drain.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import orjson

from services.settings import PROJECT_ROOT

CHAOS = PROJECT_ROOT / "scripts" / "chaos.py"
# The suite's own deadlines bound it (each scenario gives up after its catch-up
# deadline); this only stops a hung run.
RUN_TIMEOUT_S = 1800
STOP_TIMEOUT_S = 180
OUTPUT_TAIL = 12_000


class ChaosRun:
    def __init__(self) -> None:
        self.workdir = Path(tempfile.mkdtemp(prefix="eddy-chaos-"))
        self.figures = self.workdir / "figures.json"
        self.output = self.workdir / "output.log"
        with self.output.open("wb") as out:
            self.process = subprocess.Popen(
                [
                    *(sys.executable, str(CHAOS), "--short"),
                    *("--workdir", str(self.workdir), "--json", str(self.figures)),
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def result(self) -> tuple[dict[str, Any], str, int]:
        """The figures (empty when it wrote none), the output's tail, the exit code."""
        try:
            code = self.process.wait(timeout=RUN_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.stop()
            code = self.process.returncode
        output = self.output.read_text(errors="replace")[-OUTPUT_TAIL:]
        report = orjson.loads(self.figures.read_bytes()) if self.figures.exists() else {}
        return report, output, code

    def stop(self) -> None:
        """SIGTERM: the suite stops its private stack and services."""
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=STOP_TIMEOUT_S)


_RUN: ChaosRun | None = None


def started() -> ChaosRun:
    """The session's run, started now if it was not yet."""
    global _RUN
    if _RUN is None:
        _RUN = ChaosRun()
    return _RUN


def stop_if_started() -> None:
    """Stop the run if it still goes; remove its folder if it passed (a failed run's
    logs and state stay, named in its output)."""
    if _RUN is not None:
        _RUN.stop()
        if _RUN.process.returncode == 0:
            shutil.rmtree(_RUN.workdir, ignore_errors=True)
