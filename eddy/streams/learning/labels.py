"""Which labels a model learns, decided without the model: light enough (no River,
pandas or scikit-learn) for the learner's reader process, which refuses a label before
the learner would raise on it.

A label of the wrong type raises inside River (its binary ``LogisticRegression`` on
``"yes"``), and one message must never stop the loop that learns every other: such a
label is dead-lettered instead. :func:`eddy.streams.learning.models.label_rule` builds
the rule of a model kind; this module applies it.

>>> rule = LabelRule("logistic", CLASSIFICATION, binary_kind=True, binary_model=None)
>>> refusal(rule, "yes"), refusal(rule, 1)
("model kind 'logistic' learns true/false or 0/1 labels, not 'yes'", None)
"""

from __future__ import annotations

from typing import NamedTuple

CLASSIFICATION = "classification"
REGRESSION = "regression"

Label = bool | int | float | str


class LabelRule(NamedTuple):
    """What decides which labels a model learns: its kind (named in the refusal), what
    it learns (``task``), whether the built-in kind is a binary classifier
    (``binary_kind``) and, for a project's model that is one, what that model is
    (``binary_model``)."""

    kind: str
    task: str | None
    binary_kind: bool
    binary_model: str | None


def refusal(rule: LabelRule, label: Label) -> str | None:
    """Why a model under ``rule`` cannot learn ``label`` (None: it can): a regressor
    learns numbers, a binary classifier true/false or 0/1; what any other classifier of
    a project's accepts is its own business."""
    if rule.task == REGRESSION and isinstance(label, str):
        return f"model kind {rule.kind!r} learns numeric labels, not {label!r}"
    if rule.binary_kind and not binary_label(label):
        return f"model kind {rule.kind!r} learns true/false or 0/1 labels, not {label!r}"
    if rule.binary_model is not None and not binary_label(label):
        return (
            f"the online model {rule.binary_model} is a binary classifier: labels must be "
            f"true/false or 0/1, got {label!r}"
        )
    return None


def binary_label(label: Label) -> bool:
    """Whether a binary classifier learns ``label``: a boolean, or a number equal to 0 or 1."""
    return isinstance(label, bool) or (not isinstance(label, str) and label in (0, 1))
