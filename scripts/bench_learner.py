"""Learning throughput: Eddy's learner against bare River prequential loops, same run.

    .venv/bin/python scripts/bench_learner.py [--examples 100000] [--runs 3] [--batch 500]

Over the same seeded examples (River's SEA generator, 3 numeric features, binary):

- **bare logistic**: ``StandardScaler | LogisticRegression`` with ``predict_proba_one``,
  ``predict_one``, an Accuracy update and ``learn_one`` per example: the baseline;
- **floor**: the least a learner watching its own error does (one probability call, an
  Accuracy, one ADWIN, ``learn_one``): the in-process learner's floor;
- **learner, one by one** / **learner, mini-batches**:
:class:`eddy.streams.learning.learner.Learner`
  in-process, fed 500-example polls like the worker (the same model, plus cumulative
  and rolling metrics, the ADWIN error monitor and data and prediction drift monitors),
  with ``EDDY_LEARNER_BATCH`` 1 and ``--batch``; and both again with the drift windows
  tested every 500 examples instead of 100 (``EDDY_DRIFT_CHECK_EVERY``): what the
  learner costs beyond the bare loop is mostly those tests;
- **bare tree** / **learner, tree**: the same for a Hoeffding Adaptive Tree, a model
  that learns one example at a time (no ``learn_many``);
- **bare consume** / **consume + decode** / **consume + trusted decode**: a kafka-python
  loop reading the same examples from Kafka, without and with Eddy's validating decoder,
  and with the learner's (the trusted fast path for Eddy's own records,
  :func:`~eddy.streams.learning.intake.decode_example`): the ceiling of a process;
- **read + decode + learn** / **reading process → learning process**: the examples read
  from Kafka, decoded and learned with no checkpoints, offsets or metrics, on one thread
  and with the reading and decoding in a second process: the ceilings of the learner
  process read on its own thread and in a reader process (:func:`read_and_learn`);
- **learner process**: ``eddy run learner`` reading the examples from Kafka (one by one
  and mini-batches), measured from its first checkpoint to the one holding every example:
  as it runs by default, with a reader process, and reading on its own thread
  (``EDDY_LEARNER_READER_PROCESS=false``).

The in-process rows run with the garbage collector set as the learner process sets it
(:func:`~eddy.services.ops.collector.settle_collector`), the bare loops too: otherwise a
full collection of this script's own start-up objects lands in whichever row allocates
most, and the rows measure this process's heap rather than the learner.

Also prints, per detector, the detection delay and false alarms on streams with known
change points, next to the same River detector run bare.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import multiprocessing
import os
import platform
import random
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench_features import throwaway
from river import datasets, drift, linear_model, metrics, preprocessing, tree

from eddy.services.config.settings import Settings
from eddy.services.ops.collector import settle_collector
from eddy.streams.drift.data import DEFAULT_CONFIG as DEFAULT_DRIFT
from eddy.streams.drift.data import DriftConfig
from eddy.streams.drift.detectors import make_detector
from eddy.streams.learning.checkpoints import CheckpointStore
from eddy.streams.learning.intake import decode_example
from eddy.streams.learning.learner import Learner, LearnerConfig, Position
from eddy.streams.messages.contracts import SourceOffset, TrainingExample
from eddy.streams.messages.validation import decode, encode
from eddy.streams.store.serialization import signing_key
from eddy.streams.transport.clients import make_consumer, make_producer
from eddy.streams.transport.topics import Topic, topic_name

DEADLINE_S = 600
POLL = 500  # examples per learn_many call, as the worker's polls bring them
BASE_TIME = datetime(2026, 1, 1, tzinfo=UTC).timestamp()


def sea(count: int, seed: int = 7) -> list[tuple[dict[str, float], bool]]:
    stream = datasets.synth.SEA(variant=0, seed=seed)
    return [({f"x{k}": float(v) for k, v in x.items()}, bool(y)) for x, y in stream.take(count)]


@contextlib.contextmanager
def collected_as_the_worker() -> Iterator[None]:
    """The garbage collector set as the learner process sets it, restored afterwards
    (so that it is this script's only, not that of one importing it)."""
    thresholds = gc.get_threshold()
    settle_collector()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)


def bare_loop(rows: list[tuple[dict[str, float], bool]], kind: str = "logistic") -> float:
    model = (
        preprocessing.StandardScaler() | linear_model.LogisticRegression()
        if kind == "logistic"
        else tree.HoeffdingAdaptiveTreeClassifier(seed=42)
    )
    accuracy = metrics.Accuracy()
    with collected_as_the_worker():
        started = time.perf_counter()
        for x, y in rows:
            model.predict_proba_one(x)
            accuracy.update(y, model.predict_one(x))
            model.learn_one(x, y)
        return len(rows) / (time.perf_counter() - started)


def watched_floor(rows: list[tuple[dict[str, float], bool]]) -> float:
    """The least a prequential learner that watches its own error does per example: the
    bare loop's model with one probability call (the prediction is its most probable
    class), an Accuracy update, one River ADWIN fed the 0/1 error, and ``learn_one``.
    It is the in-process learner's floor: what Eddy's learner does beyond it (rolling
    metrics, calibration, the concept watch's attribution, two drift monitors, the
    vocabulary) is Eddy's own cost."""
    model = preprocessing.StandardScaler() | linear_model.LogisticRegression()
    accuracy, detector = metrics.Accuracy(), drift.ADWIN()
    with collected_as_the_worker():
        started = time.perf_counter()
        for x, y in rows:
            proba = model.predict_proba_one(x)
            prediction = max(proba, key=proba.__getitem__) if proba else None
            accuracy.update(y, prediction)
            detector.update(0.0 if prediction == y else 1.0)
            model.learn_one(x, y)
        return len(rows) / (time.perf_counter() - started)


def learner_core(
    rows: list[tuple[dict[str, float], bool]],
    kind: str = "logistic",
    batch: int = 1,
    check_every: int = DEFAULT_DRIFT.check_every,
) -> float:
    drift = DriftConfig(check_every=check_every)
    learner = Learner(LearnerConfig(model="bench", kind=kind, batch=batch, drift=drift))
    items = [(x, y, Position("bench", 0, i, BASE_TIME + i)) for i, (x, y) in enumerate(rows)]
    with collected_as_the_worker():
        started = time.perf_counter()
        for start in range(0, len(items), POLL):
            learner.learn_alerts(items[start : start + POLL])  # as the worker learns a poll
        return (learner.examples + len(learner.pending)) / (time.perf_counter() - started)


def own_deployment(base: Settings) -> Settings:
    """A deployment of its own (prefix, data folder), removed after use by ``throwaway``."""
    return base.model_copy(
        update={
            "topic_prefix": f"bench-learn-{uuid.uuid4().hex[:8]}.",
            "partitions": 1,
            "data_dir": ROOT / ".eddy" / "bench" / uuid.uuid4().hex[:8],
        }
    )


def fill_examples(rows: list[tuple[dict[str, float], bool]], settings: Settings) -> None:
    """``rows`` as training examples on the deployment's topic."""
    producer = make_producer(settings, linger_ms=20)
    for i, (x, y) in enumerate(rows):
        example = TrainingExample(
            example_id=f"ex-{i}",
            entity_id="e",
            event_time=datetime.fromtimestamp(BASE_TIME + i, UTC),
            label=y,
            features=dict(x),
            feature_set="bench",
            source=SourceOffset(topic="events", partition=0, offset=i),
        )
        producer.send(_topic(settings), value=encode(example))
    producer.flush(timeout=120)
    producer.close()


def _topic(settings: Settings) -> str:
    return topic_name(Topic.TRAINING_EXAMPLES, settings.topic_prefix)


def bare_consume(
    rows: list[tuple[dict[str, float], bool]],
    base: Settings,
    validate: bool = False,
    *,
    trusted: bool = False,
) -> float:
    """What reading the examples costs before any learning: a bare kafka-python loop
    (the learner's consumer settings), and the same loop decoding each example with
    Eddy's validating decoder (``validate``) or with the learner's, which takes Eddy's
    own records on a trusted fast path (``trusted``). The ceiling of any learner process
    in Python."""
    with throwaway(own_deployment(base)) as settings:
        fill_examples(rows, settings)
        return _consume_rate(settings, len(rows), validate, trusted)


def _consume_rate(settings: Settings, count: int, validate: bool, trusted: bool) -> float:
    consumer = make_consumer(settings, _topic(settings), group_id=None, max_poll_records=POLL)
    read, started = 0, None
    try:
        while read < count:
            for records in consumer.poll(timeout_ms=500).values():
                started = started or time.perf_counter()
                for record in records:
                    if trusted:
                        decode_example(record.value)
                    elif validate:
                        decode(TrainingExample, record.value)
                    read += 1
        return read / (time.perf_counter() - (started or 0.0))
    finally:
        consumer.close()


def read_and_learn(
    rows: list[tuple[dict[str, float], bool]],
    base: Settings,
    batch: int = 1,
    *,
    reader_process: bool = False,
) -> float:
    """The ceiling of a learner process, and the design that would raise it: the
    examples read from Kafka, decoded by the learner's decoder and learned by
    :class:`Learner` (no checkpoints, offsets or metrics), either all on one thread (what
    ``eddy run learner`` does today, less its checkpoints) or with the reading and
    decoding in a second process that hands each poll's decoded examples to the learning
    one over a pipe (``reader_process``): the design of ``eddy run learner``'s reader
    process (:mod:`eddy.services.ops.reader_process`) without its checkpoints, offsets,
    rebalances or dead letters."""
    with throwaway(own_deployment(base)) as settings:
        fill_examples(rows, settings)
        with collected_as_the_worker():
            if reader_process:
                return _learn_from_reader(settings, len(rows), batch)
            return _read_and_learn(settings, len(rows), batch)


def _decoded_polls(settings: Settings, count: int) -> Iterator[list[Any]]:
    """Each poll of the examples topic, decoded as the learner decodes, until ``count``."""
    consumer = make_consumer(settings, _topic(settings), group_id=None, max_poll_records=POLL)
    read = 0
    try:
        while read < count:
            for records in consumer.poll(timeout_ms=500).values():
                items = []
                for record in records:
                    example = decode_example(record.value)
                    at = Position(record.topic, record.partition, record.offset, example.event_time)
                    items.append((example.features, example.label, at))
                read += len(items)
                yield items
    finally:
        consumer.close()


def _read_and_learn(settings: Settings, count: int, batch: int) -> float:
    learner = Learner(LearnerConfig(model="bench", kind="logistic", batch=batch))
    started = None
    for items in _decoded_polls(settings, count):
        started = started or time.perf_counter()
        learner.learn_alerts(items)
    return count / (time.perf_counter() - (started or 0.0))


def _reader(settings: Settings, count: int, sink: Connection) -> None:
    settle_collector()
    for items in _decoded_polls(settings, count):
        sink.send(items)
    sink.send(None)


def _learn_from_reader(settings: Settings, count: int, batch: int) -> float:
    learner = Learner(LearnerConfig(model="bench", kind="logistic", batch=batch))
    received, sent = multiprocessing.Pipe(duplex=False)
    reader = multiprocessing.get_context("fork").Process(
        target=_reader, args=(settings, count, sent)
    )
    reader.start()
    started = None
    try:
        while (items := received.recv()) is not None:
            started = started or time.perf_counter()
            learner.learn_alerts(items)
        return count / (time.perf_counter() - (started or 0.0))
    finally:
        reader.join(timeout=DEADLINE_S)


def learner_process(
    rows: list[tuple[dict[str, float], bool]],
    base: Settings,
    batch: int = 1,
    *,
    reader_process: bool = True,
) -> float:
    """``eddy run learner``'s rate; ``reader_process=False`` reads on its own thread."""
    with throwaway(own_deployment(base)) as settings:
        fill_examples(rows, settings)
        return _learner_rate(settings, len(rows), batch, reader_process)


def _learner_rate(settings: Settings, count: int, batch: int, reader_process: bool) -> float:
    # The last examples are saved by the interval rule: keep it short so the final
    # checkpoint (the finish line) is not held back by idle time.
    env = settings.child_env(
        log_level="WARNING",
        checkpoint_interval_s=0.2,
        learner_batch=batch,
        learner_reader_process=reader_process,
    )
    store = CheckpointStore(
        settings.data_dir / "checkpoints" / settings.model_name,
        signing_key(None, settings.data_dir),
    )
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    with (settings.data_dir / "learner.log").open("wb") as log:
        worker = subprocess.Popen(
            [str(Path(sys.executable).with_name("eddy")), "run", "learner"],
            env=env,
            stdout=log,
            stderr=log,
        )
    try:
        first: tuple[float, int] | None = None
        deadline = time.monotonic() + DEADLINE_S
        while time.monotonic() < deadline:
            paths = sorted(store.directory.glob("checkpoint-*.sealed"))
            learned = int(paths[-1].stem.split("-")[1]) if paths else 0
            now = time.perf_counter()
            if learned and first is None:
                first = (now, learned)
            if learned >= count - count % batch and first is not None:
                return (learned - first[1]) / (now - first[0])
            time.sleep(0.05)
        raise RuntimeError(f"learner did not finish; see {settings.data_dir}/learner.log")
    finally:
        worker.terminate()
        worker.wait(timeout=30)


CHANGE_AT = 5_000
STREAM_LENGTH = 10_000


def error_stream(seed: int = 1) -> list[float]:
    """0/1 errors: rate 0.1 until CHANGE_AT, 0.5 after (a model that stopped fitting)."""
    rng = random.Random(seed)
    return [
        1.0 if rng.random() < (0.1 if i < CHANGE_AT else 0.5) else 0.0 for i in range(STREAM_LENGTH)
    ]


def bare_river_detectors() -> dict[str, Any]:
    return {
        "adwin": drift.ADWIN(),
        "page_hinkley": drift.PageHinkley(),
        "ddm": drift.binary.DDM(),
        "eddm": drift.binary.EDDM(),
        "hddm_a": drift.binary.HDDMA(),
        "hddm_w": drift.binary.HDDMW(),
        "kswin": drift.KSWIN(seed=42),
    }


def detection_table() -> None:
    """Delay to the first alarm after the change, and false alarms before it."""
    errors = error_stream()
    print(f"\ndetectors on 0/1 errors, rate 0.1 -> 0.5 at {CHANGE_AT:,} ({STREAM_LENGTH:,} items)")
    columns = ("eddy delay", "eddy false", "river delay", "river false")
    print(f"{'detector':14} " + " ".join(f"{c:>12}" for c in columns))
    for name, bare in bare_river_detectors().items():
        adapted = make_detector(name)
        eddy_alarms = [i for i, e in enumerate(errors) if adapted.update(e).drifted]
        river_alarms = []
        for i, e in enumerate(errors):
            bare.update(e)
            if bare.drift_detected:
                river_alarms.append(i)
        print(
            f"{name:14} {_delay(eddy_alarms):>11} {_false(eddy_alarms):>11} "
            f"{_delay(river_alarms):>12} {_false(river_alarms):>12}"
        )


def _delay(alarms: list[int]) -> str:
    after = [i for i in alarms if i >= CHANGE_AT]
    return str(after[0] - CHANGE_AT) if after else "missed"


def _false(alarms: list[int]) -> str:
    return str(sum(1 for i in alarms if i < CHANGE_AT))


# The cost of drift monitoring, shown by testing the windows less often than the default
# (EDDY_DRIFT_CHECK_EVERY).
SPARSE_CHECKS = 500
ROWS = (
    ("bare", "bare River loop, logistic"),
    ("floor", "floor: predict, score, ADWIN, learn (River)"),
    ("one_by_one", "eddy Learner, logistic, one by one"),
    ("mini_batch", "eddy Learner, logistic, mini-batches"),
    ("one_by_one_sparse", f"eddy Learner, one by one, drift tests every {SPARSE_CHECKS}"),
    ("mini_batch_sparse", f"eddy Learner, mini-batches, drift tests every {SPARSE_CHECKS}"),
    ("bare_tree", "bare River loop, HAT"),
    ("tree", "eddy Learner, HAT (one by one)"),
    ("consume", "bare kafka-python consume loop"),
    ("consume_decode", "kafka-python consume + Eddy's decoder"),
    ("consume_trusted", "kafka-python consume + the learner's decoder"),
    ("read_learn", "read + decode + learn, one thread, one by one"),
    ("read_learn_batch", "read + decode + learn, one thread, mini-batches"),
    ("reader_learn", "reading process → learning process, one by one"),
    ("reader_learn_batch", "reading process → learning process, mini-batches"),
    ("process", "eddy run learner, one by one"),
    ("process_batch", "eddy run learner, mini-batches"),
    ("process_thread", "eddy run learner reading on its thread, one by one"),
    ("process_thread_batch", "eddy run learner reading on its thread, mini-batches"),
)
BASELINE = {"tree": "bare_tree", "bare_tree": "bare_tree"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--examples", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--batch", type=int, default=500)
    args = parser.parse_args()
    rows = sea(args.examples)
    base = Settings.from_env()
    measures = {
        "bare": lambda: bare_loop(rows),
        "floor": lambda: watched_floor(rows),
        "one_by_one": lambda: learner_core(rows),
        "mini_batch": lambda: learner_core(rows, batch=args.batch),
        "one_by_one_sparse": lambda: learner_core(rows, check_every=SPARSE_CHECKS),
        "mini_batch_sparse": lambda: learner_core(
            rows, batch=args.batch, check_every=SPARSE_CHECKS
        ),
        "bare_tree": lambda: bare_loop(rows, "tree"),
        "tree": lambda: learner_core(rows, "hoeffding_adaptive_tree"),
        "consume": lambda: bare_consume(rows, base),
        "consume_decode": lambda: bare_consume(rows, base, validate=True),
        "consume_trusted": lambda: bare_consume(rows, base, trusted=True),
        "read_learn": lambda: read_and_learn(rows, base),
        "read_learn_batch": lambda: read_and_learn(rows, base, args.batch),
        "reader_learn": lambda: read_and_learn(rows, base, reader_process=True),
        "reader_learn_batch": lambda: read_and_learn(rows, base, args.batch, reader_process=True),
        "process": lambda: learner_process(rows, base),
        "process_batch": lambda: learner_process(rows, base, args.batch),
        "process_thread": lambda: learner_process(rows, base, reader_process=False),
        "process_thread_batch": lambda: learner_process(
            rows, base, args.batch, reader_process=False
        ),
    }
    results: dict[str, list[float]] = {name: [] for name in measures}
    for run in range(args.runs):
        for name, measure in measures.items():
            results[name].append(measure())
        print(f"run {run + 1}: " + "  ".join(f"{n} {v[-1]:,.0f}/s" for n, v in results.items()))
    print(
        f"\nmachine: {platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}; {args.examples:,} SEA examples per run, "
        f"mini-batches of {args.batch}"
    )
    for name, label in ROWS:
        values = results[name]
        baseline = statistics.median(results[BASELINE.get(name, "bare")])
        print(
            f"{label:38} median {statistics.median(values):>9,.0f}/s "
            f"(min {min(values):,.0f}, max {max(values):,.0f})  "
            f"ratio {statistics.median(values) / baseline:.2f}"
        )
    detection_table()


if __name__ == "__main__":
    main()
