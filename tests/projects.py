"""What the tests of projects (``eddy init``, ``plan``, ``apply``) share: a project's own
models, unlike any of Eddy's defaults, and editing a project's files in place."""

from __future__ import annotations

from pathlib import Path

LEARNING_RATE = 0.037  # the project's online optimizer's: no default of River's
C = 0.5
# A River pipeline with a distinctive optimizer online, and a scikit-learn pipeline whose
# steps are not named like Eddy's (``vectors``, ``scale``, ``fit``) with ``C=0.5``.
PROJECT_MODELS = f"""
from river import linear_model, optim, preprocessing
from sklearn.feature_extraction import DictVectorizer
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler


def online_model():
    return preprocessing.StandardScaler() | linear_model.LogisticRegression(
        optimizer=optim.SGD({LEARNING_RATE})
    )


def retrain_estimator(classification):
    fit = LogisticRegression(C={C}) if classification else Ridge()
    return Pipeline(
        [("vectors", DictVectorizer(sparse=False)), ("scale", StandardScaler()), ("fit", fit)]
    )
"""
ONLINE_CLASSES = "Pipeline (StandardScaler | LogisticRegression)"
RETRAIN_CLASSES = "Pipeline (DictVectorizer | StandardScaler | LogisticRegression)"


def edit(path: Path, old: str, new: str) -> None:
    """Replace the first ``old`` in ``path`` by ``new`` (``old`` must be there)."""
    text = path.read_text()
    assert old in text, f"{old!r} not in {path.name}"
    path.write_text(text.replace(old, new, 1))
