from __future__ import annotations

import pickle
import random

import pytest

from streams.recent_ids import RecentIds


def test_it_remembers_exactly_the_last_limit_ids_like_an_ordered_dict() -> None:
    rng = random.Random(1)
    seen, reference = RecentIds(limit=50), {}
    for _ in range(5_000):
        record_id = f"id-{rng.randint(0, 120)}"
        expected = record_id not in reference
        if expected:
            reference[record_id] = None
            if len(reference) > 50:
                del reference[next(iter(reference))]
        assert seen.add(record_id) is expected
    assert len(seen) == len(reference) == 50
    assert all(record_id in seen for record_id in reference)


@pytest.mark.parametrize("added", [0, 3, 10, 17])
def test_a_pickled_copy_continues_exactly_like_the_original(added: int) -> None:
    original = RecentIds(limit=10)
    for i in range(added):
        original.add(f"a{i}")
    copy = pickle.loads(pickle.dumps(original))
    later = [f"a{i}" for i in range(25)] + [f"b{i}" for i in range(5)]
    assert [copy.add(x) for x in later] == [original.add(x) for x in later]


def test_the_checkpointed_form_is_small() -> None:
    seen = RecentIds(limit=200_000)
    for i in range(200_000):
        seen.add(f"example-{i:08d}-{i * 7919}")
    assert len(pickle.dumps(seen)) < 200_000 * 8 + 10_000


def test_limit_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        RecentIds(limit=0)
