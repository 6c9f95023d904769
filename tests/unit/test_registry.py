"""Properties of eddy.services.registry.store, the model registry.

Round trips: a scikit-learn pipeline and a River model come back predicting exactly like
the originals; versions count 1, 2, ... per model; metrics and lineage survive exactly;
identical artifact bytes are stored once. Aliases: promote, challenger, rollback, history,
audit log and announcements, and RegistryError for what does not exist. Concurrency: four
processes registering at once get forty distinct versions. Tampering: a flipped byte, a
malicious pickle (unsigned or signed with another key), a registry opened with another
key, an unsigned artifact and a signed skops file holding a type outside the allow-list
are all refused with IntegrityError before anything is deserialised, and the champion
stays where it was.

Every registry is a plain ``Registry(root, key, announce=...)`` in ``tmp_path``: no Kafka,
no Redis.
"""

from __future__ import annotations

import getpass
import hashlib
import multiprocessing
import os
import pickle
import re
import socket
import sqlite3
import types
from contextlib import closing
from dataclasses import asdict
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
import skops.io
from sklearn.feature_extraction import DictVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline

import eddy.streams.store.serialization
from eddy.services.registry.announcements import learner_snapshots
from eddy.services.registry.store import (
    CHALLENGER,
    CHAMPION,
    RIVER,
    SKLEARN,
    Deployment,
    Lineage,
    Registry,
    RegistryError,
    Version,
    trainer_identity,
)
from eddy.streams.learning.checkpoints import LearnerState
from eddy.streams.learning.learner import Learner, LearnerConfig, Position
from eddy.streams.learning.models import OnlineModel, make_model
from eddy.streams.store.recent_ids import RecentIds
from eddy.streams.store.serialization import PICKLE, SKOPS, IntegrityError, sign

KEY = b"registry-test-key-0123456789abcdef"
OTHER_KEY = b"someone-else's-key-fedcba9876543210"
MODEL = "fraud"
ACTOR = "operator alice"

ROWS: list[dict[str, Any]] = [
    {"amount": 12.0, "country": "NL", "mobile": 1.0},
    {"amount": 250.0, "country": "DE", "mobile": 0.0},
    {"amount": 8.5, "country": "NL", "mobile": 0.0},
    {"amount": 990.0, "country": "FR", "mobile": 1.0},
    {"amount": 40.0, "country": "DE", "mobile": 1.0},
    {"amount": 700.0, "country": "FR", "mobile": 0.0},
]
LABELS = [False, True, False, True, False, True]
PROBES: list[dict[str, Any]] = [
    *ROWS,
    {"amount": 100.0, "country": "BE", "mobile": 1.0},
    {"amount": 0.0, "country": "NL", "mobile": 0.0},
]

WORKERS = 4
PER_WORKER = 10
SHARED = "shared"
JOIN_TIMEOUT_S = 180.0


# --- helpers ------------------------------------------------------------------------


class Announcements:
    """The ``announce`` callback: remembers every (alias, version, reason) it was given."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Version, str | None]] = []

    def __call__(self, alias: str, version: Version, reason: str | None) -> None:
        self.calls.append((alias, version, reason))


class Trap:
    """Unpickling one creates ``path``: stands in for any code a malicious pickle runs."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return (Path.touch, (self.path,))


class Tripwire:
    """A type outside the skops allow-list that counts every instance brought into being."""

    built = 0

    def __new__(cls) -> Tripwire:
        cls.built += 1
        return super().__new__(cls)

    def __init__(self) -> None:
        self.note = "constructed"


def _lineage(trainer: str = "batch-trainer", **changes: Any) -> Lineage:
    fields: dict[str, Any] = {
        "trained_on": {"transactions[0]": [0, 999], "transactions[1]": [17, 1016]},
        "feature_set": "fraud-v3",
        "params": {"C": 0.5, "penalty": "l2", "nested": {"layers": [3, 1], "on": True}},
        "libraries": {"river": "0.26.1", "scikit-learn": "1.9.1"},
        "code_version": "abc1234",
        "trigger": {"type": "alert", "id": "alert-42"},
        "trainer": trainer,
        "window": {"start": 1_700_000_000.25, "end": 1_700_003_600.5, "examples": 2000},
    }
    fields.update(changes)
    return Lineage(**fields)


def _sklearn_pipeline() -> Pipeline:
    return make_pipeline(DictVectorizer(sparse=False), LogisticRegression()).fit(
        ROWS, [int(y) for y in LABELS]
    )


def _river_model(passes: int = 3) -> OnlineModel:
    model = make_model("logistic")
    for _ in range(passes):
        for x, y in zip(ROWS, LABELS, strict=True):
            model.learn_one(x, y)
    return model


def _register(registry: Registry, model: str = MODEL, obj: Any = None) -> Version:
    """A River version of ``model`` (``obj`` or a freshly trained model)."""
    payload = _river_model() if obj is None else obj
    return registry.register(model, RIVER, payload, {"accuracy": 0.9}, _lineage())


def _artifacts(registry: Registry) -> Path:
    return registry.root / "artifacts"


def _artifact(registry: Registry, record: Version) -> Path:
    return _artifacts(registry) / record.artifact


def _payload(blob: bytes) -> bytes:
    """What follows a sealed artifact's header line."""
    return blob.partition(b"\n")[2]


def _plant(registry: Registry, model: str, version: int, blob: bytes) -> Path:
    """Store ``blob`` under its own address and point ``model@version``'s row at it.

    A version row names its artifact by SHA-256, and ``load`` first checks that the file
    hashes to that name. Changing the bytes behind an existing name would need a SHA-256
    preimage, so an attacker who wants the registry to *read* their bytes does what this
    does with the same filesystem access it takes to replace an artifact: write the file
    under its own hash and re-point the row (the SQLite file sits next to the artifacts).
    The address check then passes, and only the signature stands between the bytes and
    the deserialiser, which is exactly what these tests exercise.
    """
    digest = hashlib.sha256(blob).hexdigest()
    path = _artifacts(registry) / digest
    path.write_bytes(blob)
    with closing(sqlite3.connect(registry.root / "registry.sqlite")) as db, db:
        updated = db.execute(
            "UPDATE versions SET artifact = ? WHERE model = ? AND version = ?",
            (digest, model, version),
        ).rowcount
    assert updated == 1
    return path


def _malicious_pickle(path: Path) -> bytes:
    return pickle.dumps(Trap(path), protocol=pickle.HIGHEST_PROTOCOL)


def _assert_refused(registry: Registry, model: str, version: int, match: str) -> None:
    """Loading ``model@version`` raises IntegrityError and changes no alias or history."""
    aliases, history = registry.aliases(model), registry.history(model)
    with pytest.raises(IntegrityError, match=match):
        registry.load(model, version)
    assert registry.aliases(model) == aliases
    assert registry.history(model) == history


def _replayed(history: list[Deployment]) -> dict[str, int]:
    """The aliases that the deployment history says are current."""
    current: dict[str, int] = {}
    for row in history:
        if row.version is None:
            current.pop(row.alias, None)
        else:
            current[row.alias] = row.version
    return current


# --- fixtures -----------------------------------------------------------------------


@pytest.fixture
def announced() -> Announcements:
    return Announcements()


@pytest.fixture
def registry(tmp_path: Path, announced: Announcements) -> Registry:
    return Registry(tmp_path / "registry", KEY, announce=announced)


@pytest.fixture
def champion(registry: Registry) -> Version:
    """``MODEL@1``, a River model, promoted to champion."""
    record = _register(registry)
    registry.promote(MODEL, record.version, ACTOR, "first model")
    return record


@pytest.fixture
def unpickled(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Every payload the registry hands to ``pickle.loads`` or ``skops.io.loads``.

    The spies refuse to deserialise, so a test that reaches them fails loudly instead of
    running what it was given.
    """
    calls: list[bytes] = []

    def refuse(data: bytes, *args: Any, **kwargs: Any) -> Any:
        calls.append(data)
        raise AssertionError("the registry tried to deserialise an unverified artifact")

    monkeypatch.setattr(
        eddy.streams.store.serialization,
        "pickle",
        types.SimpleNamespace(
            dumps=pickle.dumps, loads=refuse, HIGHEST_PROTOCOL=pickle.HIGHEST_PROTOCOL
        ),
    )
    monkeypatch.setattr(skops.io, "loads", refuse)
    return calls


# --- round trips --------------------------------------------------------------------


def test_a_registered_sklearn_pipeline_loads_and_predicts_like_the_original(
    registry: Registry,
) -> None:
    original = _sklearn_pipeline()
    record = registry.register(MODEL, SKLEARN, original, {"log_loss": 0.3}, _lineage())

    loaded = registry.load(MODEL, record.version)

    assert record.flavor == SKLEARN
    assert isinstance(loaded, Pipeline)
    assert loaded is not original
    np.testing.assert_array_equal(loaded.predict(PROBES), original.predict(PROBES))
    np.testing.assert_array_equal(loaded.predict_proba(PROBES), original.predict_proba(PROBES))


def test_a_registered_river_model_loads_and_predicts_like_the_original(
    registry: Registry,
) -> None:
    original = _river_model()
    record = registry.register(MODEL, RIVER, original, {"accuracy": 0.8}, _lineage())

    loaded = registry.load(MODEL, record.version)

    assert record.flavor == RIVER
    assert isinstance(loaded, OnlineModel)
    assert loaded is not original
    assert [loaded.predict_one(x) for x in PROBES] == [original.predict_one(x) for x in PROBES]
    assert [loaded.predict_proba_one(x) for x in PROBES] == [
        original.predict_proba_one(x) for x in PROBES
    ]
    # The snapshot is a full model, not just its predictions: it keeps learning identically.
    for model in (loaded, original):
        model.learn_one(PROBES[-2], True)
    assert [loaded.predict_proba_one(x) for x in PROBES] == [
        original.predict_proba_one(x) for x in PROBES
    ]


def test_versions_number_from_one_per_model_independently(registry: Registry) -> None:
    order = ["a", "b", "a", "a", "b", "c"]
    numbers = [_register(registry, name).version for name in order]

    assert numbers == [1, 1, 2, 3, 2, 1]
    assert [v.version for v in registry.versions("a")] == [1, 2, 3]
    assert [v.version for v in registry.versions("b")] == [1, 2]
    assert [v.version for v in registry.versions("c")] == [1]
    assert registry.versions("never-registered") == []
    assert registry.models() == ["a", "b", "c"]
    assert registry.get("a", 3).name == "a@3"


def test_metrics_and_lineage_round_trip_exactly(registry: Registry) -> None:
    metrics = {
        "log_loss": 0.1 + 0.2,  # 0.30000000000000004: any rounding would show
        "accuracy": 2 / 3,
        "tiny": 5e-324,
        "huge": 1.7976931348623157e308,
        "examples": 12_345,
    }
    lineage = _lineage(
        trainer=trainer_identity("batch trainer"),
        params={"C": 1 / 3, "class_weight": None, "names": ["ä", "ß", "€"], "deep": {"k": [1]}},
        trigger={"type": "operator", "id": "ticket-7 ünïcode"},
    )

    registered = registry.register(MODEL, SKLEARN, _sklearn_pipeline(), metrics, lineage)
    stored = registry.get(MODEL, registered.version)

    assert stored.metrics == metrics
    assert {k: type(v) for k, v in stored.metrics.items()} == {
        k: type(v) for k, v in metrics.items()
    }
    assert stored.lineage == lineage
    assert stored.created_by == lineage.trainer
    assert stored == registered  # every field, created_at included, survives storage
    assert registry.versions(MODEL) == [registered]


def test_registering_the_same_bytes_twice_reuses_one_artifact_file(registry: Registry) -> None:
    model = _river_model()
    first = _register(registry, MODEL, model)
    second = _register(registry, MODEL, model)
    other = _register(registry, MODEL, _river_model(passes=5))

    assert (first.version, second.version) == (1, 2)
    assert first.artifact == second.artifact
    assert other.artifact != first.artifact
    files = sorted(p.name for p in _artifacts(registry).iterdir())
    assert files == sorted({first.artifact, other.artifact})  # no copies, no leftover .tmp
    for record in (first, second, other):
        assert hashlib.sha256(_artifact(registry, record).read_bytes()).hexdigest() == (
            record.artifact
        )
    assert registry.load(MODEL, 1).predict_proba_one(PROBES[0]) == (
        registry.load(MODEL, 2).predict_proba_one(PROBES[0])
    )


def test_the_newest_version_that_learned_exactly_these_offsets_is_found(
    registry: Registry,
) -> None:
    # Partitions 2 and 10: listed as the learner lists them, by number, not as text.
    learned = {"t[2]": [0, 99], "t[10]": [5, 104]}
    other = {"t[2]": [100, 199], "t[10]": [105, 204]}
    for flavor, offsets in ((RIVER, learned), (SKLEARN, learned), (RIVER, other), (RIVER, learned)):
        registry.register(MODEL, flavor, {"w": 1}, {}, _lineage(trained_on=offsets))

    assert registry.learned_exactly(MODEL, RIVER, learned) == 4
    assert registry.learned_exactly(MODEL, SKLEARN, learned) == 2
    assert registry.learned_exactly(MODEL, RIVER, other) == 3
    assert registry.learned_exactly(MODEL, RIVER, {"t[2]": [0, 99]}) is None
    assert registry.learned_exactly(MODEL, RIVER, {"t[2]": [0, 99], "t[10]": [5, 105]}) is None
    assert registry.learned_exactly("another-model", RIVER, learned) is None
    # A lineage with a NaN in it (Python writes it, SQLite refuses to parse it) is passed over.
    nan_window = {"label_coverage": float("nan")}
    registry.register(MODEL, RIVER, {"w": 2}, {}, _lineage(trained_on=other, window=nan_window))
    assert registry.learned_exactly(MODEL, RIVER, other) == 3
    assert registry.learned_exactly(MODEL, RIVER, learned) == 4


def test_versions_filtered_in_sqlite_are_the_filtered_list(registry: Registry) -> None:
    flavors = [RIVER, RIVER, SKLEARN, RIVER, SKLEARN, SKLEARN, RIVER, RIVER, SKLEARN, RIVER]
    for n, flavor in enumerate(flavors):
        registry.register(MODEL, flavor, {"w": n}, {}, _lineage())
    registry.register("another-model", RIVER, {"w": -1}, {}, _lineage())
    every = registry.versions(MODEL)
    assert [v.version for v in every] == list(range(1, 11))
    cuts = [None, every[0].created_at, every[4].created_at, every[-1].created_at + 1]
    for flavor in (None, RIVER, SKLEARN):
        for before in cuts:
            expected = [
                v
                for v in every
                if (flavor is None or v.flavor == flavor)
                and (before is None or v.created_at < before)
            ]
            for newest in (None, 0, 1, 2, 3, 5, 20):
                asked = registry.versions(
                    MODEL, flavor=flavor, created_before=before, newest=newest
                )
                assert asked == (
                    expected if newest is None else expected[max(0, len(expected) - newest) :]
                )


def test_an_online_snapshot_replayed_after_a_crash_is_registered_once(registry: Registry) -> None:
    state = LearnerState(Learner(LearnerConfig(model=MODEL)), RecentIds(10))
    snapshot = learner_snapshots(registry, "online-learner")
    state.learner.step({"x": 1.0}, True, Position("examples", 0, 39, 1_700_000_000.0))
    state.offsets = {("examples", 0): 40, ("examples", 1): 12}
    snapshot(state, Path("checkpoint-1.sealed"))
    snapshot(state, Path("checkpoint-1.sealed"))  # the same snapshot, taken again
    assert [v.lineage.trained_on for v in registry.versions(MODEL)] == [
        {"examples[0]": [0, 39], "examples[1]": [0, 11]}
    ]
    state.snapshot_taken()
    state.offsets = {("examples", 0): 55, ("examples", 1): 12}
    snapshot(state, Path("checkpoint-2.sealed"))
    assert [v.lineage.trained_on for v in registry.versions(MODEL)][1:] == [
        {"examples[0]": [40, 54]}
    ]


# --- aliases, history, audit --------------------------------------------------------


def test_promote_points_the_champion_and_announces_it_once(
    registry: Registry, announced: Announcements
) -> None:
    record = _register(registry)
    assert registry.alias(MODEL, CHAMPION) is None
    assert announced.calls == []

    registry.promote(MODEL, record.version, ACTOR, "beats nothing")

    assert registry.alias(MODEL, CHAMPION) == record
    assert registry.aliases(MODEL) == {CHAMPION: 1}
    assert announced.calls == [(CHAMPION, record, "beats nothing")]


def test_history_lists_every_alias_change_in_order_and_each_is_announced_once(
    registry: Registry, announced: Announcements
) -> None:
    for _ in range(3):
        _register(registry)
    registry.promote(MODEL, 1, "trainer", "first")
    registry.set_alias(MODEL, CHALLENGER, 2, "trainer", "close call")
    registry.set_alias(MODEL, CHALLENGER, 3, "trainer", "newer challenger")
    registry.promote(MODEL, 3, "live gate", "significantly better")
    back_to = registry.rollback(MODEL, ACTOR, "error rate up")

    history = registry.history(MODEL)
    assert back_to == 1
    assert [(d.alias, d.previous, d.version, d.actor, d.reason) for d in history] == [
        (CHAMPION, None, 1, "trainer", "first"),
        (CHALLENGER, None, 2, "trainer", "close call"),
        (CHALLENGER, 2, 3, "trainer", "newer challenger"),
        (CHAMPION, 1, 3, "live gate", "significantly better"),
        (CHALLENGER, 3, None, "live gate", "promoted to champion: significantly better"),
        (CHAMPION, 3, 1, ACTOR, "rollback: error rate up"),
    ]
    assert all(d.model == MODEL for d in history)
    assert [d.at for d in history] == sorted(d.at for d in history)
    assert announced.calls == [
        (d.alias, registry.get(MODEL, d.version), d.reason)
        for d in history
        if d.version is not None
    ]
    assert registry.alias(MODEL, CHAMPION) == registry.get(MODEL, 1)


def test_set_alias_points_a_challenger_without_touching_the_champion(
    registry: Registry, champion: Version
) -> None:
    challenger = _register(registry)

    registry.set_alias(MODEL, CHALLENGER, challenger.version, ACTOR, "shadow it")

    assert registry.aliases(MODEL) == {CHAMPION: champion.version, CHALLENGER: 2}
    assert registry.alias(MODEL, CHALLENGER) == challenger
    assert registry.alias(MODEL, CHAMPION) == champion


def test_promoting_the_challenger_removes_it_from_challenger(
    registry: Registry, champion: Version
) -> None:
    _register(registry)
    _register(registry)
    registry.set_alias(MODEL, CHALLENGER, 2, ACTOR, "shadow")

    registry.promote(MODEL, 2, ACTOR, "won")

    assert registry.aliases(MODEL) == {CHAMPION: 2}
    assert registry.alias(MODEL, CHALLENGER) is None

    registry.set_alias(MODEL, CHALLENGER, 3, ACTOR, "next")
    registry.promote(MODEL, 1, ACTOR, "back to the first, challenger untouched")
    assert registry.aliases(MODEL) == {CHAMPION: 1, CHALLENGER: 3}


def test_the_deployment_history_replays_to_the_current_aliases(
    registry: Registry, champion: Version
) -> None:
    # The module promises that every alias change is a deployment-history row; the
    # challenger alias removed by a promotion is an alias change too.
    _register(registry)
    registry.set_alias(MODEL, CHALLENGER, 2, ACTOR, "shadow")
    registry.promote(MODEL, 2, ACTOR, "won")

    assert registry.aliases(MODEL) == {CHAMPION: 2}
    assert _replayed(registry.history(MODEL)) == registry.aliases(MODEL)


def test_rollback_restores_the_previous_champion_and_announces_it(
    registry: Registry, announced: Announcements, champion: Version
) -> None:
    second = _register(registry)
    registry.promote(MODEL, second.version, ACTOR, "better")

    restored = registry.rollback(MODEL, "rollback guard", "live errors up")

    assert restored == champion.version
    assert registry.alias(MODEL, CHAMPION) == champion
    assert announced.calls[-1] == (CHAMPION, champion, "rollback: live errors up")
    last = registry.history(MODEL)[-1]
    assert (last.previous, last.version, last.actor) == (2, 1, "rollback guard")


def test_rollback_after_re_promoting_the_champion_goes_to_the_one_before_it(
    registry: Registry, champion: Version
) -> None:
    # "Make the champion before the current one champion again": repeating a promotion
    # (say, a retried decision) does not make the current champion its own predecessor.
    _register(registry)
    registry.promote(MODEL, 2, ACTOR, "better")
    registry.promote(MODEL, 2, ACTOR, "better (retried)")

    restored = registry.rollback(MODEL, ACTOR, "errors up")

    assert restored == champion.version
    assert registry.aliases(MODEL)[CHAMPION] == champion.version


def test_rollback_without_an_earlier_champion_raises(
    registry: Registry, announced: Announcements
) -> None:
    _register(registry)
    _register(registry)

    with pytest.raises(RegistryError, match="no earlier champion"):
        registry.rollback(MODEL, ACTOR, "nothing deployed yet")

    registry.set_alias(MODEL, CHALLENGER, 2, ACTOR, "a challenger is not a champion")
    with pytest.raises(RegistryError, match="no earlier champion"):
        registry.rollback(MODEL, ACTOR, "only a challenger")

    registry.promote(MODEL, 1, ACTOR, "the first champion")
    history, calls = registry.history(MODEL), list(announced.calls)
    with pytest.raises(RegistryError, match="no earlier champion"):
        registry.rollback(MODEL, ACTOR, "nothing before the first")

    assert registry.aliases(MODEL) == {CHAMPION: 1, CHALLENGER: 2}
    assert registry.history(MODEL) == history
    assert announced.calls == calls


def test_unknown_alias_version_model_or_flavor_raise_registry_error(
    registry: Registry, announced: Announcements, champion: Version
) -> None:
    history, audit = registry.history(MODEL), registry.audit_log(MODEL)
    calls = list(announced.calls)

    with pytest.raises(RegistryError, match="unknown alias 'canary'"):
        registry.set_alias(MODEL, "canary", 1, ACTOR, "no such alias")
    with pytest.raises(RegistryError, match="no version 99"):
        registry.promote(MODEL, 99, ACTOR, "no such version")
    with pytest.raises(RegistryError, match="no version 99"):
        registry.set_alias(MODEL, CHALLENGER, 99, ACTOR, "no such version")
    with pytest.raises(RegistryError, match="no version 99"):
        registry.get(MODEL, 99)
    with pytest.raises(RegistryError, match="no version 99"):
        registry.load(MODEL, 99)
    with pytest.raises(RegistryError, match="no version 1 of model 'ghost'"):
        registry.get("ghost", 1)
    with pytest.raises(RegistryError, match="no version 1 of model 'ghost'"):
        registry.promote("ghost", 1, ACTOR, "no such model")
    with pytest.raises(RegistryError, match="unknown flavor 'onnx'"):
        registry.register(MODEL, "onnx", _river_model(), {}, _lineage())

    assert registry.aliases(MODEL) == {CHAMPION: champion.version}
    assert registry.aliases("ghost") == {}
    assert [v.version for v in registry.versions(MODEL)] == [1]
    assert registry.history(MODEL) == history
    assert registry.audit_log(MODEL) == audit
    assert announced.calls == calls
    assert list(_artifacts(registry).iterdir()) == [_artifact(registry, champion)]


def test_the_audit_log_records_registrations_alias_changes_and_decisions(
    registry: Registry,
) -> None:
    first_lineage = _lineage(trainer="trainer one")
    second_lineage = _lineage(trainer="trainer two", code_version="def5678")
    registry.register(MODEL, RIVER, _river_model(), {"accuracy": 0.8}, first_lineage)
    registry.promote(MODEL, 1, "gate", "no champion yet")
    registry.register(MODEL, SKLEARN, _sklearn_pipeline(), {"accuracy": 0.9}, second_lineage)
    evidence = {"action": "challenger", "p_value": 0.07, "pairs": 812, "test": "mcnemar"}
    registry.record_decision(MODEL, 2, "live gate", evidence)
    registry.set_alias(MODEL, CHALLENGER, 2, "live gate", "not significant yet")
    registry.promote(MODEL, 2, ACTOR, "manual override")
    _register(registry, "another-model")

    log = registry.audit_log(MODEL)

    assert [(e["action"], e["actor"], e["version"], e["details"]) for e in log] == [
        ("register", "trainer one", 1, asdict(first_lineage)),
        ("set champion", "gate", 1, {"previous": None, "reason": "no champion yet"}),
        ("register", "trainer two", 2, asdict(second_lineage)),
        ("decision", "live gate", 2, evidence),
        ("set challenger", "live gate", 2, {"previous": None, "reason": "not significant yet"}),
        ("set champion", ACTOR, 2, {"previous": 1, "reason": "manual override"}),
        (
            "clear challenger",
            ACTOR,
            None,
            {"previous": 2, "reason": "promoted to champion: manual override"},
        ),
    ]
    assert [e["at"] for e in log] == sorted(e["at"] for e in log)
    assert [e["action"] for e in registry.audit_log("another-model")] == ["register"]


# --- concurrency --------------------------------------------------------------------


def _register_concurrently(
    root: str, worker: int, start: Barrier, results: Queue[tuple[int, list[int]]]
) -> None:
    """One process: open the shared registry, wait for the others, register PER_WORKER."""
    registry = Registry(Path(root), KEY)
    start.wait(timeout=JOIN_TIMEOUT_S)
    versions = [
        registry.register(
            SHARED,
            RIVER,
            {"worker": worker, "index": index},
            {"index": float(index)},
            _lineage(trainer=f"worker {worker}"),
        ).version
        for index in range(PER_WORKER)
    ]
    results.put((worker, versions))


def test_concurrent_registrations_from_four_processes_get_forty_distinct_versions(
    tmp_path: Path,
) -> None:
    root = tmp_path / "registry"
    context = multiprocessing.get_context("spawn")
    start = context.Barrier(WORKERS)
    results: Queue[tuple[int, list[int]]] = context.Queue()
    processes = [
        context.Process(target=_register_concurrently, args=(str(root), w, start, results))
        for w in range(WORKERS)
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join(JOIN_TIMEOUT_S)
    assert [p.exitcode for p in processes] == [0] * WORKERS
    got = dict(results.get(timeout=JOIN_TIMEOUT_S) for _ in processes)
    results.close()
    results.join_thread()

    registry = Registry(root, KEY)
    records = registry.versions(SHARED)
    assert [r.version for r in records] == list(range(1, WORKERS * PER_WORKER + 1))
    assert sorted(v for versions in got.values() for v in versions) == [r.version for r in records]
    for worker, versions in got.items():
        assert versions == sorted(versions)  # each process sees its own versions increase
        loaded = [registry.load(SHARED, v) for v in versions]
        assert loaded == [{"worker": worker, "index": i} for i in range(PER_WORKER)]
        assert {registry.get(SHARED, v).created_by for v in versions} == {f"worker {worker}"}
        assert [registry.get(SHARED, v).metrics for v in versions] == [
            {"index": float(i)} for i in range(PER_WORKER)
        ]
    assert len({r.artifact for r in records}) == WORKERS * PER_WORKER
    assert sorted(p.name for p in _artifacts(registry).iterdir()) == sorted(
        r.artifact for r in records
    )
    assert len(registry.audit_log(SHARED)) == WORKERS * PER_WORKER


# --- tampering ----------------------------------------------------------------------


@pytest.mark.parametrize("reachable", [False, True], ids=["in-place", "re-pointed"])
def test_a_flipped_payload_byte_is_refused_before_unpickling(
    registry: Registry, champion: Version, unpickled: list[bytes], reachable: bool
) -> None:
    path = _artifact(registry, champion)
    blob = bytearray(path.read_bytes())
    header_length = blob.index(b"\n") + 1
    blob[header_length + len(_payload(bytes(blob))) // 2] ^= 0x01

    if reachable:
        # Past the address check (see _plant): the header's own SHA-256 catches it.
        _plant(registry, MODEL, champion.version, bytes(blob))
        match = "SHA-256 does not match"
    else:
        path.write_bytes(bytes(blob))
        match = "does not match its address"

    _assert_refused(registry, MODEL, champion.version, match)
    assert unpickled == []
    assert registry.alias(MODEL, CHAMPION) == registry.get(MODEL, champion.version)


def test_the_malicious_pickle_used_below_really_runs_code_when_unpickled(tmp_path: Path) -> None:
    # The control for the tests below: this payload does create its file when unpickled,
    # so its absence after a refused load means it was never deserialised.
    marker = tmp_path / "control"
    pickle.loads(_malicious_pickle(marker))
    assert marker.exists()


@pytest.mark.parametrize(
    ("wrapping", "match"),
    [
        ("unsigned", "not a sealed Eddy artifact"),
        ("signed with another key", "HMAC does not match"),
        ("header copied from a genuine artifact", "SHA-256 does not match"),
        ("genuine HMAC, recomputed SHA-256", "HMAC does not match"),
    ],
)
def test_a_malicious_pickle_without_a_valid_signature_never_runs(
    registry: Registry, champion: Version, tmp_path: Path, wrapping: str, match: str
) -> None:
    marker = tmp_path / "pwned"
    payload = _malicious_pickle(marker)
    genuine = _artifact(registry, champion).read_bytes()
    header = orjson.loads(genuine.partition(b"\n")[0])
    if wrapping == "unsigned":
        blob = payload
    elif wrapping == "signed with another key":
        blob = sign(payload, OTHER_KEY, PICKLE)
    elif wrapping == "header copied from a genuine artifact":
        blob = genuine.partition(b"\n")[0] + b"\n" + payload
    else:
        header["sha256"] = hashlib.sha256(payload).hexdigest()
        blob = orjson.dumps(header) + b"\n" + payload
    _plant(registry, MODEL, champion.version, blob)

    _assert_refused(registry, MODEL, champion.version, match)
    assert not marker.exists()
    assert registry.aliases(MODEL) == {CHAMPION: champion.version}


def test_a_malicious_pickle_registered_under_another_key_never_runs(
    registry: Registry, champion: Version, tmp_path: Path
) -> None:
    # No row editing needed: a second registry on the same root with another key writes
    # a well-addressed artifact; only the HMAC tells it apart.
    marker = tmp_path / "pwned"
    impostor = Registry(registry.root, OTHER_KEY)
    planted = impostor.register(MODEL, RIVER, Trap(marker), {}, _lineage(trainer="mallory"))
    assert not marker.exists()  # registering pickles it, which runs nothing

    _assert_refused(registry, MODEL, planted.version, "HMAC does not match")
    assert not marker.exists()
    assert registry.alias(MODEL, CHAMPION) == champion


def test_a_registry_opened_with_another_key_refuses_every_artifact(
    registry: Registry, champion: Version, unpickled: list[bytes]
) -> None:
    batch = registry.register(MODEL, SKLEARN, _sklearn_pipeline(), {}, _lineage())
    other = Registry(registry.root, OTHER_KEY)

    for version in (champion.version, batch.version):
        _assert_refused(other, MODEL, version, "HMAC does not match")
    assert unpickled == []
    assert other.alias(MODEL, CHAMPION) == champion


@pytest.mark.parametrize("flavor", [RIVER, SKLEARN])
def test_an_unsigned_artifact_is_refused_before_deserialising(
    registry: Registry, unpickled: list[bytes], flavor: str
) -> None:
    if flavor == RIVER:
        obj: Any = _river_model()
        raw = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    else:
        obj = _sklearn_pipeline()
        raw = skops.io.dumps(obj)
    record = registry.register(MODEL, flavor, obj, {}, _lineage())
    registry.promote(MODEL, record.version, ACTOR, "serving")

    # Unsigned bytes in place of the artifact file: the address check refuses them first.
    _artifact(registry, record).write_bytes(raw)
    _assert_refused(registry, MODEL, record.version, "does not match its address")
    # The same bytes at their own address with the row re-pointed (see _plant): the
    # address check passes, and the missing signature header is what refuses them.
    _plant(registry, MODEL, record.version, raw)
    _assert_refused(registry, MODEL, record.version, "not a sealed Eddy artifact")

    assert unpickled == []
    assert registry.aliases(MODEL) == {CHAMPION: record.version}


@pytest.mark.parametrize(
    ("flavor", "codec", "payload"),
    [
        (SKLEARN, PICKLE, lambda: pickle.dumps(_river_model())),
        (RIVER, SKOPS, lambda: skops.io.dumps(_sklearn_pipeline())),
    ],
    ids=["pickle-as-sklearn", "skops-as-river"],
)
def test_a_correctly_signed_artifact_of_the_wrong_codec_is_refused(
    registry: Registry, unpickled: list[bytes], flavor: str, codec: str, payload: Any
) -> None:
    record = registry.register(
        MODEL, flavor, _river_model() if flavor == RIVER else _sklearn_pipeline(), {}, _lineage()
    )
    _plant(registry, MODEL, record.version, sign(payload(), KEY, codec))

    _assert_refused(registry, MODEL, record.version, f"expected a .* artifact, got '{codec}'")
    assert unpickled == []


def test_a_signed_skops_artifact_with_a_type_outside_the_allow_list_is_refused(
    registry: Registry,
) -> None:
    record = registry.register(MODEL, SKLEARN, _sklearn_pipeline(), {}, _lineage())
    registry.promote(MODEL, record.version, ACTOR, "serving")
    smuggled = {"model": _sklearn_pipeline(), "extra": Tripwire()}
    blob = sign(skops.io.dumps(smuggled), KEY, SKOPS)  # a valid signature under our key
    _plant(registry, MODEL, record.version, blob)
    built = Tripwire.built
    name = f"{Tripwire.__module__}.{Tripwire.__qualname__}"

    _assert_refused(registry, MODEL, record.version, f"outside the allow-list.*{re.escape(name)}")
    assert Tripwire.built == built
    assert registry.alias(MODEL, CHAMPION) == registry.get(MODEL, record.version)


# --- identity -----------------------------------------------------------------------


def test_trainer_identity_names_the_role_user_host_and_process() -> None:
    identity = trainer_identity("eddy retrain")

    assert identity == (
        f"eddy retrain on {getpass.getuser()}@{socket.gethostname()} (pid {os.getpid()})"
    )
    assert re.fullmatch(r"eddy retrain on [^@\s]+@\S+ \(pid [1-9]\d*\)", identity)
