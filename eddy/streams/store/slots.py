"""Redis Cluster hash slots: which slot a key lands in, and keys to reach any slot.

A Redis Cluster splits its keys over 16,384 slots by the CRC16 of the key's hash tag
(the part between the first ``{`` and the ``}`` after it, when not empty; else the whole
key). A command or Lua script that names several keys is refused unless they all share
one slot, so Eddy's batches are split per slot (:func:`by_slot`) and a key that must sit
beside others (a per-slot counter, a per-node watermark) takes its tag from
:func:`slot_tag`.

>>> slot_of("eddy.features:3f2a:{u1}") == slot_of("eddy.snapshot:{u1}")
True
>>> slot_of("{" + slot_tag(42) + "}")
42
>>> by_slot(["a{x}", "b{y}", "c{x}"]) == {slot_of("x"): [0, 2], slot_of("y"): [1]}
True
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence

from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

SLOTS = REDIS_CLUSTER_HASH_SLOTS


def slot_of(key: str) -> int:
    """The hash slot of ``key``, as the cluster computes it (hash tag aware)."""
    return int(key_slot(key.encode()))


def by_slot(keys: Sequence[str]) -> dict[int, list[int]]:
    """The positions of ``keys`` grouped by slot, each group in the keys' order."""
    groups: dict[int, list[int]] = {}
    for position, key in enumerate(keys):
        groups.setdefault(slot_of(key), []).append(position)
    return groups


def slot_tag(slot: int) -> str:
    """A hash tag (no braces) whose keys land in ``slot``: the first hexadecimal
    number that hashes there. Found once for all slots (about 0.3 s), then looked up."""
    return _slot_tags()[slot]


@functools.cache
def _slot_tags() -> tuple[str, ...]:
    tags: dict[int, str] = {}
    number = 0
    while len(tags) < SLOTS:
        tag = format(number, "x")
        tags.setdefault(slot_of(tag), tag)
        number += 1
    return tuple(tags[slot] for slot in range(SLOTS))


def script_calls(keys: Sequence[str], cluster: bool) -> list[list[int]]:
    """The positions of ``keys`` each script call gets: all of them in one call on a
    single Redis; one call per slot on a cluster, which refuses scripts across slots.

    >>> script_calls(["a{x}", "b{y}", "c{x}"], cluster=False)
    [[0, 1, 2]]
    >>> sorted(script_calls(["a{x}", "b{y}", "c{x}"], cluster=True))
    [[0, 2], [1]]
    """
    if not keys:
        return []
    if not cluster:
        return [list(range(len(keys)))]
    return list(by_slot(keys).values())


def lowest_slots(owners: Mapping[int, str]) -> list[int]:
    """Per node (``owners``: slot → the name of the master serving it), the lowest slot
    it serves, in slot order: where a key that must live on that node is tagged.

    >>> lowest_slots({0: "a", 1: "a", 5461: "b", 9000: "b", 10923: "c"})
    [0, 5461, 10923]
    """
    lowest: dict[str, int] = {}
    for slot, node in owners.items():
        if slot < lowest.get(node, SLOTS):
            lowest[node] = slot
    return sorted(lowest.values())
