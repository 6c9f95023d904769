"""Eddy's processes started by tests, as an operator would: the ``eddy`` command."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from eddy.services.config.settings import Settings

EDDY = str(Path(sys.executable).with_name("eddy"))


def start_eddy(settings: Settings, log: Path, *args: str) -> subprocess.Popen[bytes]:
    """``eddy <args>`` in a child process with the deployment's environment, its output
    (stdout and stderr) written to ``log``."""
    with log.open("wb") as out:
        return subprocess.Popen(
            [EDDY, *args], env=settings.child_env(), stdout=out, stderr=subprocess.STDOUT
        )
