"""Artifacts sealed before the package layout moved (``streams.<module>``) still load."""

from __future__ import annotations

import pickle

import pytest

from eddy.streams.learning.evaluation import CLASSIFICATION, PrequentialMetrics
from eddy.streams.store.serialization import MOVED_MODULES, IntegrityError, sign, unseal

KEY = b"k"


def sealed_under_old_name(obj: object, old_module: str) -> bytes:
    """``obj`` pickled as the flat layout would have named its class's module."""
    payload = pickle.dumps(obj, protocol=2)  # GLOBAL opcodes name the module in plain text
    new_module = type(obj).__module__.encode()
    assert new_module in payload
    return sign(payload.replace(new_module, old_module.encode()), KEY, "pickle")


def test_an_object_pickled_under_its_old_module_loads_as_the_same_class() -> None:
    metrics = PrequentialMetrics(CLASSIFICATION, window=10)
    metrics.update(1, 1, 0.9)
    metrics.update(0, 1, 0.8)
    loaded = unseal(sealed_under_old_name(metrics, "streams.evaluation"), KEY)
    assert type(loaded) is PrequentialMetrics
    assert loaded.report() == metrics.report()


def test_every_moved_module_exists_under_its_new_name() -> None:
    import importlib

    for new in MOVED_MODULES.values():
        importlib.import_module(new)


def test_an_unknown_old_module_still_fails_loudly() -> None:
    payload = pickle.dumps(PrequentialMetrics(CLASSIFICATION, window=10), protocol=2).replace(
        b"eddy.streams.learning.evaluation", b"streams.nowhere"
    )
    with pytest.raises(IntegrityError, match="lacks"):
        unseal(sign(payload, KEY, "pickle"), KEY)
    with pytest.raises(IntegrityError):
        unseal(payload, KEY)


def test_a_learner_checkpoint_sealed_by_the_old_learner_process_loads() -> None:
    from eddy.streams.learning.checkpoints import LearnerState
    from eddy.streams.learning.learner import Learner, LearnerConfig
    from eddy.streams.store.recent_ids import RecentIds

    state = LearnerState(Learner(LearnerConfig(model="m")), RecentIds(10), {("t", 0): 7})
    payload = pickle.dumps(state, protocol=2)
    new = b"ceddy.streams.learning.checkpoints\nLearnerState\n"
    assert new in payload
    old = payload.replace(new, b"cstreams.learner_worker\nLearnerState\n")
    loaded = unseal(sign(old, KEY, "pickle"), KEY)
    assert type(loaded) is LearnerState
    assert loaded.offsets == {("t", 0): 7}
