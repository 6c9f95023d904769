"""A worker that stalls for real reports 503 on /healthz, exits non-zero and, under the
supervisor of `eddy run all`, is restarted (issue 8, item 4).

The stall is genuine: the worker's Redis goes through a TCP relay that the test turns
into a black hole (connections stay open, nothing comes back), which is what a network
partition looks like. Redis commands then block, the worker's positions stop moving,
and records keep arriving behind them. Nothing in the worker is mocked or paused.

A worker that cannot join or fetch says so too: one whose poll loop stops turning while
nothing waits for it, and a member that the group never hands a partition while records
wait for nobody; a hot standby whose partitions another member owns stays healthy. The
group looks are the watchdog's real ones against the real broker.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import orjson
import pytest
from kafka.coordinator.assignors.abstract import AbstractPartitionAssignor
from kafka.coordinator.protocol import (
    ConsumerProtocolMemberAssignment_v0,
    ConsumerProtocolMemberMetadata_v0,
)

from eddy.services.config.settings import Settings
from eddy.services.ops.liveness import EXIT_GRACE_S, STALLED_EXIT_CODE, Liveness, consumer_positions
from eddy.services.ops.supervisor import RestartPolicy, Supervisor, exit_reason
from eddy.services.workers.learner import AllToOneAssignor
from eddy.streams.features.definitions import FEATURES
from eddy.streams.store.online import OnlineStore
from eddy.streams.transport.clients import make_consumer, make_producer, make_redis, subscribe
from eddy.streams.transport.topics import Topic, topic_name
from tests.factories import DeploymentSettings
from tests.integration.feature_workers import (
    applied_counts,
    event,
    quiet_hour_base,
    send_records,
)
from tests.integration.learners import LearnerDeployment, examples, send_messages, synthetic
from tests.network import free_port
from tests.waiting import wait_until

STALL_TIMEOUT_S = 3.0
DEADLINE_S = 90.0
RELAY_BUFFER = 65536
FEATURES_METRICS_OFFSET = 1
LEARNER_METRICS_OFFSET = 2
POLL_MS = 100
# A join rule's verdict takes the stall timeout plus the exit grace after the join
# settles; a few seconds more cover the join itself on a loaded machine.
JOIN_DEADLINE_S = STALL_TIMEOUT_S + EXIT_GRACE_S + 15
BACKLOG = 5


class RedisRelay:
    """A TCP relay to Redis that can become a black hole and be healed again."""

    def __init__(self, redis_url: str) -> None:
        parts = urlsplit(redis_url)
        self._target = (parts.hostname or "127.0.0.1", parts.port or 6379)
        self._listener = socket.create_server(("127.0.0.1", 0))
        port = self._listener.getsockname()[1]
        self.url = urlunsplit(parts._replace(netloc=f"127.0.0.1:{port}"))
        self._open = threading.Event()
        self._open.set()
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def black_hole(self) -> None:
        self._open.clear()

    def heal(self) -> None:
        self._open.set()

    def close(self) -> None:
        self._closed = True
        self._listener.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self._target)
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(RELAY_BUFFER):
                if self._open.is_set():  # in the black hole, bytes vanish
                    sink.sendall(data)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                end.close()


@pytest.fixture
def relay(stack: Settings) -> Iterator[RedisRelay]:
    relay = RedisRelay(stack.redis_url)
    yield relay
    relay.close()


def healthz(port: int) -> tuple[int, dict[str, Any]] | None:
    """(HTTP status, JSON verdict), or None while nothing answers on the port."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as answer:
            return int(answer.status), orjson.loads(answer.read())
    except urllib.error.HTTPError as refused:
        return int(refused.code), orjson.loads(refused.read())
    except OSError:
        return None


def answers(port: int, status: int) -> Callable[[], bool]:
    def check() -> bool:
        seen = healthz(port)
        return seen is not None and seen[0] == status

    return check


def reason(port: int, expected: str) -> Callable[[], bool]:
    def check() -> bool:
        seen = healthz(port)
        return seen is not None and seen[1].get("reason") == expected

    return check


def test_a_feature_worker_cut_off_from_redis_goes_unhealthy_exits_and_is_restarted(
    stack: Settings,
    deployment_settings: DeploymentSettings,
    relay: RedisRelay,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    port = free_port()
    settings = deployment_settings(
        "live",
        partitions=2,
        redis_url=relay.url,
        stall_timeout_s=STALL_TIMEOUT_S,
        metrics_port=port - FEATURES_METRICS_OFFSET,
    )
    events_topic = topic_name(Topic.EVENTS, settings.topic_prefix)
    store = OnlineStore(
        make_redis(stack),
        settings.topic_prefix,
        settings.feature_ttl_s,
        states=FEATURES.state_fingerprint(),
    )
    base = quiet_hour_base()
    entities = [f"s{i}" for i in range(10)]

    def batch(round_: int) -> list[tuple[bytes | None, bytes | None]]:
        return [(e.encode(), event(e, f"{e}-{round_}", base + round_, 1.0)) for e in entities]

    def applied() -> int:
        return sum(applied_counts(store, entities, base + 60).values())

    log_dir = tmp_path / "logs"
    supervisor = Supervisor(
        ["features"],
        log_dir,
        env=settings.child_env(),
        policy=lambda: RestartPolicy(initial_s=0.2, max_s=1.0, stable_s=60),
    )

    def logs() -> str:
        return (log_dir / "features.log").read_text(errors="replace")[-4000:]

    supervisor.start()
    child = supervisor.children[0]
    try:
        send_records(settings, events_topic, batch(0))
        wait_until(
            lambda: applied() == len(entities),
            "the first events applied",
            timeout_s=DEADLINE_S,
            logs=logs,
        )
        wait_until(reason(port, "caught up"), "a healthy answer", timeout_s=DEADLINE_S, logs=logs)
        healthy = healthz(port)
        assert healthy is not None
        assert healthy[0] == 200
        assert healthy[1]["status"] == "ok"
        assert healthy[1]["role"] == "features"
        assert healthy[1]["lag"] == 0

        relay.black_hole()
        send_records(settings, events_topic, batch(1))
        wait_until(
            answers(port, 503), "the stall to show on /healthz", timeout_s=DEADLINE_S, logs=logs
        )
        stalled = healthz(port)
        assert stalled is not None
        assert stalled[1]["status"] == "stalled"
        assert stalled[1]["reason"].startswith("stalled:")
        assert stalled[1]["lag"] > 0

        assert child.process is not None
        wait_until(
            lambda: child.process.poll() is not None,  # type: ignore[union-attr]
            "the stalled worker to exit",
            timeout_s=DEADLINE_S,
            logs=logs,
        )
        assert child.process.returncode == STALLED_EXIT_CODE
        assert "stalled; exiting for a restart" in logs()

        relay.heal()

        def restarted_and_caught_up() -> bool:
            supervisor.check()
            return child.restarts >= 1 and applied() == 2 * len(entities)

        wait_until(
            restarted_and_caught_up,
            "the restarted worker to catch up",
            timeout_s=DEADLINE_S,
            logs=logs,
        )
        exits = [r for r in caplog.records if r.getMessage() == "service exited; restarting"]
        assert [(r.exit_code, r.reason) for r in exits] == [  # type: ignore[attr-defined]
            (STALLED_EXIT_CODE, exit_reason(STALLED_EXIT_CODE))
        ]
        wait_until(
            answers(port, 200),
            "the restarted worker to answer healthy",
            timeout_s=DEADLINE_S,
            logs=logs,
        )
        assert child.process.poll() is None
    finally:
        supervisor.stop()
    assert applied_counts(store, entities, base + 60) == dict.fromkeys(entities, 2)


def test_a_learner_blocked_on_redis_goes_unhealthy_and_exits_non_zero(
    deployment_settings: DeploymentSettings, relay: RedisRelay, tmp_path: Path
) -> None:
    port = free_port()
    settings = deployment_settings(
        "livel",
        partitions=1,
        redis_url=relay.url,
        stall_timeout_s=STALL_TIMEOUT_S,
        metrics_port=port - LEARNER_METRICS_OFFSET,
        checkpoint_interval_s=0.5,  # a checkpoint reads Redis: where it will block
    )
    deployment = LearnerDeployment(settings, tmp_path, [])
    topic = deployment.topic(Topic.TRAINING_EXAMPLES)
    stream = examples(synthetic(400, seed=2), topic)
    try:
        learner = deployment.start()
        send_messages(settings, topic, stream[:200])
        wait_until(
            reason(port, "caught up"),
            "the learner to catch up",
            timeout_s=DEADLINE_S,
            logs=deployment.logs,
        )
        relay.black_hole()
        send_messages(settings, topic, stream[200:])
        wait_until(
            answers(port, 503),
            "the stall to show on /healthz",
            timeout_s=DEADLINE_S,
            logs=deployment.logs,
        )
        code = learner.wait(timeout=DEADLINE_S)
        assert code == STALLED_EXIT_CODE, deployment.logs()
        assert "stalled; exiting for a restart" in deployment.logs()
    finally:
        deployment.kill_running()


# A worker whose loop reads Redis on every turn, like the learner's checkpoints, retrying
# a timed-out read as the workers do; nothing is sent to its topic, so no record ever
# waits for it and no position is there to judge.
BLOCKING_WORKER = """
import sys
import redis as redis_py
from eddy.services.ops import logs
from eddy.services.ops.liveness import Liveness, consumer_positions
from eddy.services.config.settings import Settings
from eddy.streams.transport.clients import make_consumer, make_redis, subscribe

logs.configure("WARNING")  # JSON lines on stderr, with the verdict's reason
settings = Settings.from_env()
consumer = make_consumer(settings, group_id=sys.argv[2])
subscribe(consumer, [sys.argv[1]])
redis = make_redis(settings)
redis.ping()  # connected before the black hole: from now on commands block
liveness = Liveness(settings, "predictor").start()
print("serving", flush=True)
while True:
    liveness.observe(consumer_positions(consumer))
    consumer.poll(timeout_ms=100)
    while True:
        try:
            redis.ping()
            break
        except redis_py.TimeoutError:
            continue
"""


def test_a_worker_whose_poll_loop_blocks_with_nothing_waiting_exits_for_a_restart(
    stack: Settings, relay: RedisRelay, new_topic: Callable[..., str], group_id: str
) -> None:
    settings = stack.model_copy(update={"redis_url": relay.url, "stall_timeout_s": STALL_TIMEOUT_S})
    with subprocess.Popen(
        [sys.executable, "-c", BLOCKING_WORKER, new_topic(), group_id],
        env=settings.child_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    ) as worker:
        try:
            assert worker.stdout is not None
            while (line := worker.stdout.readline()) and line.strip() != "serving":
                pass  # kafka-python's warnings, if any
            assert line, "the worker ended before serving"
            relay.black_hole()
            code = worker.wait(timeout=DEADLINE_S)
            output = worker.stdout.read()
        finally:
            if worker.poll() is None:
                worker.kill()
    assert code == STALLED_EXIT_CODE, output
    exiting = [orjson.loads(line) for line in output.splitlines() if "exiting" in line]
    assert [e["message"] for e in exiting] == ["stalled; exiting for a restart"], output
    assert exiting[0]["reason"].startswith("stalled: the poll loop has not turned"), output


class NothingAssignor(AbstractPartitionAssignor):  # type: ignore[misc]
    """Hands no partition to anyone: a group whose assignment went wrong."""

    name = "eddy-test-nothing"
    version = 0

    @classmethod
    def assign(cls, cluster: Any, members: dict[str, Any]) -> dict[str, Any]:
        return {m: ConsumerProtocolMemberAssignment_v0(cls.version, [], b"") for m in members}

    @classmethod
    def metadata(cls, topics: Any) -> Any:
        return ConsumerProtocolMemberMetadata_v0(cls.version, list(topics), b"")

    @classmethod
    def on_assignment(cls, assignment: Any) -> None:
        return None


def backlog(settings: Settings, topic: str) -> None:
    producer = make_producer(settings)
    try:
        for i in range(BACKLOG):
            producer.send(topic, key=b"k", value=f"{i}".encode()).get(timeout=30)
    finally:
        producer.close()


def judge_idle_member(
    settings: Settings,
    group_id: str,
    topic: str,
    assignor: type[AbstractPartitionAssignor],
    owners: int,
) -> tuple[list[int], str]:
    """``owners`` + 1 members of one group, polled here; once ``owners`` of them own
    partitions, the watchdog of one owning nothing is judged (real group looks, real
    clock) until it exits or the deadline: (exits, last reason)."""
    members = []
    for _ in range(owners + 1):
        member = make_consumer(
            settings, group_id=group_id, partition_assignment_strategy=[assignor]
        )
        subscribe(member, [topic])
        members.append(member)
    exits: list[int] = []
    liveness = Liveness(settings, "learner", exit_process=exits.append)
    reason = ""
    deadline = time.monotonic() + JOIN_DEADLINE_S
    try:
        while not exits and time.monotonic() < deadline:
            for member in members:
                member.poll(timeout_ms=POLL_MS)
            idle = [member for member in members if not member.assignment()]
            if len(members) - len(idle) != owners:
                # Still settling; in an eager rebalance a member keeps its old partitions
                # until it rejoins, so for a moment more than ``owners`` may own some.
                continue
            (idle_member,) = idle
            liveness.observe(consumer_positions(idle_member))
            reason = liveness.check().reason
    finally:
        for member in members:
            member.close(autocommit=False)
    return exits, reason


def test_a_member_never_handed_a_partition_while_records_wait_exits(
    stack: Settings, new_topic: Callable[..., str], group_id: str
) -> None:
    settings = stack.model_copy(update={"stall_timeout_s": STALL_TIMEOUT_S})
    topic = new_topic(partitions=2)
    backlog(settings, topic)
    exits, reason = judge_idle_member(settings, group_id, topic, NothingAssignor, owners=0)
    assert exits == [STALLED_EXIT_CODE], reason
    assert reason.startswith(f"stalled: owns no partition while {BACKLOG} records wait"), reason


def test_a_hot_standby_whose_partitions_another_member_owns_stays_healthy(
    stack: Settings, new_topic: Callable[..., str], group_id: str
) -> None:
    settings = stack.model_copy(update={"stall_timeout_s": STALL_TIMEOUT_S})
    topic = new_topic(partitions=2)
    backlog(settings, topic)  # never committed: it waits, for the writer, all along
    exits, reason = judge_idle_member(settings, group_id, topic, AllToOneAssignor, owners=1)
    assert exits == []
    assert reason == "nothing assigned"
