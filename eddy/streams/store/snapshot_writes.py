"""Feature snapshots queued on a caller's pipeline, to share its one round trip.

:meth:`~eddy.streams.store.snapshots.SnapshotStore.record` sends a batch's snapshots in a
round trip of its own (one script call). The prediction service writes its request log
in a round trip it must wait for before answering; queued here, the snapshots travel
with it: the same work in one command, which creates each snapshot that does not exist
yet, with its expiry, and adds the number created to the counter, in Redis, so the count
stays exact (a snapshot already recorded under the same id is neither replaced nor
counted again). Same keys, values and counter: ``SnapshotStore`` reads what this writes.
The script is sent as ``EVAL`` (Redis caches it by its digest): a registered script
queued on a pipeline costs a ``SCRIPT EXISTS`` round trip of its own at every execute.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from eddy.streams.store import keys
from eddy.streams.store.snapshots import Snapshot

MS_PER_S = 1000

# KEYS: the snapshots' keys, then the counter's; ARGV: the expiry in milliseconds, then
# each snapshot's value in the order of its key.
_CREATE_AND_COUNT = """
local counter = KEYS[#KEYS]
local created = 0
for i = 1, #KEYS - 1 do
  if redis.call('SET', KEYS[i], ARGV[i + 1], 'PX', ARGV[1], 'NX') then
    created = created + 1
  end
end
if created > 0 then
  redis.call('INCRBY', counter, created)
end
return created
"""


def queue_snapshots(
    pipe: Any, prefix: str, ttl_s: int, snapshots: Sequence[tuple[str, Snapshot]]
) -> None:
    """Queue the snapshots (by record id) on ``pipe``, whose reply is the number created.

    Nothing is queued when there are none or the label window ``ttl_s`` is 0 (no
    snapshots are kept; Redis refuses an expiry of 0)."""
    if not snapshots or not ttl_s:
        return
    names = [keys.snapshot(prefix, record_id) for record_id, _ in snapshots]
    pipe.eval(
        _CREATE_AND_COUNT,
        len(names) + 1,
        *names,
        keys.snapshots_recorded(prefix),
        ttl_s * MS_PER_S,
        *(snapshot.as_json() for _, snapshot in snapshots),
    )
