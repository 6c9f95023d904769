"""Waiting in tests for something that happens elsewhere: one polling loop for them all.

Integration tests wait for other processes and threads (a worker applying events, a
group settling, a retrain landing in the registry). Each used to carry its own loop,
with its own failure message or none; this one fails the same way everywhere: it names
what was awaited, gives up early when whatever should bring it about has stopped, and
shows that thing's logs. A helper module, not a test module: tests import it, pytest
collects nothing from it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import NoReturn

import pytest

DEFAULT_EVERY_S = 0.2


def wait_until(
    condition: Callable[[], bool],
    what: str,
    *,
    timeout_s: float,
    every_s: float = DEFAULT_EVERY_S,
    logs: Callable[[], str] | None = None,
    alive: Callable[[], bool] | None = None,
) -> None:
    """Return once ``condition()`` is true; fail the test when it cannot be any more.

    ``condition`` is asked first, then every ``every_s`` seconds (it may do work of its
    own, such as polling a consumer; with ``every_s=0`` it sets the pace). Between two
    asks the test fails at once when ``alive()`` is false (the process or thread that
    should make the condition true has ended: waiting on would only hide the crash), and
    fails when more than ``timeout_s`` seconds have passed since the call. The timeout
    has no default on purpose: each test states how long its wait may take.

    ``what`` completes "gave up waiting for ...". ``logs``, asked only on failure, adds
    what the awaited process wrote, so a failure explains itself.

    >>> answers = iter([False, False, True])
    >>> wait_until(lambda: next(answers), "the third answer", timeout_s=5, every_s=0)
    """
    deadline = time.monotonic() + timeout_s
    while not condition():
        if alive is not None and not alive():
            _fail(f"gave up waiting for {what}: what was to bring it about has stopped", logs)
        if time.monotonic() > deadline:
            _fail(f"gave up waiting for {what} (after {timeout_s:g} s)", logs)
        time.sleep(every_s)


def _fail(message: str, logs: Callable[[], str] | None) -> NoReturn:
    if logs is not None:
        try:
            shown = logs()
        except Exception as exc:  # a log not written yet must not hide the failure
            shown = f"(could not read the logs: {exc!r})"
        message = f"{message}\n--- logs ---\n{shown}"
    pytest.fail(message)
