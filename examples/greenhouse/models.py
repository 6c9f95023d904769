"""The greenhouse's models: a scaled logistic regression online, and a scaled logistic
regression for a retrain (a pipeline of its own: any scikit-learn steps work)."""

from __future__ import annotations

from typing import Any

from river import linear_model, optim, preprocessing
from sklearn.feature_extraction import DictVectorizer
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

LEARNING_RATE = 0.05


def online_model() -> Any:
    return preprocessing.StandardScaler() | linear_model.LogisticRegression(
        optimizer=optim.SGD(LEARNING_RATE)
    )


def retrain_estimator(classification: bool) -> Any:
    fit = LogisticRegression(max_iter=1000) if classification else Ridge()
    return Pipeline(
        [("vectors", DictVectorizer(sparse=False)), ("scale", StandardScaler()), ("fit", fit)]
    )
