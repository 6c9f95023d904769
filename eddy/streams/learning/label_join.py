"""A late label joined to the snapshot of what was served: one training example.

The learner joins labels live and the backtest replays the join from the topics; both
build the example here, so a backtest learns from exactly what the deployment learns
from. The features are the snapshot's (what the model saw when it answered, never the
entity's features at label time: no leakage), the example's time is the snapshot's, and
its source is the label's record.

>>> from datetime import UTC, datetime
>>> from eddy.streams.messages.contracts import Label
>>> label = Label(event_id="e1", label=True, event_time=datetime(2026, 1, 1, 0, 1, tzinfo=UTC))
>>> served = Snapshot("u1", datetime(2026, 1, 1, tzinfo=UTC).timestamp(), {"amount": 3.0})
>>> example, learned_at = joined_example(
...     "e1", label, served, Position("labels", 0, 7, 0.0), feature_set="f1"
... )
>>> example.features, example.feature_set, example.source.offset, learned_at.event_time == served.at
({'amount': 3.0}, 'f1', 7, True)
"""

from __future__ import annotations

from datetime import UTC, datetime

from eddy.streams.learning.learner import Position
from eddy.streams.messages.contracts import Label, SourceOffset, TrainingExample
from eddy.streams.store.snapshots import Snapshot


def joined_example(
    example_id: str, label: Label, snapshot: Snapshot, label_at: Position, *, feature_set: str
) -> tuple[TrainingExample, Position]:
    """The training example, and where it is learned: at the label's record, at the
    time the snapshot was taken (the example's place in the stream is when it was served).

    ``feature_set``: the fingerprint of the deployment's features, whose serving vector
    the snapshot holds; the example carries it into the retraining window and lineage."""
    example = TrainingExample(
        example_id=example_id,
        entity_id=snapshot.entity_id,
        event_time=datetime.fromtimestamp(snapshot.at, UTC),
        label=label.label,
        features=snapshot.features,
        feature_set=feature_set,
        source=SourceOffset(
            topic=label_at.topic, partition=label_at.partition, offset=label_at.offset
        ),
    )
    return example, Position(label_at.topic, label_at.partition, label_at.offset, snapshot.at)
