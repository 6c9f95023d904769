"""This project's models: the online model that learns from every labelled example, and
the estimator a retrain fits on the recent window when the online model falls behind.

Both are plain River and scikit-learn objects: replace them with any River estimator or
pipeline, and any scikit-learn estimator or pipeline. Eddy calls each factory for a
fresh model: ``online_model()`` when the learner starts without a checkpoint,
``retrain_estimator(classification)`` at every retrain (True for class labels: true or
false, text, whole numbers; False for other numbers). The online model below is a
binary classifier: it learns labels true/false or 0/1 (others are refused with the
reason); for text or more classes, use a multiclass River model.

What they receive: a dict per example, feature name to number. Eddy encodes the
features as numbers first: booleans as 0/1, a string ``country`` as a ``country=NL``
column set to 1.0 (past a feature's 256 most frequent values, ``country=__other__``),
missing values left out. The online model gets one dict at a time
(``learn_one(x, y)``, ``predict_proba_one(x)`` for a classifier, ``predict_one(x)`` for
a regressor) and learns one example at a time. The retrain estimator's ``fit`` and
``predict`` get a list of such dicts, not an array: start it with a
``DictVectorizer(sparse=False)`` (as below) to turn them into columns, then any steps.

A retrained model is stored as a signed skops file, which Eddy loads only if every type
in it is scikit-learn's, numpy's, scipy.sparse's or a plain type skops trusts, or starts
with a prefix the ``[models] trusted`` list of eddy.toml names (your own transformers'
package).

These two are what Eddy runs by default: a scaled logistic regression online, and
gradient-boosted trees for a retrain.
"""

from __future__ import annotations

from typing import Any

from river import linear_model, preprocessing
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
from sklearn.feature_extraction import DictVectorizer
from sklearn.pipeline import Pipeline

SEED = 42  # the same seed gives the same fit on the same examples


def online_model() -> Any:
    """A fresh online model: it learns one example at a time (``learn_one``) and
    predicts before it learns, so its running error tells when the world changed."""
    return preprocessing.StandardScaler() | linear_model.LogisticRegression()


def retrain_estimator(classification: bool) -> Any:
    """A fresh, unfitted estimator for a retrain: a classifier for class labels, a
    regressor for numbers. The ``encode`` step turns feature dicts into columns."""
    model = (
        HistGradientBoostingClassifier(random_state=SEED)
        if classification
        else HistGradientBoostingRegressor(random_state=SEED)
    )
    return Pipeline([("encode", DictVectorizer(sparse=False)), ("model", model)])
