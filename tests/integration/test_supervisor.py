"""The supervisor restarts a crashing service with growing delays and stops cleanly."""

from __future__ import annotations

from pathlib import Path

from eddy.services.ops.supervisor import RestartPolicy, Supervisor
from tests.waiting import wait_until


def test_a_crashing_service_is_restarted_with_backoff_and_all_stop(tmp_path: Path) -> None:
    # "eddy run no-such-service" exits at once with a usage error: a crash loop.
    supervisor = Supervisor(
        ["no-such-service"],
        tmp_path / "logs",
        policy=lambda: RestartPolicy(initial_s=0.2, max_s=0.8, stable_s=60),
    )
    supervisor.start()
    child = supervisor.children[0]

    def restarted_three_times() -> bool:
        """Until then, the supervisor's turn: what its loop in ``eddy run all`` does."""
        if child.restarts >= 3:
            return True
        supervisor.check()
        return False

    try:
        wait_until(
            restarted_three_times,
            "three restarts",
            timeout_s=30,
            every_s=0.05,
            logs=(tmp_path / "logs" / "no-such-service.log").read_text,
        )
    finally:
        supervisor.stop()
    assert child.restarts >= 3
    assert child.policy._next == 0.8  # doubled 0.2 → 0.4 → 0.8, then capped
    assert "No such command" in (tmp_path / "logs" / "no-such-service.log").read_text()
    assert child.process is not None
    assert child.process.poll() is not None
