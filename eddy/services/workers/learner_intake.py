"""The learner's decoders of its three topics, in a module its reader process imports
(:mod:`eddy.services.ops.reader_process`): nothing of River, pandas or scikit-learn, which
would cost the reader process seconds of start-up on a machine its services share.

A training example or a label the model would raise on while learning is refused (dead-
lettered): one message must never stop the loop that learns every other. What the model
learns comes with the decoders (:class:`~eddy.streams.learning.labels.LabelRule`), since
the reader process has no model. A training example comes with the digest the learner's
dedup memory keeps of its id (:func:`~eddy.streams.store.recent_ids.digest`), computed
here: in the reader process, off the learning one.
"""

from __future__ import annotations

import functools
from typing import Any

from eddy.services.ops.poll_loop import Decoder
from eddy.streams.learning.intake import Example, decode_example
from eddy.streams.learning.labels import Label as LabelValue
from eddy.streams.learning.labels import LabelRule, refusal
from eddy.streams.messages.contracts import Label, ServedAnswers
from eddy.streams.messages.validation import InvalidMessage, decode
from eddy.streams.store.recent_ids import digest

# A decoded training example and the digest of its id. A plain tuple: one crosses the
# reader process's pipe per example, and a tuple pickles cheapest.
DigestedExample = tuple[Example, int]


def learner_decoders(topics: tuple[str, str, str], rule: LabelRule) -> dict[str, Decoder]:
    """The decoders of the examples, labels and served-answers ``topics``, refusing what
    ``rule`` says the model cannot learn. Picklable through functools.partial."""
    examples, labels, served = topics
    return {
        examples: functools.partial(_decode_example, rule),
        labels: functools.partial(_decode_label, rule),
        served: _decode_served,
    }


def _decode_example(rule: LabelRule, record: Any) -> DigestedExample:
    example = decode_example(record.value)
    _check_label(rule, example.label)
    return example, digest(example.example_id)


def _decode_label(rule: LabelRule, record: Any) -> Label:
    label = decode(Label, record.value)
    _check_label(rule, label.label)
    return label


def _decode_served(record: Any) -> ServedAnswers:
    return decode(ServedAnswers, record.value)


def _check_label(rule: LabelRule, label: LabelValue) -> None:
    refused = refusal(rule, label)
    if refused is not None:
        raise InvalidMessage("label_not_learnable", refused)
