"""The integration tests' one polling loop (tests/waiting.py), without anything to wait for.

Every integration wait goes through it, and those tests cannot fail cheaply: so what a
wait does at its edges (asked first, a crash seen before the deadline, the logs only on
failure, a condition that holds late but in time) is pinned here.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NoReturn

import pytest

from tests.waiting import wait_until


def answers(*values: bool) -> Callable[[], bool]:
    """A condition that answers ``values`` in turn, then keeps answering the last one."""
    given: Iterator[bool] = iter(values)
    last = [values[-1]]

    def ask() -> bool:
        last[0] = next(given, last[0])
        return last[0]

    return ask


def test_a_condition_already_true_returns_at_once_without_asking_anything_else() -> None:
    def never() -> NoReturn:
        raise AssertionError("asked")

    started = time.monotonic()
    wait_until(lambda: True, "nothing", timeout_s=0, every_s=10, alive=never, logs=never)
    assert time.monotonic() - started < 1


def test_a_condition_that_turns_true_before_the_deadline_ends_the_wait() -> None:
    asked = answers(False, False, True)
    wait_until(asked, "the third answer", timeout_s=5, every_s=0.01)


def test_the_deadline_fails_the_test_naming_what_and_showing_the_logs() -> None:
    with pytest.raises(pytest.fail.Exception) as failed:
        wait_until(
            lambda: False, "the moon", timeout_s=0.05, every_s=0.01, logs=lambda: "no moon yet"
        )
    assert "gave up waiting for the moon (after 0.05 s)" in str(failed.value)
    assert str(failed.value).endswith("--- logs ---\nno moon yet")


def test_a_stopped_process_fails_at_once_not_at_the_deadline() -> None:
    started = time.monotonic()
    with pytest.raises(pytest.fail.Exception) as failed:
        wait_until(lambda: False, "an answer", timeout_s=60, alive=lambda: False)
    assert time.monotonic() - started < 5
    assert "gave up waiting for an answer: what was to bring it about has stopped" in str(
        failed.value
    )


def test_a_condition_true_when_the_process_has_stopped_still_counts() -> None:
    """A worker may do what was awaited and exit between two asks: it did it."""
    worker = {"done": False, "running": True}

    def alive() -> bool:
        running = worker["running"]
        worker.update(done=True, running=False)  # finishes and exits right after
        return running

    wait_until(lambda: worker["done"], "the work", timeout_s=5, every_s=0.01, alive=alive)
    assert not worker["running"]


def test_without_logs_the_message_is_only_what_was_awaited() -> None:
    with pytest.raises(pytest.fail.Exception) as failed:
        wait_until(lambda: False, "a sign", timeout_s=0, every_s=0)
    assert str(failed.value) == "gave up waiting for a sign (after 0 s)"


def test_logs_that_cannot_be_read_do_not_hide_the_failure(tmp_path: Path) -> None:
    with pytest.raises(pytest.fail.Exception) as failed:
        wait_until(
            lambda: False, "a log", timeout_s=0, every_s=0, logs=(tmp_path / "none.log").read_text
        )
    assert "gave up waiting for a log" in str(failed.value)
    assert "could not read the logs: FileNotFoundError" in str(failed.value)
