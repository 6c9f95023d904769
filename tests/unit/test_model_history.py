"""A ModelHistory restored from its pickle holds exactly what the original held, however
its examples were packed into blocks by the checkpoints before."""

from __future__ import annotations

import collections
import pickle
import random

import pytest

from eddy.streams.drift.attribution import PACKED_BLOCK, ModelHistory
from eddy.streams.learning.models import make_model


def _examples(start: int, count: int) -> list[tuple[dict[str, float], bool]]:
    return [({"x": float(i), "y": i / 7}, i % 3 == 0) for i in range(start, start + count)]


def _held(history: ModelHistory) -> tuple[int, list[object], list[int]]:
    return history.seen, list(history._examples), [n for n, _ in history._copies]


@pytest.mark.parametrize("memory", [PACKED_BLOCK - 1, 1234, 5000])
def test_a_history_restored_from_any_checkpoint_holds_and_goes_on_as_the_original(
    memory: int,
) -> None:
    rng = random.Random(memory)
    history = ModelHistory("classification", every=100, memory=memory)
    model = {"weights": [0.0]}
    learned = 0
    for _ in range(60):
        batch = _examples(learned, rng.choice([1, 7, 250, 499, 500, 777]))
        if rng.random() < 0.5:
            history.learned_many(model, [x for x, _ in batch], [y for _, y in batch])
        else:
            for x, y in batch:
                history.learned(model, x, y)
        learned += len(batch)
        if rng.random() < 0.4:  # a checkpoint packs what is full by now
            restored = pickle.loads(pickle.dumps(history))
            assert _held(restored) == _held(history)
            assert len(restored._examples) == min(memory, learned)
            more = _examples(learned, 600)
            for copy in (restored, pickle.loads(pickle.dumps(history))):
                copy.learned_many(model, [x for x, _ in more], [y for _, y in more])
            assert _held(restored) == _held(pickle.loads(pickle.dumps(restored)))
    assert history.seen == learned


def test_a_full_block_is_pickled_once_and_the_pickle_reused() -> None:
    history = ModelHistory("classification", every=100, memory=5000)
    batch = _examples(0, 3 * PACKED_BLOCK + 10)
    history.learned_many({}, [x for x, _ in batch], [y for _, y in batch])
    first, second = history.__getstate__(), history.__getstate__()
    assert len(first["packed"]) == 3
    assert len(first["tail"]) == 10
    assert all(a[1] is b[1] for a, b in zip(first["packed"], second["packed"], strict=True))


def test_a_checkpoint_from_before_the_blocks_restores() -> None:
    history = ModelHistory("classification", every=100, memory=50)
    batch = _examples(0, 80)
    history.learned_many({}, [x for x, _ in batch], [y for _, y in batch])
    old_state = {k: v for k, v in vars(history).items() if k != "_packed"}
    restored = ModelHistory.__new__(ModelHistory)
    restored.__setstate__(old_state)
    assert _held(restored) == _held(history)
    assert _held(pickle.loads(pickle.dumps(restored))) == _held(history)


def test_the_copies_are_the_model_as_it_was_and_a_checkpoint_of_models_restores() -> None:
    """Copies are kept as pickles; one from before that (the model objects themselves)
    restores to the same copies, and each is the model as it was when copied."""
    history = ModelHistory("classification", every=100, memory=500)
    model = {"weights": [0.0]}
    for i, (x, y) in enumerate(_examples(0, 300)):
        model["weights"].append(float(i))  # the live model goes on changing
        history.learned(model, x, y)
    kept = {n: pickle.loads(data) for n, data in history._copies}
    assert {n: len(m["weights"]) for n, m in kept.items()} == {100: 101, 200: 201, 300: 301}
    old_state = history.__getstate__()
    old_state["_copies"] = collections.deque(
        ((n, kept[n]) for n, _ in history._copies), maxlen=history._copies.maxlen
    )
    restored = ModelHistory.__new__(ModelHistory)
    restored.__setstate__(old_state)
    assert list(restored._copies) == list(history._copies)
    assert restored._copies.maxlen == history._copies.maxlen


def test_a_checkpoint_from_before_the_blocks_with_models_judges_as_the_original() -> None:
    """The oldest checkpoints (the deque of examples, copies as models) restore to
    pickled copies, and the frozen model judges a detection as the original history did."""
    history = ModelHistory("classification", every=50, memory=400)
    model = make_model("logistic", 1)
    for n in range(1, 301):
        x, y = {"x": 1.0 if n % 2 else -1.0}, (n % 2 == 1) != (n > 200)
        model.learn(x, y)
        history.learned(model, x, y)
    old_state = {k: v for k, v in vars(history).items() if k != "_packed"}
    old_state["_copies"] = collections.deque(
        ((n, pickle.loads(data)) for n, data in history._copies), maxlen=history._copies.maxlen
    )
    restored = ModelHistory.__new__(ModelHistory)
    restored.__setstate__(old_state)
    assert all(isinstance(data, bytes) for _, data in restored._copies)
    judged = history.frozen_error(change=200, detected=300)
    assert judged is not None
    assert judged > 0.5
    assert restored.frozen_error(change=200, detected=300) == judged
    assert pickle.loads(pickle.dumps(restored)).frozen_error(change=200, detected=300) == judged
