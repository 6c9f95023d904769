"""The learner's reader process on a real broker: generations, refusals, and either
process ending stops the other."""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from eddy.services.config.settings import Settings
from eddy.services.ops.liveness import STALLED_EXIT_CODE
from eddy.services.ops.poll_loop import Consumed, Decoder
from eddy.services.ops.reader_process import ReaderFailed, ReaderProcess
from eddy.streams.learning.learner import Learner, LearnerConfig, Position
from eddy.streams.messages.validation import InvalidMessage
from eddy.streams.transport.clients import make_producer
from eddy.streams.transport.topics import Topic
from tests.factories import DeploymentSettings
from tests.integration.learners import LearnerDeployment, examples, send_messages, synthetic
from tests.waiting import wait_until

pytestmark = pytest.mark.integration

DEADLINE_S = 120.0
RECORDS = 2_000
STALL_TIMEOUT_S = 3.0


def numbers(topic: str) -> Mapping[str, Decoder]:
    """Decoders of a topic of decimal numbers (in the reader process: module level)."""
    return {topic: _number}


def _number(record: Any) -> int:
    if not record.value.isdigit():
        raise InvalidMessage("not_a_number", f"{record.value!r} is not a number")
    return int(record.value)


class PausedMember:
    """The worker's group member as the reader process's source sees it: owns nothing
    here, polls nothing (the reader process is what is under test)."""

    config: Mapping[str, Any] = {"group_id": None}

    def __init__(self) -> None:
        self.paused: list[Any] = []

    def subscription(self) -> set[str]:
        return set()

    def pause(self, *partitions: Any) -> None:
        self.paused += partitions

    def assignment(self) -> set[Any]:
        return set()

    def poll(self, timeout_ms: int) -> dict[Any, Any]:
        return {}


@pytest.fixture
def numbered_topic(stack: Settings, new_topic: Any) -> str:
    topic = new_topic(partitions=1)
    producer = make_producer(stack)
    try:
        for n in range(RECORDS):
            headers = [("origin", b"test")]
            value = b"not a number" if n == 7 else str(n).encode()
            producer.send(topic, key=b"k", value=value, headers=headers)
        producer.flush(timeout=60)
    finally:
        producer.close()
    return topic


@pytest.fixture
def reader(stack: Settings) -> Iterator[ReaderProcess]:
    source = ReaderProcess(stack, PausedMember(), max_poll_records=100)
    source.start()
    yield source
    source.close()


def polled(source: ReaderProcess, until: int) -> list[Consumed]:
    """Poll until ``until`` records have come (or the deadline)."""
    got: list[Consumed] = []
    deadline = time.monotonic() + DEADLINE_S
    while len(got) < until and time.monotonic() < deadline:
        got += source.poll(200)
    return got


def test_a_new_assignment_hands_out_nothing_read_before_it(
    reader: ReaderProcess, numbered_topic: str
) -> None:
    """Records read under an older order, still in the pipe or the reader's hands, are
    dropped: after the second order every record starts at its offset, in order."""
    factory = _factory(numbered_topic)
    reader.assign({(numbered_topic, 0): 0}, factory)
    first = polled(reader, 1)
    assert first, "nothing read under the first order"
    reader.assign({(numbered_topic, 0): 1_500}, factory)
    assert reader.positions() == {(numbered_topic, 0): 1_500}  # before any batch comes
    after = polled(reader, RECORDS - 1_500)
    assert [c.record.offset for c in after] == list(range(1_500, RECORDS))
    assert [c.message for c in after] == list(range(1_500, RECORDS))
    assert reader.positions() == {(numbered_topic, 0): RECORDS}
    assert list(reader.lags()) == [(numbered_topic, 0, 0)]
    reader.assign({(numbered_topic, 0): 0}, factory)
    assert polled(reader, 1)
    reader.assign({}, factory)  # revoked: nothing more, not even what was in flight
    assert [reader.poll(200) for _ in range(10)] == [[]] * 10


def test_a_refused_record_keeps_what_its_dead_letter_needs(
    reader: ReaderProcess, numbered_topic: str
) -> None:
    reader.assign({(numbered_topic, 0): None}, _factory(numbered_topic))  # the beginning
    first = polled(reader, 10)[:10]
    assert [c.record.offset for c in first] == list(range(10))
    refused = [c for c in first if c.refused is not None]
    assert [c.record.offset for c in refused] == [7]
    letter = refused[0]
    assert letter.refused is not None
    assert letter.refused.error_class == "not_a_number"
    assert (letter.record.key, letter.record.value) == (b"k", b"not a number")
    assert letter.record.headers == [("origin", b"test")]
    assert all(c.record.value is None for c in first if c.refused is None)


def test_the_worker_raises_when_its_reader_process_ends(
    reader: ReaderProcess, numbered_topic: str
) -> None:
    reader.assign({(numbered_topic, 0): 0}, _factory(numbered_topic))
    assert polled(reader, 1)
    assert reader.pid is not None
    os.kill(reader.pid, signal.SIGKILL)
    with pytest.raises(ReaderFailed, match="exited"):
        _poll_on(reader)


def _poll_on(reader: ReaderProcess) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        reader.poll(200)


@pytest.fixture
def learner_deployment(
    deployment_settings: DeploymentSettings, tmp_path: Path
) -> Iterator[LearnerDeployment]:
    # A dedup memory of one id: an example handled twice is learned twice, and the final
    # state (examples, metrics) shows it.
    settings = deployment_settings(
        "reader",
        partitions=1,
        checkpoint_every=500,
        checkpoint_interval_s=1.0,
        learner_dedup_ids=1,
    )
    deployment = LearnerDeployment(settings, tmp_path, [])
    yield deployment
    deployment.kill_running()


def test_a_killed_learner_takes_its_reader_process_with_it_and_a_dead_reader_its_learner(
    learner_deployment: LearnerDeployment,
) -> None:
    """Neither process outlives the other: SIGKILL the learner, its reader process ends;
    SIGKILL a reader process while the learner works through a backlog, its learner
    exits non-zero. The restarted learner then learns every example exactly once (the
    same model as one uninterrupted run)."""
    deployment = learner_deployment
    topic = deployment.topic(Topic.TRAINING_EXAMPLES)
    rows = synthetic(60_000, seed=11)
    stream = examples(rows, topic)
    send_messages(deployment.settings, topic, stream[:5_000])

    learner = deployment.start()
    reader = _reader_of(learner, deployment)
    _wait_learned(deployment, 5_000)
    learner.send_signal(signal.SIGKILL)
    learner.wait(timeout=30)
    wait_until(
        lambda: not _alive(reader),
        "the reader process to end after its learner was killed",
        timeout_s=30,
        logs=deployment.logs,
    )

    send_messages(deployment.settings, topic, stream[5_000:])
    learner = deployment.start()
    reader = _reader_of(learner, deployment)
    _wait_learned(deployment, 5_001)  # on its way through the backlog
    os.kill(reader, signal.SIGKILL)
    assert learner.wait(timeout=60) != 0
    assert "reader process exited" in deployment.logs()
    assert _learned(deployment) < len(rows), "the backlog was learned before the kill"

    deployment.start()
    _wait_learned(deployment, len(rows))
    _assert_learned_once(deployment, stream)


def test_learners_taking_over_from_each_other_mid_stream_learn_every_example_once(
    learner_deployment: LearnerDeployment,
) -> None:
    """Real rebalances, with reader processes: while examples keep coming, a second
    learner joins (the group gives every partition to one member, either of them), then
    the first stops. Each revocation orders its reader to drop what it read; the state
    at the end is the uninterrupted one, with no example learned twice."""
    deployment = learner_deployment
    topic = deployment.topic(Topic.TRAINING_EXAMPLES)
    stream = examples(synthetic(40_000, seed=13), topic)
    chunks = [stream[i : i + 1_000] for i in range(0, len(stream), 1_000)]

    def send() -> None:
        for chunk in chunks:
            send_messages(deployment.settings, topic, chunk)
            time.sleep(0.25)

    sender = threading.Thread(target=send)
    sender.start()
    try:
        first = deployment.start()
        _wait_learned(deployment, 1)
        deployment.start()  # joins: the group rebalances while examples come
        _wait_learned(deployment, len(stream) // 2)
        first.send_signal(signal.SIGTERM)  # leaves: the group rebalances again
        assert first.wait(timeout=60) == 0, deployment.logs()
    finally:
        sender.join()
    _wait_learned(deployment, len(stream))
    _assert_learned_once(deployment, stream)


def test_a_reader_process_that_stops_delivering_is_a_stall_the_learner_exits_on(
    deployment_settings: DeploymentSettings, tmp_path: Path
) -> None:
    """SIGSTOP the reader process: the learner's loop turns on, but the positions it
    reports stop while records wait, so the watchdog judges a stall and the learner
    exits for a restart, as when it is stuck itself."""
    settings = deployment_settings(
        "readerstall", partitions=1, stall_timeout_s=STALL_TIMEOUT_S, checkpoint_interval_s=1.0
    )
    deployment = LearnerDeployment(settings, tmp_path, [])
    topic = deployment.topic(Topic.TRAINING_EXAMPLES)
    stream = examples(synthetic(400, seed=5), topic)
    reader = None
    try:
        learner = deployment.start()
        send_messages(settings, topic, stream[:200])
        _wait_learned(deployment, 200)
        reader = _reader_of(learner, deployment)
        os.kill(reader, signal.SIGSTOP)
        send_messages(settings, topic, stream[200:])
        assert learner.wait(timeout=DEADLINE_S) == STALLED_EXIT_CODE, deployment.logs()
        assert "stalled; exiting for a restart" in deployment.logs()
    finally:
        if reader is not None and _alive(reader):
            os.kill(reader, signal.SIGKILL)
        deployment.kill_running()


def _factory(topic: str) -> Any:
    return functools.partial(numbers, topic)


def _reader_of(learner: subprocess.Popen[bytes], deployment: LearnerDeployment) -> int:
    """The pid of the learner's reader process, once it runs."""
    found: list[int] = []

    def started() -> bool:
        found[:] = _children(learner.pid)
        return bool(found)

    wait_until(
        started,
        "the learner's reader process",
        timeout_s=DEADLINE_S,
        logs=deployment.logs,
        alive=lambda: learner.poll() is None,
    )
    return found[0]


def _children(pid: int) -> list[int]:
    """The reader processes among ``pid``'s children (spawn also starts its resource
    tracker)."""
    children = Path(f"/proc/{pid}/task/{pid}/children")
    pids = [int(p) for p in children.read_text().split()] if children.exists() else []
    return [p for p in pids if b"spawn_main" in _cmdline(p)]


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _alive(pid: int) -> bool:
    stat = Path(f"/proc/{pid}/stat")
    if not stat.exists():
        return False
    return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has ended


def _learned(deployment: LearnerDeployment) -> int:
    state = deployment.latest()
    return 0 if state is None else state.learner.examples


def _assert_learned_once(deployment: LearnerDeployment, stream: list[Any]) -> None:
    """The deployment's newest checkpoint is what one learner learning ``stream`` once,
    in order, would hold."""
    reference = Learner(LearnerConfig(model=deployment.settings.model_name))
    for i, example in enumerate(stream):
        reference.step(
            example.features, example.label, Position("t", 0, i, example.event_time.timestamp())
        )
    state = deployment.latest()
    assert state is not None
    assert state.learner.examples == reference.examples == len(stream)
    assert state.learner.metrics.report() == reference.metrics.report()


def _wait_learned(deployment: LearnerDeployment, count: int) -> None:
    wait_until(
        lambda: _learned(deployment) >= count,
        f"{count} examples learned",
        timeout_s=DEADLINE_S,
        logs=deployment.logs,
    )
