"""The stall rule and the watchdog's exit, on scripted positions and end offsets."""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping

import pytest

from services import metrics
from services.liveness import (
    EXIT_GRACE_S,
    STALLED_EXIT_CODE,
    Liveness,
    Partition,
    Positions,
    StallDetector,
)
from services.settings import Settings

P0, P1 = ("events", 0), ("events", 1)
TIMEOUT_S = 60.0


def test_an_idle_worker_is_healthy_however_long_nothing_happens() -> None:
    detector = StallDetector(TIMEOUT_S)
    verdicts = [detector.observe(t, {P0: 7, P1: 3}, {P0: 7, P1: 3}) for t in range(0, 10_000, 30)]
    assert all(v.healthy and v.reason == "caught up" and v.lag == 0 for v in verdicts)


def test_a_worker_owning_nothing_is_healthy() -> None:
    detector = StallDetector(TIMEOUT_S)
    assert detector.observe(0, {}, {P0: 100}).reason == "nothing assigned"
    assert detector.observe(TIMEOUT_S * 10, {}, {P0: 500}).healthy


def test_records_waiting_without_movement_stall_it_at_the_timeout_not_before() -> None:
    detector = StallDetector(TIMEOUT_S)
    detector.observe(0, {P0: 10, P1: 4}, {P0: 12, P1: 4})
    before = detector.observe(TIMEOUT_S - 1, {P0: 10, P1: 4}, {P0: 15, P1: 9})
    at = detector.observe(TIMEOUT_S, {P0: 10, P1: 4}, {P0: 15, P1: 9})
    assert before.healthy
    assert not at.healthy
    assert (at.lag, at.waiting_s, at.limit_s) == (10, TIMEOUT_S, TIMEOUT_S)
    assert at.reason.startswith("stalled: 10 records waiting on 2 partition(s)")
    assert at.partitions == {
        "events[0]": {"position": 10, "end": 15},
        "events[1]": {"position": 4, "end": 9},
    }


def test_a_slow_worker_whose_lag_grows_but_moves_is_never_stalled() -> None:
    detector = StallDetector(TIMEOUT_S)
    step = TIMEOUT_S * 0.9
    verdicts = [
        detector.observe(i * step, {P0: i}, {P0: 100 + 10 * i})  # one record per step
        for i in range(50)
    ]
    assert all(v.healthy for v in verdicts)
    assert verdicts[-1].lag > verdicts[0].lag


def test_the_clock_starts_when_records_start_waiting_not_at_the_last_movement() -> None:
    detector = StallDetector(TIMEOUT_S)
    detector.observe(0, {P0: 5}, {P0: 5})
    detector.observe(10_000, {P0: 5}, {P0: 6})  # idle for hours, then a record arrives
    assert detector.observe(10_000 + TIMEOUT_S - 1, {P0: 5}, {P0: 6}).healthy
    assert not detector.observe(10_000 + TIMEOUT_S, {P0: 5}, {P0: 6}).healthy


def test_catching_up_or_moving_clears_a_stall() -> None:
    detector = StallDetector(TIMEOUT_S)
    detector.observe(0, {P0: 5}, {P0: 9})
    assert not detector.observe(TIMEOUT_S, {P0: 5}, {P0: 9}).healthy
    assert detector.observe(TIMEOUT_S + 1, {P0: 6}, {P0: 9}).healthy
    assert not detector.observe(2 * TIMEOUT_S + 1, {P0: 6}, {P0: 9}).healthy
    assert detector.observe(2 * TIMEOUT_S + 2, {P0: 9}, {P0: 9}).reason == "caught up"


def test_a_rewind_or_a_new_assignment_counts_as_movement() -> None:
    detector = StallDetector(TIMEOUT_S)
    detector.observe(0, {P0: 50}, {P0: 90})
    assert detector.observe(TIMEOUT_S - 1, {P0: 40}, {P0: 90}).healthy  # restored checkpoint
    assert detector.observe(2 * TIMEOUT_S - 2, {P0: 40, P1: 0}, {P0: 90, P1: 3}).healthy
    assert not detector.observe(3 * TIMEOUT_S - 2, {P0: 40, P1: 0}, {P0: 90, P1: 3}).healthy


def test_partitions_without_a_known_end_are_not_judged() -> None:
    detector = StallDetector(TIMEOUT_S)
    detector.observe(0, {P0: 5, P1: 0}, {P0: 5})
    verdict = detector.observe(TIMEOUT_S * 3, {P0: 5, P1: 0}, {P0: 5})
    assert verdict.healthy
    assert verdict.partitions == {"events[0]": {"position": 5, "end": 5}}


def test_a_timeout_of_zero_never_stalls_but_still_reports_lag() -> None:
    detector = StallDetector(0)
    detector.observe(0, {P0: 0}, {P0: 100})
    verdict = detector.observe(1e9, {P0: 0}, {P0: 100})
    assert verdict.healthy
    assert verdict.lag == 100


def test_declared_long_work_is_judged_against_the_longer_limit() -> None:
    detector = StallDetector(TIMEOUT_S, busy_timeout_s=5 * TIMEOUT_S)
    detector.observe(0, {P0: 0}, {P0: 3}, busy=True)
    assert detector.observe(4 * TIMEOUT_S, {P0: 0}, {P0: 3}, busy=True).healthy
    assert not detector.observe(5 * TIMEOUT_S, {P0: 0}, {P0: 3}, busy=True).healthy
    assert not detector.observe(5 * TIMEOUT_S, {P0: 0}, {P0: 3}).healthy  # work over


def test_positions_start_at_a_batch_and_follow_finished_work() -> None:
    book = Positions()
    first = [("events", 0, 10), ("events", 0, 11), ("events", 1, 4)]
    book.starting(first)
    assert book.of([P0, P1]) == {P0: 10, P1: 4}
    book.finished(first)
    book.starting([("events", 0, 12)])  # a known partition keeps its position
    assert book.of([P0, P1]) == {P0: 12, P1: 5}
    book.forget([P1])
    assert book.of([P0, P1]) == {P0: 12}
    assert book.of([P1]) == {}


class Script:
    """End offsets and a clock the test moves by hand; the exit code, recorded."""

    def __init__(self) -> None:
        self.now = 0.0
        self.ends: dict[Partition, int] = {}
        self.exits: list[int] = []
        self.unreachable = False

    def end_offsets(self, partitions: Collection[Partition]) -> Mapping[Partition, int]:
        if self.unreachable:
            raise ConnectionError("broker down")
        return {tp: self.ends[tp] for tp in partitions if tp in self.ends}


@pytest.fixture
def script() -> Iterator[Script]:
    before = metrics.health()
    yield Script()
    metrics.report_health(*before)  # /healthz of this test process as it was


def watchdog(script: Script) -> Liveness:
    settings = Settings(stall_timeout_s=TIMEOUT_S, consumer_max_poll_interval_ms=300_000)
    return Liveness(
        settings,
        "features",
        ends=script.end_offsets,
        clock=lambda: script.now,
        exit_process=script.exits.append,
    )


def test_the_watchdog_serves_503_then_exits_after_the_grace(script: Script) -> None:
    liveness = watchdog(script)
    liveness.observe({P0: 10})
    script.ends = {P0: 10}
    assert liveness.check().healthy
    assert metrics.health()[0]

    script.ends = {P0: 30}
    liveness.check()
    script.now = TIMEOUT_S + 1
    assert not liveness.check().healthy
    healthy, detail = metrics.health()
    assert not healthy
    assert detail["status"] == "stalled"
    assert detail["role"] == "features"
    assert detail["reason"].startswith("stalled: 20 records waiting")
    assert script.exits == []

    script.now = 1 + TIMEOUT_S + EXIT_GRACE_S
    liveness.check()
    assert script.exits == [STALLED_EXIT_CODE]


def test_progress_within_the_grace_recovers_without_exiting(script: Script) -> None:
    liveness = watchdog(script)
    liveness.observe({P0: 0})
    script.ends = {P0: 5}
    liveness.check()
    script.now = TIMEOUT_S
    assert not liveness.check().healthy
    liveness.observe({P0: 3})
    script.now = TIMEOUT_S + EXIT_GRACE_S
    assert liveness.check().healthy
    assert metrics.health()[0]
    assert script.exits == []


def test_a_busy_worker_gets_the_consumer_max_poll_interval(script: Script) -> None:
    liveness = watchdog(script)
    liveness.observe({P0: 0})
    script.ends = {P0: 1}
    with liveness.busy("retrain"):
        liveness.check()
        script.now = 2 * TIMEOUT_S
        assert liveness.check().healthy
    assert not liveness.check().healthy


def test_unreachable_end_offsets_leave_the_last_known_ones(script: Script) -> None:
    liveness = watchdog(script)
    liveness.observe({P0: 0})
    script.ends = {P0: 4}
    liveness.check()
    script.unreachable = True
    script.now = TIMEOUT_S
    verdict = liveness.check()
    assert not verdict.healthy
    assert verdict.lag == 4
