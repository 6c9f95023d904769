"""The bounded encoding of feature vectors: what a model learns cannot grow without bound."""

from __future__ import annotations

import pickle

from sklearn.feature_extraction import DictVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline

from eddy.streams.features.compute import OTHER_CATEGORY
from eddy.streams.learning.models import (
    MAX_CATEGORIES,
    MAX_MODEL_FEATURES,
    cap_categories,
    encode_for,
    fit_vectors,
    make_model,
)


def test_an_online_model_learns_at_most_the_cap_of_values_per_string_feature() -> None:
    model = make_model("logistic")
    for i in range(MAX_CATEGORIES + 50):
        model.learn_one({"user": f"u{i}", "n": 1.0}, i % 2 == 0)
    assert len(model.vocabulary["user"]) == MAX_CATEGORIES
    assert model.encode({"user": "u-new"}) == {f"user={OTHER_CATEGORY}": 1.0}
    assert model.encode({"user": "u0"}) == {"user=u0": 1.0}
    weights = model.estimator["LogisticRegression"].weights
    assert sum(1 for column in weights if column.startswith("user=")) <= MAX_CATEGORIES + 1


def test_an_online_model_learns_at_most_the_cap_of_feature_names() -> None:
    model = make_model("logistic")
    for k in range(0, MAX_MODEL_FEATURES + 100, 500):
        model.learn_one({f"f{i}": 1.0 for i in range(k, k + 500)}, k % 1000 == 0)
    assert len(model.vocabulary) == MAX_MODEL_FEATURES
    assert model.encode({f"f{MAX_MODEL_FEATURES + 50}": 2.0, "f0": 1.0}) == {"f0": 1.0}


def test_predicting_admits_nothing() -> None:
    model = make_model("logistic")
    model.predict_one({"country": "NL", "n": 1.0})
    assert model.vocabulary == {}


def test_a_model_pickled_before_vocabularies_loads_and_learns() -> None:
    model = make_model("logistic")
    model.learn_one({"n": 1.0}, True)
    del model.__dict__["vocabulary"]
    restored = pickle.loads(pickle.dumps(model))
    restored.learn_one({"n": 2.0, "c": "x"}, False)
    assert restored.vocabulary == {"n": {}, "c": {"x": None}}


def test_a_batch_fit_keeps_the_most_frequent_values_and_serves_the_rest_as_other() -> None:
    rows = [{"c": "common"}] * 5 + [{"c": f"rare{i}"} for i in range(MAX_CATEGORIES + 10)]
    capped = cap_categories(rows)
    kept = {row["c"] for row in capped}
    assert "common" in kept
    assert OTHER_CATEGORY in kept
    assert len(kept) == MAX_CATEGORIES + 1

    labels = [i % 2 == 0 for i in range(len(rows))]
    pipeline = Pipeline([("encode", DictVectorizer(sparse=False)), ("model", LogisticRegression())])
    pipeline.fit(fit_vectors(rows), labels)
    assert len(pipeline.named_steps["encode"].vocabulary_) == MAX_CATEGORIES + 1
    (unseen,) = encode_for(pipeline, [{"c": "never-seen"}])
    assert unseen == {f"c={OTHER_CATEGORY}": 1.0}
    (seen,) = encode_for(pipeline, [{"c": "common"}])
    assert seen == {"c=common": 1.0}
