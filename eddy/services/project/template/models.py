"""This project's models: the online model that learns from every labelled example, and
the estimator a retrain fits on the recent window when the online model falls behind.

Both are plain River and scikit-learn objects: replace them with any River estimator or
pipeline, and any scikit-learn estimator or pipeline. Eddy encodes features for its
models as numbers: booleans as 0/1, a string ``country`` as a ``country=NL`` column,
missing values left out. These two are what Eddy runs by default: a scaled logistic
regression online, and gradient-boosted trees for a retrain.
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
