"""Did the world change, or did the model? The question a concept detection must answer.

An online model's prequential error can rise without any change in the data: a tree's
first splits, for one, can make it worse for a while before it gets better. A detector
watching that error cannot tell the two apart, and raising a concept alert (and a
retrain) for a model's own growing pains is a false alarm. What tells them apart is a
model that did not change: the model **as it was before the change point**, scored on
the examples since. If the world changed, that frozen model is wrong where it used to be
right, and its error rises with the live one's. If only the model changed, the frozen
model does as well as it always did.

:class:`ModelHistory` keeps copies of the model (their pickles) every
:data:`SNAPSHOT_EVERY` examples and the recent examples themselves;
:meth:`ModelHistory.attributes` answers for one detection. The rule: the frozen model's
error on the examples from the change point to the detection must reach
:data:`WORLD_CHANGE_RATIO` times the error before the change (the detector's
``baseline``). On STAGGER (seeds 0 to 9 and 42), the false cuts of the first splits left
the frozen model at 0.9 to 1.3 times its baseline, the real changes at 5 times or more,
and a gradual drift's at 1.7 to 2.5 times. With no copy from before the change point (a
history shorter than the change's age) there is nothing to judge by, and the detection
stands, as it would without this check.

Pure and picklable: the learner's checkpoint seals the history, so a replay from a
checkpoint judges every detection as the uninterrupted run did. Pickling 5,000 examples
took 1.9 ms, most of a checkpoint, at every checkpoint (one per thousand examples): the
kept examples are pickled :data:`PACKED_BLOCK` at a time, each full block once, and a
checkpoint copies those bytes.

>>> from eddy.streams.learning.models import make_model
>>> def world(n, flip_after):  # y is x > 0, until the world flips it
...     x = {"x": 1.0 if n % 2 else -1.0}
...     return x, (x["x"] > 0) != (n > flip_after)
>>> def history_of(flip_after):
...     history = ModelHistory("classification", every=50, memory=400)
...     model = make_model("logistic", 1)
...     for n in range(1, 301):
...         x, y = world(n, flip_after)
...         model.learn(x, y)
...         history.learned(model, x, y)
...     return history
>>> history_of(flip_after=200).attributes(change=200, detected=300, baseline=0.05)
True
>>> history_of(flip_after=10_000).attributes(change=200, detected=300, baseline=0.05)
False
"""

from __future__ import annotations

import collections
import itertools
import pickle
from collections.abc import Sequence
from typing import Any

from eddy.streams.drift.served import prediction_error
from eddy.streams.learning.models import Label
from eddy.streams.store.serialization import unpickle_nested

SNAPSHOT_EVERY = 500
"""Examples between two kept copies of the model: a change point falls at most this
many examples after the copy that judges it."""
MEMORY = 5_000
"""Examples (and copies of the model over them) kept; as far back as ADWIN's window
usually reaches at the rates Eddy sees."""
WORLD_CHANGE_RATIO = 1.5
"""How much worse than before the change the frozen model must be for the change to be
the world's (see the module's docstring for the figures behind it)."""
PACKED_BLOCK = 500
"""Examples pickled together once their block is full (examples 1 to 500, 501 to 1000...
as counted by ``seen``): a checkpoint pickles at most this many examples afresh."""

Example = tuple[dict[str, float], Label]


def _frozen(model: Any) -> bytes:
    """A copy of ``model`` as it is now, as its pickle: a third of a deep copy's time for
    a logistic pipeline, a sixth for a Hoeffding tree, and a checkpoint copies the bytes
    rather than pickling every kept model again. Unpickled only to judge a detection."""
    return pickle.dumps(model, pickle.HIGHEST_PROTOCOL)


class ModelHistory:
    """Copies of an online model and the examples since, to judge its detections."""

    def __init__(self, task: str, every: int = SNAPSHOT_EVERY, memory: int = MEMORY) -> None:
        self.task = task
        self.every = every
        self.seen = 0
        self._examples: collections.deque[Example] = collections.deque(maxlen=memory)
        self._copies: collections.deque[tuple[int, bytes]] = collections.deque(
            maxlen=memory // every + 1
        )
        # Block number -> (where its pickled examples start, as counted by `seen`; them).
        self._packed: dict[int, tuple[int, bytes]] = {}

    def learned(self, model: Any, xn: dict[str, float], y: Label) -> None:
        """After ``model`` learned ``(xn, y)``: keep the example, and a copy of the
        model every :attr:`every` examples."""
        self.seen += 1
        self._examples.append((xn, y))
        if self.seen % self.every == 0:
            self._copies.append((self.seen, _frozen(model)))

    def learned_many(
        self, model: Any, xns: Sequence[dict[str, float]], ys: Sequence[Label]
    ) -> None:
        """After ``model`` learned a mini-batch: the examples, and a copy of the model
        when the batch crossed a multiple of :attr:`every`."""
        crossed = (self.seen + len(xns)) // self.every > self.seen // self.every
        self.seen += len(xns)
        self._examples.extend(zip(xns, ys, strict=True))
        if crossed:
            self._copies.append((self.seen, _frozen(model)))

    def frozen_error(self, change: int, detected: int) -> float | None:
        """The mean error, on examples ``change + 1`` to ``detected`` (counted from 1, as
        :attr:`seen`), of the newest copy that had learned none of them; None when no copy
        is old enough, or those examples are no longer kept."""
        kept = next((m for n, m in reversed(self._copies) if n <= change), None)
        first_kept = self.seen - len(self._examples) + 1
        if kept is None or change + 1 < first_kept or detected <= change:
            return None
        frozen = unpickle_nested(kept)
        start, stop = change + 1 - first_kept, min(detected, self.seen) - first_kept + 1
        errors = [
            prediction_error(self.task, y, frozen.predict(xn)[0])
            for xn, y in list(self._examples)[start:stop]
        ]
        known = [e for e in errors if e is not None]
        return sum(known) / len(known) if known else None

    def attributes(self, change: int, detected: int, baseline: float | None) -> bool:
        """Whether a rise detected at example ``detected``, beginning after example
        ``change``, is the world's (True) rather than the model's own (False). Without
        a baseline or a frozen model to judge by, True: the detection stands."""
        if baseline is None:
            return True
        frozen = self.frozen_error(change, detected)
        return frozen is None or (frozen > 0 and frozen >= WORLD_CHANGE_RATIO * baseline)

    def __getstate__(self) -> dict[str, Any]:
        """The kept examples as the pickles of their full blocks (each made once, when a
        checkpoint first meets it) and the examples after the last full block."""
        first = self.seen - len(self._examples) + 1  # `seen`'s count of the oldest kept
        full = self.seen // PACKED_BLOCK  # blocks 0 .. full - 1 are full
        oldest = (first - 1) // PACKED_BLOCK
        self._packed = {k: packed for k, packed in self._packed.items() if k >= oldest}
        for block in range(oldest, full):
            if block not in self._packed:
                # Its part still kept: the whole block unless it is partly forgotten.
                start = max(first, block * PACKED_BLOCK + 1)
                stop = (block + 1) * PACKED_BLOCK
                kept = itertools.islice(self._examples, start - first, stop - first + 1)
                self._packed[block] = (start, pickle.dumps(list(kept), pickle.HIGHEST_PROTOCOL))
        tail_start = max(first, full * PACKED_BLOCK + 1)
        state = {k: v for k, v in self.__dict__.items() if k not in ("_examples", "_packed")}
        return state | {
            "memory": self._examples.maxlen,
            "packed": [self._packed[block] for block in range(oldest, full)],
            "tail": list(itertools.islice(self._examples, tail_start - first, None)),
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        # A checkpoint from before 2026-12-06 kept the copies as models: pickled now.
        copies = state["_copies"]
        state["_copies"] = collections.deque(
            ((n, m if isinstance(m, bytes) else _frozen(m)) for n, m in copies),
            maxlen=copies.maxlen,
        )
        if "_examples" in state:  # a checkpoint from before 2026-12-05 pickled the deque
            self.__dict__.update(state, _packed={})
            return
        packed, tail, memory = state.pop("packed"), state.pop("tail"), state.pop("memory")
        self.__dict__.update(state)
        examples: list[Example] = []
        for _, data in packed:
            examples += unpickle_nested(data)
        # A block packed before its first examples were forgotten starts earlier than the
        # oldest kept: the memory's bound drops those again.
        self._examples = collections.deque(examples + tail, maxlen=memory)
        self._packed = {(start - 1) // PACKED_BLOCK: (start, data) for start, data in packed}
