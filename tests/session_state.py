"""What the processes of one test session share: a folder, named in the environment.

``scripts/test.sh`` runs the tests in two pytest-xdist workers beside a controller. What
must happen once per session (start the shared Kafka and Redis, start the chaos run,
stop both at the end) is decided through this folder: the controller creates it before
the workers start, so they inherit its name, and a lock file in it lets exactly one
process start the shared stack. A plain ``pytest`` (no workers) is its own controller.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

FOLDER_VARIABLE = "PYTEST_EDDY_SESSION_DIR"  # not EDDY_*: the settings refuse unknown ones


def is_worker(config: pytest.Config) -> bool:
    """True in a pytest-xdist worker, False in its controller or in a plain run."""
    return hasattr(config, "workerinput")


def open_folder() -> Path:
    """The session's folder, created by the first process of the session (the controller)."""
    if FOLDER_VARIABLE not in os.environ:
        os.environ[FOLDER_VARIABLE] = tempfile.mkdtemp(prefix="eddy-test-session-")
    return folder()


def folder() -> Path:
    return Path(os.environ[FOLDER_VARIABLE])


@contextmanager
def exclusive(name: str) -> Iterator[None]:
    """Hold the session-wide lock ``name``: one process of the session at a time."""
    with (folder() / f"{name}.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def mark(name: str) -> None:
    """Record that this session did ``name`` (for example, started the stack)."""
    (folder() / name).touch()


def marked(name: str) -> bool:
    return (folder() / name).exists()


def close_folder() -> None:
    """Remove the folder unless something was kept in it (a failed chaos run's logs)."""
    for lock in folder().glob("*.lock"):
        lock.unlink(missing_ok=True)
    kept = [path for path in folder().iterdir() if path.is_dir()]
    if not kept:
        shutil.rmtree(folder(), ignore_errors=True)
