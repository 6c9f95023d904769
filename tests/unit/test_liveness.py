"""The stall rules and the watchdog's exit, on scripted positions, end offsets, loop turns
and group looks."""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping
from typing import Any

import pytest

from eddy.services.config.settings import Settings
from eddy.services.ops import metrics
from eddy.services.ops.liveness import (
    ENDS_LOOKS_PER_LIMIT,
    EXIT_GRACE_S,
    OWNER_LOOK_EVERY_S,
    STALLED_EXIT_CODE,
    ConsumerPositions,
    Group,
    Health,
    JoinDetector,
    Liveness,
    Member,
    Partition,
    Positions,
    StallDetector,
    consumer_positions,
)

P0, P1 = ("events", 0), ("events", 1)
TIMEOUT_S = 60.0
MAX_POLL_INTERVAL_S = 300.0
SESSION_TIMEOUT_S = 10.0
JOIN_LIMIT_S = 20.0  # JOIN_SESSIONS session timeouts, shorter than TIMEOUT_S


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


def test_a_loop_that_stops_turning_is_stalled_though_it_owns_nothing() -> None:
    detector = StallDetector(TIMEOUT_S)
    assert detector.observe(TIMEOUT_S - 1, {}, {}, turned_at=0).healthy
    at = detector.observe(TIMEOUT_S, {}, {}, turned_at=0)
    assert not at.healthy
    assert (at.waiting_s, at.limit_s) == (TIMEOUT_S, TIMEOUT_S)
    assert at.reason == "stalled: the poll loop has not turned for 60 s (limit 60 s)"


def test_a_turning_loop_owning_nothing_is_healthy_until_it_stops_turning() -> None:
    detector = StallDetector(TIMEOUT_S)
    verdicts = [detector.observe(t, {}, {P0: 9}, turned_at=t - 0.5) for t in range(1, 10_000, 30)]
    assert all(v.healthy and v.reason == "nothing assigned" for v in verdicts)
    last_turn = 10_000
    assert detector.observe(last_turn + TIMEOUT_S - 1, {}, {}, turned_at=last_turn).healthy
    assert not detector.observe(last_turn + TIMEOUT_S, {}, {}, turned_at=last_turn).healthy


def test_a_silent_loop_inside_declared_work_gets_the_longer_limit() -> None:
    detector = StallDetector(TIMEOUT_S, busy_timeout_s=MAX_POLL_INTERVAL_S)
    assert detector.observe(
        MAX_POLL_INTERVAL_S - 1, {P0: 3}, {P0: 3}, busy=True, turned_at=0
    ).healthy
    assert not detector.observe(
        MAX_POLL_INTERVAL_S, {P0: 3}, {P0: 3}, busy=True, turned_at=0
    ).healthy


def test_records_waiting_stay_the_reason_while_there_are_any() -> None:
    detector = StallDetector(TIMEOUT_S)
    detector.observe(0, {P0: 5}, {P0: 9}, turned_at=0)
    verdict = detector.observe(TIMEOUT_S, {P0: 5}, {P0: 9}, turned_at=0)
    assert verdict.reason.startswith("stalled: 4 records waiting on 1 partition(s)")
    caught_up = detector.observe(TIMEOUT_S + 1, {P0: 9}, {P0: 9}, turned_at=0)
    assert caught_up.reason.startswith("stalled: the poll loop has not turned for 61 s")


def not_none(health: Health | None) -> Health:
    assert health is not None
    return health


def group(waiting: Mapping[Partition, int], *owned: Partition, rebalancing: bool = False) -> Group:
    return Group(rebalancing=rebalancing, owned=frozenset(owned), waiting=waiting)


def joins() -> JoinDetector:
    return JoinDetector(TIMEOUT_S, rebalance_timeout_s=MAX_POLL_INTERVAL_S)


def test_owning_nothing_while_records_wait_for_nobody_stalls_at_the_timeout() -> None:
    detector = joins()
    nobody = group({P0: 4, P1: 3})
    first = detector.observe(0, owns=False, group=nobody)
    assert first is not None
    assert first.healthy
    assert first.reason.startswith("not joined yet: owns no partition while 7 records wait")
    before = detector.observe(TIMEOUT_S - 1, owns=False, group=nobody)
    at = detector.observe(TIMEOUT_S, owns=False, group=nobody)
    assert before is not None
    assert before.healthy
    assert at is not None
    assert not at.healthy
    assert (at.lag, at.waiting_s, at.limit_s) == (7, TIMEOUT_S, TIMEOUT_S)
    assert at.reason.startswith("stalled: owns no partition while 7 records wait on 2 partition(s)")
    assert at.partitions == {"events[0]": {"waiting": 4}, "events[1]": {"waiting": 3}}


def test_an_idle_standby_stays_healthy_while_another_member_owns_its_partitions() -> None:
    detector = joins()  # a learner's standby: the writer owns everything
    writer_owns_all = group({P0: 500, P1: 80}, P0, P1)
    verdicts = [
        detector.observe(t, owns=False, group=writer_owns_all) for t in range(0, 10_000, 30)
    ]
    assert verdicts == [None] * len(verdicts)
    writer_gone = group({P0: 500, P1: 80})  # and the standby is never handed its partitions
    assert not_none(detector.observe(10_000, owns=False, group=writer_gone)).healthy
    assert not not_none(detector.observe(10_000 + TIMEOUT_S, owns=False, group=writer_gone)).healthy


def test_a_predictor_beyond_the_partition_count_stays_healthy() -> None:
    detector = joins()  # three partitions, owned by three other predictors
    partitions = [("requests", p) for p in range(3)]
    others_own_all = group(dict.fromkeys(partitions, 12), *partitions)
    assert detector.observe(0, owns=False, group=others_own_all) is None
    assert detector.observe(TIMEOUT_S * 100, owns=False, group=others_own_all) is None
    one_left = group(dict.fromkeys(partitions, 12), *partitions[:2])  # nobody took its place
    detector.observe(TIMEOUT_S * 101, owns=False, group=one_left)
    stalled = not_none(detector.observe(TIMEOUT_S * 102, owns=False, group=one_left))
    assert not stalled.healthy
    assert stalled.lag == 12


def test_only_partitions_nobody_owns_count() -> None:
    detector = joins()
    detector.observe(0, owns=False, group=group({P0: 50, P1: 2}, P0))
    at = detector.observe(TIMEOUT_S, owns=False, group=group({P0: 50, P1: 2}, P0))
    assert at is not None
    assert not at.healthy
    assert at.lag == 2


def test_the_join_clock_starts_when_records_start_waiting_for_nobody() -> None:
    detector = joins()
    assert detector.observe(0, owns=False, group=group({P0: 0})) is None
    assert detector.observe(TIMEOUT_S * 10, owns=False, group=group({P0: 0})) is None
    assert detector.observe(TIMEOUT_S * 20, owns=True, group=group({P0: 9})) is None
    assert detector.observe(TIMEOUT_S * 30, owns=False, group=None) is None
    arrived, one = TIMEOUT_S * 40, group({P0: 1})
    assert not_none(detector.observe(arrived, owns=False, group=one)).healthy
    assert not_none(detector.observe(arrived + TIMEOUT_S - 1, owns=False, group=one)).healthy
    assert not not_none(detector.observe(arrived + TIMEOUT_S, owns=False, group=one)).healthy


def test_getting_partitions_restarts_the_clock() -> None:
    detector = joins()
    nobody = group({P0: 4})
    detector.observe(0, owns=False, group=nobody)
    assert detector.observe(TIMEOUT_S - 1, owns=True, group=None) is None
    again = detector.observe(TIMEOUT_S + 1, owns=False, group=nobody)  # revoked again
    assert again is not None
    assert again.healthy
    assert again.waiting_s == 0


def test_a_rebalance_gets_the_max_poll_interval() -> None:
    detector = joins()
    moving = group({P0: 4}, rebalancing=True)
    detector.observe(0, owns=False, group=moving)
    during = detector.observe(MAX_POLL_INTERVAL_S - 1, owns=False, group=moving)
    assert during is not None
    assert during.healthy
    assert during.reason.startswith("rebalancing: ")
    after = detector.observe(MAX_POLL_INTERVAL_S, owns=False, group=moving)
    assert after is not None
    assert not after.healthy


def test_a_timeout_of_zero_never_judges_the_loop_or_the_join() -> None:
    assert StallDetector(0).observe(1e9, {}, {}, turned_at=0).healthy
    detector = JoinDetector(0)
    detector.observe(0, owns=False, group=group({P0: 4}))
    verdict = detector.observe(1e9, owns=False, group=group({P0: 4}))
    assert verdict is not None
    assert verdict.healthy


class FakeConsumer:
    """What consumer_positions reads of a kafka-python consumer."""

    def __init__(self, offsets: dict[Any, int | None], group_id: str | None) -> None:
        self.offsets = offsets
        self.config = {"group_id": group_id}

    def assignment(self) -> set[Any]:
        return set(self.offsets)

    def position(self, tp: Any, timeout_ms: int) -> int | None:
        return self.offsets[tp]

    def subscription(self) -> set[str] | None:
        return {"events"} if self.config["group_id"] else None


def test_consumer_positions_say_who_the_member_is() -> None:
    from kafka import TopicPartition

    owning = consumer_positions(
        FakeConsumer({TopicPartition(*P0): 4, TopicPartition(*P1): None}, "g")
    )
    assert owning == {P0: 4}
    assert owning.member == Member("g", frozenset({"events"}), owns=True)
    idle = consumer_positions(FakeConsumer({}, "g"))
    assert idle.member == Member("g", frozenset({"events"}), owns=False)
    assert consumer_positions(FakeConsumer({}, None)).member is None


class Script:
    """End offsets and a clock the test moves by hand; the exit code, recorded."""

    def __init__(self) -> None:
        self.now = 0.0
        self.ends: dict[Partition, int] = {}
        self.exits: list[int] = []
        self.unreachable = False
        self.group = Group(rebalancing=False, owned=frozenset(), waiting={})
        self.group_looks: list[str] = []

    def end_offsets(self, partitions: Collection[Partition]) -> Mapping[Partition, int]:
        if self.unreachable:
            raise ConnectionError("broker down")
        return {tp: self.ends[tp] for tp in partitions if tp in self.ends}

    def group_look(self, group_id: str, topics: Collection[str]) -> Group:
        self.group_looks.append(group_id)
        if self.unreachable:
            raise ConnectionError("broker down")
        return self.group


@pytest.fixture
def script() -> Iterator[Script]:
    before = metrics.health()
    yield Script()
    metrics.report_health(*before)  # /healthz of this test process as it was


def watchdog(script: Script) -> Liveness:
    settings = Settings(
        stall_timeout_s=TIMEOUT_S,
        consumer_max_poll_interval_ms=300_000,
        consumer_session_timeout_ms=int(SESSION_TIMEOUT_S * 1000),
    )
    return Liveness(
        settings,
        "features",
        ends=script.end_offsets,
        group=script.group_look,
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
    script.now = seen = TIMEOUT_S / ENDS_LOOKS_PER_LIMIT  # when the ends are read again
    liveness.check()
    script.now = seen + TIMEOUT_S + 1
    assert not liveness.check().healthy
    healthy, detail = metrics.health()
    assert not healthy
    assert detail["status"] == "stalled"
    assert detail["role"] == "features"
    assert detail["reason"].startswith("stalled: 20 records waiting")
    assert script.exits == []

    script.now = seen + 1 + TIMEOUT_S + EXIT_GRACE_S
    liveness.check()
    assert script.exits == [STALLED_EXIT_CODE]


def test_the_end_offsets_are_read_once_per_share_of_the_limit_and_at_once_for_a_new_partition(
    script: Script,
) -> None:
    """Each read is a round trip on the watchdog's thread, which the predictor's slowest
    answers waited for: the ends are read every limit / ENDS_LOOKS_PER_LIMIT, not every
    check, except for a partition whose end is not known yet."""
    reads: list[float] = []

    def ends(partitions: Collection[Partition]) -> Mapping[Partition, int]:
        reads.append(script.now)
        return script.end_offsets(partitions)

    liveness = Liveness(
        Settings(stall_timeout_s=TIMEOUT_S),
        "features",
        ends=ends,
        group=script.group_look,
        clock=lambda: script.now,
        exit_process=script.exits.append,
    )
    script.ends = {P0: 10, P1: 4}
    every_s = TIMEOUT_S / ENDS_LOOKS_PER_LIMIT
    liveness.observe({P0: 10})
    for script.now in (0.0, 1.0, every_s - 0.5, every_s, every_s + 1.0):
        liveness.check()
    assert reads == [0.0, every_s]

    script.now = every_s + 1.5
    liveness.observe({P0: 10, P1: 0})  # a partition newly assigned: its end at once
    liveness.check()
    assert reads == [0.0, every_s, every_s + 1.5]


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


IDLE = Member("eddy.predictors", frozenset({"events"}), owns=False)


def test_a_worker_whose_loop_stops_turning_goes_503_and_exits(script: Script) -> None:
    liveness = watchdog(script)
    liveness.observe({})
    for second in range(1, int(TIMEOUT_S)):
        script.now = second
        assert liveness.check().healthy  # owning nothing, its loop silent: not yet
    script.now = TIMEOUT_S
    assert not liveness.check().healthy
    assert metrics.health()[1]["reason"].startswith("stalled: the poll loop has not turned")
    script.now = TIMEOUT_S + EXIT_GRACE_S
    liveness.check()
    assert script.exits == [STALLED_EXIT_CODE]


def test_a_turning_loop_is_judged_from_its_last_turn(script: Script) -> None:
    liveness = watchdog(script)
    for second in range(int(3 * TIMEOUT_S)):
        script.now = second
        liveness.observe({})
        assert liveness.check().healthy
    last_turn = script.now
    script.now = last_turn + TIMEOUT_S - 1
    assert liveness.check().healthy
    script.now = last_turn + TIMEOUT_S
    assert not liveness.check().healthy


def test_a_member_owning_nothing_while_records_wait_for_nobody_exits(script: Script) -> None:
    liveness = watchdog(script)
    script.group = Group(rebalancing=False, owned=frozenset(), waiting={P0: 6})
    while script.now <= JOIN_LIMIT_S + EXIT_GRACE_S:
        liveness.observe(ConsumerPositions({}, IDLE))  # its loop turns, empty-handed
        verdict = liveness.check()
        # Judged within seconds: two session timeouts, not the stall timeout.
        assert verdict.healthy == (script.now < JOIN_LIMIT_S)
        script.now += 1
    assert metrics.health()[1]["reason"].startswith("stalled: owns no partition while 6 records")
    assert script.exits == [STALLED_EXIT_CODE]


def test_an_idle_standby_stays_healthy_and_is_looked_at_only_while_idle(script: Script) -> None:
    liveness = watchdog(script)
    script.group = Group(rebalancing=False, owned=frozenset({P0}), waiting={P0: 6})
    for second in range(int(3 * TIMEOUT_S)):
        script.now = second
        liveness.observe(ConsumerPositions({}, IDLE))
        assert liveness.check().healthy
    looks = len(script.group_looks)
    assert looks > 0
    owner = Member(IDLE.group, IDLE.topics, owns=True)
    script.ends = {P0: 6}
    liveness.observe(ConsumerPositions({P0: 6}, owner))
    assert liveness.check().reason == "caught up"
    assert len(script.group_looks) == looks
    assert script.exits == []


def test_an_unanswered_group_look_keeps_the_last_one(script: Script) -> None:
    liveness = watchdog(script)
    script.group = Group(rebalancing=False, owned=frozenset(), waiting={P0: 6})
    liveness.observe(ConsumerPositions({}, IDLE))
    liveness.check()
    script.unreachable = True
    script.now = TIMEOUT_S
    liveness.observe(ConsumerPositions({}, IDLE))
    assert not liveness.check().healthy


OWNER = Member(IDLE.group, IDLE.topics, owns=True, member_id="m-1")


def test_an_owner_its_group_no_longer_lists_exits_after_one_session_timeout(
    script: Script,
) -> None:
    """kafka-python 3.0.12's stall: positions kept, nothing fetched, the group Empty. Its
    loop turned and its lag was judged only at the stall timeout (60 s here, 120 s by
    default); the coordinator's member list tells within a session timeout."""
    liveness = watchdog(script)
    script.ends = {P0: 9}
    script.group = Group(rebalancing=False, owned=frozenset(), waiting={}, members=frozenset())
    while not script.exits and script.now < TIMEOUT_S:
        liveness.observe(ConsumerPositions({P0: 0}, OWNER))  # turning, never moving
        liveness.check()
        script.now += 1
    assert script.exits == [STALLED_EXIT_CODE]
    assert metrics.health()[1]["reason"].startswith("stalled: owns partitions, but its group")
    # judged within a session timeout of the first look, then the exit grace
    assert script.now <= SESSION_TIMEOUT_S + OWNER_LOOK_EVERY_S + EXIT_GRACE_S + 1


def test_a_listed_owner_stays_healthy_and_its_group_is_looked_at_seldom(script: Script) -> None:
    liveness = watchdog(script)
    script.ends = {P0: 6}
    script.group = Group(
        rebalancing=False, owned=frozenset({P0}), waiting={}, members=frozenset({"m-1"})
    )
    for second in range(int(3 * TIMEOUT_S)):
        script.now = second
        liveness.observe(ConsumerPositions({P0: 6}, OWNER))
        assert liveness.check().healthy
    assert len(script.group_looks) == pytest.approx(3 * TIMEOUT_S / OWNER_LOOK_EVERY_S, abs=1)
    assert script.exits == []


def test_an_owner_outside_its_group_during_a_rebalance_is_not_judged(script: Script) -> None:
    liveness = watchdog(script)
    script.ends = {P0: 6}
    script.group = Group(rebalancing=True, owned=frozenset(), waiting={}, members=frozenset())
    for second in range(int(3 * TIMEOUT_S)):
        script.now = second
        liveness.observe(ConsumerPositions({P0: 6}, OWNER))
        assert liveness.check().healthy


def test_an_owner_outside_its_group_while_busy_is_not_judged_dropped(script: Script) -> None:
    """A retrain longer than the max poll interval: kafka-python leaves the group by
    design and rejoins at the next poll (the chaos suite's slow-retrain scenario)."""
    liveness = watchdog(script)
    script.ends = {P0: 6}
    script.group = Group(rebalancing=False, owned=frozenset(), waiting={}, members=frozenset())
    with liveness.busy("retrain"):
        for second in range(int(TIMEOUT_S)):
            script.now = second
            liveness.observe(ConsumerPositions({P0: 6}, OWNER))
            assert liveness.check().healthy
    assert script.exits == []
