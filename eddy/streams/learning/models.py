"""Online models by name, or a project's own: the only module that builds River estimators.

Every model speaks River's verbs on plain dicts (``predict_one``, ``predict_proba_one``,
``learn_one``) through :class:`OnlineModel`, which also turns Eddy's feature vectors
(numbers, booleans, strings, missing values) into the numeric dicts River expects:
booleans become 0/1, strings are one-hot encoded as ``name=value``, missing values are
left out. A model learns at most :data:`MAX_MODEL_FEATURES` feature names and
:data:`MAX_CATEGORIES` values per string feature (later ones are encoded as
``name=__other__``), so a producer inventing names or ids cannot grow a model, its
snapshots and the predictor's memory without bound.

A project's ``online_model()`` (any River estimator or pipeline) is wrapped the same way
by :func:`wrap_model`, as kind :data:`PROJECT_KIND`: its task follows from what it is
(a River classifier or regressor), and it learns one example at a time.

>>> model = make_model("logistic")
>>> for i in range(200):
...     model.learn_one({"x": float(i % 2), "country": "NL"}, i % 2 == 1)
>>> model.predict_one({"x": 1.0, "country": "NL"}), model.task
(True, 'classification')
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
from river import base, forest, linear_model, preprocessing, tree

from eddy.streams.features.compute import OTHER_CATEGORY

# The tasks are re-exported: models are where the rest of Eddy looks for them.
from eddy.streams.learning.labels import CLASSIFICATION as CLASSIFICATION
from eddy.streams.learning.labels import REGRESSION as REGRESSION
from eddy.streams.learning.labels import LabelRule, refusal

Label = bool | int | float | str
Features = Mapping[str, bool | int | float | str | None]

MAX_MODEL_FEATURES = 4096
MAX_CATEGORIES = 256
# Column sets whose mini-batch index is kept (one per set of encoded feature names).
COLUMN_INDEXES = 64
# The kind of an online model a project's models.py builds (not one of MODEL_KINDS).
PROJECT_KIND = "project"


@dataclass(frozen=True)
class ModelKind:
    task: str
    build: Callable[[int], Any]
    description: str
    batchable: bool = False  # River's learn_many / predict_*_many work for it
    binary: bool = False  # learns true/false (or 0/1) labels only


MODEL_KINDS: dict[str, ModelKind] = {
    "logistic": ModelKind(
        CLASSIFICATION,
        lambda seed: preprocessing.StandardScaler() | linear_model.LogisticRegression(),
        "binary: StandardScaler | LogisticRegression",
        batchable=True,
        binary=True,
    ),
    "softmax": ModelKind(
        CLASSIFICATION,
        lambda seed: preprocessing.StandardScaler() | linear_model.SoftmaxRegression(),
        "multiclass: StandardScaler | SoftmaxRegression",
    ),
    "hoeffding_adaptive_tree": ModelKind(
        CLASSIFICATION,
        lambda seed: tree.HoeffdingAdaptiveTreeClassifier(seed=seed),
        "binary or multiclass: Hoeffding Adaptive Tree",
    ),
    "adaptive_random_forest": ModelKind(
        CLASSIFICATION,
        lambda seed: forest.ARFClassifier(n_models=10, seed=seed),
        "binary or multiclass: Adaptive Random Forest (10 trees)",
    ),
    "linear_regression": ModelKind(
        REGRESSION,
        lambda seed: preprocessing.StandardScaler() | linear_model.LinearRegression(),
        "regression: StandardScaler | LinearRegression",
        batchable=True,
    ),
}


def numeric(x: Features) -> dict[str, float]:
    """The numeric view of a feature vector that every River model can learn from.

    >>> numeric({"amount": 3, "mobile": True, "country": "NL", "gone": None})
    {'amount': 3.0, 'mobile': 1.0, 'country=NL': 1.0}
    """
    out: dict[str, float] = {}
    for name, value in x.items():
        if value is None:
            continue
        if isinstance(value, str):
            out[one_hot(name, value)] = 1.0
        else:
            out[name] = float(value)
    return out


def cap_categories(xs: Sequence[Features], cap: int = MAX_CATEGORIES) -> list[dict[str, Any]]:
    """``xs`` with each string feature limited to its ``cap`` most frequent values (ties:
    the smaller value); the rest become :data:`OTHER_CATEGORY`. What a batch fit sees.

    >>> cap_categories([{"c": "a"}, {"c": "b"}, {"c": "a"}, {"c": None}], cap=1)
    [{'c': 'a'}, {'c': '__other__'}, {'c': 'a'}, {'c': None}]
    """
    counts: dict[str, Counter[str]] = {}
    for x in xs:
        for name, value in x.items():
            if isinstance(value, str):
                counts.setdefault(name, Counter())[value] += 1
    kept = {
        name: {v for v, _ in sorted(c.items(), key=lambda vc: (-vc[1], vc[0]))[:cap]}
        for name, c in counts.items()
    }
    return [
        {
            name: OTHER_CATEGORY if isinstance(v, str) and v not in kept[name] else v
            for name, v in x.items()
        }
        for x in xs
    ]


def fit_vectors(
    xs: Sequence[Features], max_columns: int = MAX_MODEL_FEATURES
) -> list[dict[str, float]]:
    """What a batch (scikit-learn) fit learns from: :func:`numeric` of
    :func:`cap_categories`, keeping the ``max_columns`` most frequent columns (ties: the
    smaller name). The fit's matrix is dense: without the cap, a window whose examples
    each bring new feature names would be as wide as all of them together. A column
    the fit never saw is ignored when scoring, as any unseen name is.

    >>> fit_vectors([{"a": 1.0, "b": 2.0}, {"a": 3.0, "c": "x"}], max_columns=2)
    [{'a': 1.0, 'b': 2.0}, {'a': 3.0}]
    """
    vectors = [numeric(x) for x in cap_categories(xs)]
    counts = Counter(column for vector in vectors for column in vector)
    if len(counts) <= max_columns:
        return vectors
    ranked = sorted(counts.items(), key=lambda cn: (-cn[1], cn[0]))
    kept = {column for column, _ in ranked[:max_columns]}
    return [{c: v for c, v in vector.items() if c in kept} for vector in vectors]


def encode_for(model: Any, xs: Sequence[Features]) -> list[dict[str, float]]:
    """The numeric vectors ``model`` scores ``xs`` with: an :class:`OnlineModel`'s own
    bounded encoding, or :func:`numeric` where a string a fitted scikit-learn estimator's
    encoder never saw counts as ``__other__`` (as it did when fitted by
    :func:`cap_categories`)."""
    if isinstance(model, OnlineModel):
        return [model.encode(x) for x in xs]
    columns = fitted_columns(model)

    def seen(name: str, value: Any) -> Any:
        unseen = isinstance(value, str) and one_hot(name, value) not in columns
        return OTHER_CATEGORY if unseen and one_hot(name, OTHER_CATEGORY) in columns else value

    return [numeric({name: seen(name, value) for name, value in x.items()}) for x in xs]


def fitted_columns(model: Any) -> Mapping[str, int]:
    """The columns a fitted scikit-learn estimator encodes dicts into: the vocabulary of
    its ``encode`` step (Eddy's pipelines), else of the first step that has one (a
    ``DictVectorizer`` under another name), else of the estimator itself; empty when
    none has one (then every string is scored as it is).

    >>> from sklearn.feature_extraction import DictVectorizer
    >>> from sklearn.pipeline import Pipeline
    >>> from sklearn.preprocessing import StandardScaler
    >>> vectors = DictVectorizer(sparse=False)
    >>> pipeline = Pipeline([("vectors", vectors), ("scale", StandardScaler())])
    >>> dict(fitted_columns(pipeline.fit([{"c=NL": 1.0, "x": 2.0}])))
    {'c=NL': 0, 'x': 1}
    """
    named: Mapping[str, Any] = getattr(model, "named_steps", {})
    steps = getattr(model, "steps", None)
    parts = [step for _, step in steps] if isinstance(steps, list) else [model]
    for part in (named.get("encode"), *parts):
        columns = getattr(part, "vocabulary_", None)
        if isinstance(columns, Mapping):
            return columns
    return {}


def model_class(model: Any) -> str:
    """The model's class, and for a River or scikit-learn pipeline its steps' classes:
    what a project's model is, in a line (``eddy plan``, a retrain's lineage).

    >>> from sklearn.pipeline import Pipeline
    >>> from sklearn.preprocessing import StandardScaler
    >>> from sklearn.linear_model import Ridge
    >>> model_class(Pipeline([("scale", StandardScaler()), ("model", Ridge())]))
    'Pipeline (StandardScaler | Ridge)'
    >>> model_class(preprocessing.StandardScaler() | linear_model.LinearRegression())
    'Pipeline (StandardScaler | LinearRegression)'
    """
    steps = getattr(model, "steps", None)
    if isinstance(steps, Mapping):  # River: step name -> estimator
        parts = list(steps.values())
    elif isinstance(steps, list):  # scikit-learn: (name, estimator) pairs
        parts = [step for _, step in steps]
    else:
        return type(model).__name__
    return f"{type(model).__name__} ({' | '.join(type(part).__name__ for part in parts)})"


def one_hot(name: str, value: str) -> str:
    """The column of a string feature's value: ``name=value``."""
    return f"{name}={value}"


class OnlineModel:
    """A River estimator plus Eddy's feature encoding; picklable for checkpoints.

    ``vocabulary`` holds the feature names and, per string feature, the values the
    model has learned; :meth:`encode` keeps both within their caps.

    >>> model = make_model("logistic")
    >>> model.encode({"n": 2, "country": "NL"}, learning=True)
    {'n': 2.0, 'country=NL': 1.0}
    """

    def __init__(self, kind: str, estimator: Any, task: str | None = None) -> None:
        """``task``: what ``estimator`` learns; by default, what ``kind`` learns."""
        self.kind = kind
        self.task = MODEL_KINDS[kind].task if task is None else task
        self.estimator = estimator
        # Dicts, not sets: insertion-ordered, so equal learning pickles to equal bytes.
        self.vocabulary: dict[str, dict[str, None]] = {}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update({"vocabulary": {}, **state})

    def encode(self, x: Features, *, learning: bool = False) -> dict[str, float]:
        """:func:`numeric`, within the caps; ``learning`` admits new names and values
        while there is room. A name past the cap is left out; a string value past its
        feature's cap becomes ``__other__``."""
        out: dict[str, float] = {}
        vocabulary = self.vocabulary
        for name, value in x.items():
            if value is None:
                continue
            values = vocabulary.get(name)
            if values is None:
                if len(vocabulary) >= MAX_MODEL_FEATURES:
                    continue
                if learning:
                    values = vocabulary[name] = {}
            if isinstance(value, str):
                if values is not None and value not in values:
                    if len(values) >= MAX_CATEGORIES:
                        value = OTHER_CATEGORY
                    elif learning:
                        values[value] = None
                out[one_hot(name, value)] = 1.0
            else:
                out[name] = float(value)
        return out

    def predict_one(self, x: Features) -> Label | None:
        return self.predict(self.encode(x))[0]

    def predict_proba_one(self, x: Features) -> dict[Label, float]:
        return self.predict(self.encode(x))[1]

    def learn_one(self, x: Features, y: Label) -> None:
        self.learn(self.encode(x, learning=True), y)

    def predict(self, xn: dict[str, float]) -> tuple[Label | None, dict[Label, float]]:
        """Prediction and class probabilities from an already :func:`numeric` vector.

        Classifiers predict the most probable class, so one pass gives both.
        """
        if self.task != CLASSIFICATION:
            return self.estimator.predict_one(xn), {}
        proba: dict[Label, float] = self.estimator.predict_proba_one(xn)
        if not proba:
            return None, proba
        return max(proba, key=proba.__getitem__), proba

    def learn(self, xn: dict[str, float], y: Label) -> None:
        self.estimator.learn_one(xn, y)

    def predict_and_learn_many(
        self, xns: list[dict[str, float]], ys: list[Label]
    ) -> tuple[list[Label | None], list[float | None]]:
        """Predict a mini-batch with the model as it is, then learn the whole batch.

        Returns predictions and, for binary classifiers, P(positive). River's
        ``learn_many`` needs one column set for the batch, so a batch whose examples
        have different features (a missing value, another category) is learned one
        example at a time instead: a missing feature must stay missing, not become 0.
        """
        predictions: list[Label | None] = []
        positives: list[float | None] = []
        names = xns[0].keys()
        if not all(xn.keys() == names for xn in xns):
            for xn, y in zip(xns, ys, strict=True):
                prediction, proba = self.predict(xn)
                predictions.append(prediction)
                positives.append(positive_class(proba))
                self.learn(xn, y)
            return predictions, positives
        frame = pd.DataFrame.from_records(xns, columns=_column_index(tuple(names)))
        if self.task == CLASSIFICATION:
            proba = self.estimator.predict_proba_many(frame)
            labels = list(proba.columns)
            best = proba.to_numpy().argmax(axis=1)
            predictions = [labels[k] for k in best]
            positive = True if True in labels else 1 if 1 in labels else None
            positives = proba[positive].tolist() if positive is not None else [None] * len(xns)
        else:
            predictions, positives = self.estimator.predict_many(frame).tolist(), [None] * len(xns)
        self.estimator.learn_many(frame, pd.Series(ys))
        return predictions, positives


@functools.lru_cache(maxsize=COLUMN_INDEXES)
def _column_index(names: tuple[str, ...]) -> pd.Index:
    """A mini-batch frame's columns, built once per set of names. Plain Python strings
    (object dtype), not pandas' default Arrow strings: building those for every batch and
    River's work on them cost about 0.4 µs an example of a batch of 500, with the same
    results (measured 2026-12-05)."""
    return pd.Index(list(names), dtype=object)


def label_refusal(
    kind: str, label: Label, task: str | None = None, binary_model: str | None = None
) -> str | None:
    """Why a model of ``kind`` cannot learn ``label`` (None: it can); see
    :mod:`eddy.streams.learning.labels`. A project's model (:data:`PROJECT_KIND`) is
    judged by its ``task`` and, when it is a binary classifier, by ``binary_model`` (what
    it is, :func:`binary_model_of`).

    >>> label_refusal("logistic", "yes")
    "model kind 'logistic' learns true/false or 0/1 labels, not 'yes'"
    >>> label_refusal("linear_regression", "yes")
    "model kind 'linear_regression' learns numeric labels, not 'yes'"
    >>> label_refusal("logistic", 1), label_refusal("softmax", "yes")
    (None, None)
    >>> label_refusal(PROJECT_KIND, "yes", REGRESSION)
    "model kind 'project' learns numeric labels, not 'yes'"
    >>> label_refusal(PROJECT_KIND, "yes", CLASSIFICATION)
    >>> label_refusal(PROJECT_KIND, 2, CLASSIFICATION, "LR")
    'the online model LR is a binary classifier: labels must be true/false or 0/1, got 2'
    >>> label_refusal(PROJECT_KIND, True, CLASSIFICATION, "LogisticRegression")
    """
    return refusal(label_rule(kind, task, binary_model), label)


def label_rule(kind: str, task: str | None = None, binary_model: str | None = None) -> LabelRule:
    """The rule :func:`~eddy.streams.learning.labels.refusal` applies for a model of
    ``kind`` (a project's: of ``task``, a binary classifier when ``binary_model`` names
    it); raises ValueError for a kind that is neither built in nor given a task."""
    spec = MODEL_KINDS.get(kind)
    if spec is None and task is None:
        raise ValueError(f"unknown model kind {kind!r}; known: {', '.join(MODEL_KINDS)}")
    if spec is not None:
        return LabelRule(kind, spec.task, spec.binary, None)
    return LabelRule(kind, task, False, binary_model)


def binary_model_of(estimator: Any) -> str | None:
    """What a River estimator or pipeline is (:func:`model_class`) when it is a binary
    classifier, which learns true/false or 0/1 labels only and raises on any other
    (River's binary ``LogisticRegression`` on ``"yes"``); None when it learns any label
    its task allows. A pipeline is what its final step is, nested pipelines too.

    >>> binary_model_of(preprocessing.StandardScaler() | linear_model.LogisticRegression())
    'Pipeline (StandardScaler | LogisticRegression)'
    >>> binary_model_of(linear_model.SoftmaxRegression())
    >>> binary_model_of(linear_model.LinearRegression())
    """
    final = estimator
    while isinstance(steps := getattr(final, "steps", None), Mapping) and steps:
        final = list(steps.values())[-1]
    # River's classifiers say whether they learn more than two classes (``_multiclass``).
    if isinstance(final, base.Classifier) and not final._multiclass:
        return model_class(estimator)
    return None


def positive_class(proba: Mapping[Label, float]) -> float | None:
    """P(positive class) of a binary classifier's probabilities; None otherwise.

    >>> positive_class({False: 0.25, True: 0.75}), positive_class({"a": 1.0})
    (0.75, None)
    """
    if True in proba:
        return proba[True]
    if 1 in proba:
        return proba[1]
    return None


def make_model(kind: str, seed: int = 42) -> OnlineModel:
    """A fresh model of ``kind``; unknown kinds raise ValueError naming the known ones."""
    if kind not in MODEL_KINDS:
        raise ValueError(f"unknown model kind {kind!r}; known: {', '.join(MODEL_KINDS)}")
    return OnlineModel(kind, MODEL_KINDS[kind].build(seed))


def batchable(kind: str) -> bool:
    """Whether a model of ``kind`` learns mini-batches (River's ``learn_many``): only
    the built-in kinds known to; a project's model learns one example at a time.

    >>> batchable("logistic"), batchable("softmax"), batchable(PROJECT_KIND)
    (True, False, False)
    """
    spec = MODEL_KINDS.get(kind)
    return spec is not None and spec.batchable


def task_of(estimator: Any) -> str:
    """What a River estimator or pipeline learns: a pipeline is the kind of its last
    step; a model outside River's base classes is a classifier when it gives class
    probabilities (``predict_proba_one``).

    >>> task_of(preprocessing.StandardScaler() | linear_model.LinearRegression())
    'regression'
    >>> task_of(tree.HoeffdingAdaptiveTreeClassifier())
    'classification'
    """
    if isinstance(estimator, base.Classifier):
        return CLASSIFICATION
    if isinstance(estimator, base.Regressor):
        return REGRESSION
    return CLASSIFICATION if callable(getattr(estimator, "predict_proba_one", None)) else REGRESSION


def wrap_model(estimator: Any) -> OnlineModel:
    """A project's River estimator or pipeline as an :class:`OnlineModel`: Eddy's
    encoding in front of it (it learns and predicts numeric dicts: booleans as 0/1, a
    string as a ``name=value`` column, missing values left out), checkpointed, snapshot
    and watched like a built-in kind.

    >>> model = wrap_model(preprocessing.StandardScaler() | linear_model.LinearRegression())
    >>> model.learn_one({"x": 2.0, "mobile": True}, 4.0)
    >>> model.kind, model.task, model.vocabulary
    ('project', 'regression', {'x': {}, 'mobile': {}})
    """
    return OnlineModel(PROJECT_KIND, estimator, task_of(estimator))
