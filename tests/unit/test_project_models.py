"""A project's own models in the services: the learner learns its ``online_model()``,
a retrain fits its ``retrain_estimator``, and the registry loads its scikit-learn
artifacts with the types its ``[models] trusted`` allows (issue #17, slice 3).

Without a project nothing changes: the built-in kind and estimator, the same seeds, the
same lineage.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from river import linear_model, preprocessing
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.ensemble import AdaBoostClassifier, BaggingClassifier
from sklearn.feature_extraction import DictVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.svm import LinearSVC

from eddy.services.config.learner import (
    deployment_learner,
    learner_labels,
    online_model_factory,
)
from eddy.services.config.retraining import deployment_retraining
from eddy.services.config.settings import Settings
from eddy.services.project.errors import ProjectError
from eddy.services.project.layout import MODELS_FILE, PROJECT_FILE
from eddy.services.project.loading import Project, load_project
from eddy.services.project.plan import plan_project
from eddy.services.project.scaffold import init_project
from eddy.services.registry.opening import open_registry
from eddy.services.registry.store import SKLEARN, Lineage, Registry
from eddy.services.registry.triggers import AuditAction, Trigger, TriggerKind
from eddy.services.training.bursts import Burst
from eddy.services.training.core import (
    EstimatorFailed,
    estimator_params,
    evaluate,
    make_estimator,
    refit_on_all,
)
from eddy.services.training.policy import ESTIMATOR_CLASS, RETRAIN_SEED
from eddy.services.training.retrainer import AlertListener, Retrainer
from eddy.services.workers.learner import LearnerWorker
from eddy.streams.features.definitions import FEATURES
from eddy.streams.learning.learner import Learner, LearnerConfig, Position
from eddy.streams.learning.models import (
    CLASSIFICATION,
    PROJECT_KIND,
    REGRESSION,
    OnlineModel,
    binary_model_of,
    encode_for,
    fit_vectors,
    label_refusal,
    model_class,
)
from eddy.streams.messages.contracts import Label, SourceOffset, TrainingExample
from eddy.streams.messages.validation import InvalidMessage, encode
from eddy.streams.store.serialization import IntegrityError, seal, unseal
from tests.projects import LEARNING_RATE, PROJECT_MODELS, C

KEY = b"project-models-test-key"
MODEL = "m"
EXAMPLES = 120
# A retrain estimator each online model below can go with: it learns dict rows, and
# gives probabilities as a classifier (what `eddy plan` checks).
DICT_ESTIMATOR = """
from sklearn.feature_extraction import DictVectorizer
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import make_pipeline


def retrain_estimator(classification):
    return make_pipeline(
        DictVectorizer(sparse=False), LogisticRegression() if classification else Ridge()
    )
"""
REGRESSOR_MODELS = (
    """
from river import linear_model


def online_model():
    return linear_model.LinearRegression()
"""
    + DICT_ESTIMATOR
)
MULTICLASS_MODELS = (
    """
from river import linear_model, preprocessing


def online_model():
    return preprocessing.StandardScaler() | linear_model.SoftmaxRegression()
"""
    + DICT_ESTIMATOR
)
TRUSTED = "tests.unit.test_project_models."


class Clipper(TransformerMixin, BaseEstimator):  # type: ignore[misc]
    """A transformer of a project's own package: outside Eddy's skops allow-list."""

    def __init__(self, bound: float = 3.0) -> None:
        self.bound = bound

    def fit(self, x: Any, y: Any = None) -> Clipper:
        return self

    def transform(self, x: Any) -> Any:
        return np.clip(x, -self.bound, self.bound)


@pytest.fixture
def project(tmp_path: Path) -> Project:
    folder = tmp_path / "project"
    init_project(folder)
    (folder / MODELS_FILE).write_text(PROJECT_MODELS)
    return load_project(folder)


def rows(count: int) -> list[tuple[dict[str, Any], bool]]:
    rng = np.random.default_rng(7)
    out = []
    for _ in range(count):
        x = {"a": float(rng.uniform(-1, 1)), "c": str(rng.choice(["x", "y"]))}
        out.append((x, x["a"] + (0.3 if x["c"] == "x" else 0.0) > 0))
    return out


def training_example(i: int, x: dict[str, Any], y: bool) -> TrainingExample:
    return TrainingExample(
        example_id=f"e{i}",
        entity_id="u",
        label=y,
        features=x,
        event_time=datetime.fromtimestamp(1_700_000_000 + i, UTC),
        feature_set="fs",
        source=SourceOffset(topic="examples", partition=0, offset=i),
    )


def lineage() -> Lineage:
    return Lineage({}, "fs", {}, {}, "test", {"type": "operator", "id": "t"}, "test")


# --- the learner ----------------------------------------------------------------------


def test_without_a_project_the_learner_builds_its_kind_as_before() -> None:
    settings = Settings(learner_kind="hoeffding_adaptive_tree")
    config = deployment_learner(settings, FEATURES)
    assert (config.kind, config.online_model) == ("hoeffding_adaptive_tree", "")
    assert online_model_factory(None) is None
    built = Learner(config).model
    assert repr(built.estimator) == repr(
        Learner(LearnerConfig(model="x", kind=config.kind)).model.estimator
    )
    assert learner_labels(settings, None) == ("hoeffding_adaptive_tree", None, None)


def test_with_a_project_the_learner_learns_its_online_model(project: Project) -> None:
    config = deployment_learner(Settings(), FEATURES, project)
    build = online_model_factory(project)
    assert build is not None
    assert (config.kind, config.online_model) == (
        PROJECT_KIND,
        "Pipeline (StandardScaler | LogisticRegression)",
    )
    learner = Learner(config, build)
    assert isinstance(learner.model, OnlineModel)
    assert (learner.model.kind, learner.model.task) == (PROJECT_KIND, CLASSIFICATION)
    optimizer = learner.model.estimator["LogisticRegression"].optimizer
    assert optimizer.learning_rate == LEARNING_RATE
    for i, (x, y) in enumerate(rows(EXAMPLES)):
        learner.step(x, y, Position("t", 0, i, float(i)))
    assert learner.examples == EXAMPLES
    assert learner.model.vocabulary == {"a": {}, "c": {"x": None, "y": None}}
    # A checkpoint seals the model it built, never the factory: it restores as it was.
    restored: Learner = unseal(seal(learner, KEY), KEY)
    assert restored.model.predict_proba_one({"a": 0.5, "c": "x"}) == (
        learner.model.predict_proba_one({"a": 0.5, "c": "x"})
    )
    assert restored.config == config


def test_each_build_is_a_fresh_model(project: Project) -> None:
    build = online_model_factory(project)
    assert build is not None
    first, second = build(), build()
    first.learn_one({"a": 1.0}, True)
    assert first.estimator is not second.estimator
    assert second.vocabulary == {}


def test_a_project_kind_needs_its_factory_and_only_it(project: Project) -> None:
    config = deployment_learner(Settings(), FEATURES, project)
    build = online_model_factory(project)
    assert build is not None
    with pytest.raises(ValueError, match="online_model"):
        Learner(config)
    with pytest.raises(ValueError, match="online_model"):
        Learner(LearnerConfig(model="m"), build)
    with pytest.raises(ValueError, match="one example at a time"):
        Learner(LearnerConfig(model="m", kind=PROJECT_KIND, batch=8), build)


def test_the_checkpoint_of_another_model_is_not_the_projects() -> None:
    """The learner worker restores a checkpoint only if its config equals today's."""
    built_in = LearnerConfig(model="m")
    assert LearnerConfig(model="m", kind=PROJECT_KIND, online_model="Pipeline (A | B)") != built_in
    assert LearnerConfig(
        model="m", kind=PROJECT_KIND, online_model="Pipeline (A | B)"
    ) != LearnerConfig(model="m", kind=PROJECT_KIND, online_model="Pipeline (A | C)")


def test_a_project_regressor_refuses_text_labels(tmp_path: Path) -> None:
    folder = tmp_path / "project"
    init_project(folder)
    (folder / MODELS_FILE).write_text(REGRESSOR_MODELS)
    project = load_project(folder)
    assert project.online_task == REGRESSION
    kind, task, binary = learner_labels(Settings(), project)
    assert (kind, task, binary) == (PROJECT_KIND, REGRESSION, None)
    assert label_refusal(kind, "yes", task) == (
        "model kind 'project' learns numeric labels, not 'yes'"
    )
    assert label_refusal(kind, 2.5, task) is None


def test_a_project_binary_classifier_refuses_labels_it_would_raise_on(project: Project) -> None:
    """River's binary LogisticRegression (the template's online model) raises on a text
    label inside learn_one, which killed the learner's poll loop; the decoder now
    refuses such a label, so it is dead-lettered and the loop learns on."""
    model = online_model_factory(project)
    assert model is not None
    built = model()
    with pytest.raises(ValueError, match="invalid literal"):
        built.learn_one({"a": 1.0}, "yes")
    kind, task, binary = learner_labels(Settings(), project)
    assert binary == project.online_model_class == "Pipeline (StandardScaler | LogisticRegression)"
    assert label_refusal(kind, "yes", task, binary) == (
        "the online model Pipeline (StandardScaler | LogisticRegression) is a binary "
        "classifier: labels must be true/false or 0/1, got 'yes'"
    )
    assert label_refusal(kind, 2, task, binary) is not None
    assert [label_refusal(kind, y, task, binary) for y in (True, False, 0, 1)] == [None] * 4
    # The learner worker's decoder refuses it, from the model it actually runs; the
    # decoders pickle, for the reader process.
    worker = SimpleNamespace(
        config=LearnerConfig(model="m", kind=PROJECT_KIND),
        state=SimpleNamespace(learner=SimpleNamespace(model=built)),
        examples_topic="t.training-examples",
        labels_topic="t.labels",
        served_topic="t.served-answers",
    )
    factory = pickle.loads(pickle.dumps(LearnerWorker._decoders(worker)))  # type: ignore[arg-type]
    decode_label = factory()["t.labels"]
    at = datetime(2026, 1, 1, tzinfo=UTC)

    def record(label: Any) -> SimpleNamespace:
        return SimpleNamespace(value=encode(Label(event_id="e1", label=label, event_time=at)))

    with pytest.raises(InvalidMessage, match="binary classifier") as refused:
        decode_label(record("yes"))
    assert refused.value.error_class == "label_not_learnable"
    assert decode_label(record(True)).label is True


def test_a_project_multiclass_classifier_learns_any_label(tmp_path: Path) -> None:
    folder = tmp_path / "project"
    init_project(folder)
    (folder / MODELS_FILE).write_text(MULTICLASS_MODELS)
    project = load_project(folder)
    assert project.online_binary is None
    kind, task, binary = learner_labels(Settings(), project)
    assert label_refusal(kind, "yes", task, binary) is None
    nested = preprocessing.StandardScaler() | (
        preprocessing.MinMaxScaler() | linear_model.LogisticRegression()
    )
    assert binary_model_of(nested) is not None


# --- the retrain estimator ------------------------------------------------------------


def test_without_a_project_a_retrain_fits_the_named_estimator_as_before() -> None:
    settings = Settings(retrain_estimator="logistic_regression")
    policy = deployment_retraining(settings)
    assert policy.estimator_factory is None
    for classification in (True, False):
        built = policy.new_estimator(classification)
        expected = make_estimator("logistic_regression", classification, seed=RETRAIN_SEED)
        assert repr(built) == repr(expected)
        assert policy.lineage_params(built) == {
            "estimator": "logistic_regression",
            **estimator_params(expected),
        }


def test_with_a_project_a_retrain_fits_a_fresh_project_estimator(project: Project) -> None:
    policy = deployment_retraining(Settings(), project)
    assert policy.estimator == f"project:{project.name}"
    first, second = policy.new_estimator(True), policy.new_estimator(True)
    assert first is not second
    assert [name for name, _ in first.steps] == ["vectors", "scale", "fit"]
    assert type(policy.new_estimator(False).steps[-1][1]).__name__ == "Ridge"
    params = policy.lineage_params(first)
    assert params["estimator"] == "project:demo"
    assert (
        params[ESTIMATOR_CLASS] == "Pipeline (DictVectorizer | StandardScaler | LogisticRegression)"
    )
    assert params["C"] == C
    # The backtest and every gate read the same policy: only the estimator differs.
    assert policy.gate == deployment_retraining(Settings()).gate


def test_the_retrainer_takes_the_projects_estimator_and_labels(
    project: Project, tmp_path: Path
) -> None:
    registry = Registry(tmp_path / "registry", KEY)
    retrainer = Retrainer(Settings(), registry, project=project)
    assert retrainer.policy.estimator == "project:demo"
    assert isinstance(retrainer.policy.new_estimator(True).steps[-1][1], LogisticRegression)
    assert (retrainer.learner_kind, retrainer.learner_task) == (PROJECT_KIND, CLASSIFICATION)
    default = Retrainer(Settings(), registry)
    assert default.policy.estimator == Settings().retrain_estimator
    assert (default.learner_kind, default.learner_task) == (Settings().learner_kind, None)


@pytest.mark.parametrize(
    ("estimator", "raised"),
    [
        # no predict_proba: AttributeError while scoring the candidate
        (lambda: make_pipeline(DictVectorizer(sparse=False), LinearSVC()), AttributeError),
        # dict rows into an estimator that takes arrays: TypeError while fitting
        (LogisticRegression, TypeError),
    ],
)
def test_a_failing_retrain_estimator_is_audited_and_the_listener_goes_on(
    project: Project, tmp_path: Path, estimator: Callable[[], Any], raised: type[Exception]
) -> None:
    """Only a ValueError was caught around a retrain, so an estimator failing otherwise
    (one `eddy plan` let through, or one failing on this window's data) raised out of
    the alert loop and the retrainer crash-looped on the same alert."""
    registry = Registry(tmp_path / "registry", KEY)
    failing = replace(project, retrain_estimator=lambda classification: estimator())
    retrainer = Retrainer(Settings(retrain_min_holdout=20), registry, project=failing)
    window = [training_example(i, x, y) for i, (x, y) in enumerate(rows(EXAMPLES))]
    retrainer.recent_examples = lambda count: window  # type: ignore[method-assign]
    trigger = Trigger(TriggerKind.ALERT, "a1", burst=("a1",))
    with pytest.raises(EstimatorFailed) as failed:
        retrainer.retrain(MODEL, trigger)
    assert isinstance(failed.value.__cause__, raised)
    assert registry.versions(MODEL) == []
    (entry,) = registry.audit_log(MODEL)
    assert entry["action"] == AuditAction.RETRAIN_FAILED
    assert entry["details"]["trigger"] == trigger.to_dict()
    assert raised.__name__ in entry["details"]["reason"]
    # The alert loop's retrain of a burst logs it and carries on: the burst is consumed.
    listener = SimpleNamespace(
        retrainer=retrainer, loop=SimpleNamespace(liveness=SimpleNamespace(busy=nullcontext))
    )
    burst = Burst(due=0.0, first_seen=0.0, alert_ids=("a2",), since=None)
    assert AlertListener._retrain(listener, MODEL, burst, now=0.0) is None  # type: ignore[arg-type]
    assert [e["action"] for e in registry.audit_log(MODEL)] == [AuditAction.RETRAIN_FAILED] * 2


@pytest.mark.parametrize("ensemble", [BaggingClassifier, AdaBoostClassifier])
def test_the_lineage_names_the_project_whatever_the_final_step_calls_its_parameters(
    project: Project, ensemble: type[Any]
) -> None:
    """A final step with an ``estimator`` parameter (None by default, a plain value)
    overwrote ``project:<name>`` in the lineage."""
    policy = deployment_retraining(
        Settings(), replace(project, retrain_estimator=lambda _: make_pipeline(ensemble()))
    )
    params = policy.lineage_params(policy.new_estimator(True))
    assert params["estimator"] == f"project:{project.name}"
    assert params[ESTIMATOR_CLASS] == f"Pipeline ({ensemble.__name__})"
    assert params["n_estimators"] == ensemble().n_estimators


def test_estimator_params_of_any_estimator() -> None:
    assert estimator_params(LogisticRegression(C=C))["C"] == C
    renamed = Pipeline([("vectors", DictVectorizer()), ("fit", LogisticRegression(C=2.0))])
    assert estimator_params(renamed)["C"] == 2.0
    eddys = make_estimator("hist_gradient_boosting", True, seed=RETRAIN_SEED)
    assert estimator_params(eddys) == {
        k: v
        for k, v in eddys.named_steps["model"].get_params().items()
        if isinstance(v, int | float | str | bool | None)
    }


def test_a_project_pipeline_is_fitted_scored_and_refitted_like_eddys(project: Project) -> None:
    examples = [training_example(i, x, y) for i, (x, y) in enumerate(rows(EXAMPLES))]
    estimator = project.retrain_estimator(True)
    estimator.fit(fit_vectors([e.features for e in examples]), [e.label for e in examples])
    metrics = evaluate(estimator, SKLEARN, examples)
    assert metrics["accuracy"] > 0.8
    # A category the fit never saw scores as no column, whatever the encoder is named.
    assert encode_for(estimator, [{"a": 1.0, "c": "never"}]) == [{"a": 1.0, "c=never": 1.0}]
    refitted = refit_on_all(estimator, examples)
    assert [name for name, _ in refitted.steps] == ["vectors", "scale", "fit"]


# --- the allow-list -------------------------------------------------------------------


def clipped_pipeline() -> Pipeline:
    data = rows(EXAMPLES)
    pipeline = Pipeline(
        [
            ("vectors", DictVectorizer(sparse=False)),
            ("clip", Clipper()),
            ("fit", LogisticRegression()),
        ]
    )
    return pipeline.fit(fit_vectors([x for x, _ in data]), [y for _, y in data])


def test_an_artifact_with_a_project_type_loads_only_where_the_project_trusts_it(
    tmp_path: Path,
) -> None:
    root = tmp_path / "registry"
    version = Registry(root, KEY).register("m", SKLEARN, clipped_pipeline(), {}, lineage())
    name = f"{Clipper.__module__}.{Clipper.__qualname__}"

    with pytest.raises(IntegrityError, match="outside the allow-list") as refused:
        Registry(root, KEY).load("m", version.version)
    assert name in str(refused.value)
    assert f'[models] trusted = ["{Clipper.__module__}."]' in str(refused.value)

    loaded = Registry(root, KEY, trusted=(TRUSTED,)).load("m", version.version)
    assert [type(step).__name__ for _, step in loaded.steps] == [
        "DictVectorizer",
        "Clipper",
        "LogisticRegression",
    ]


def test_the_deployments_registry_trusts_the_projects_prefixes(
    project: Project, tmp_path: Path
) -> None:
    toml = project.root / PROJECT_FILE
    toml.write_text(toml.read_text() + f'\n[models]\ntrusted = ["{TRUSTED}"]\n')
    settings = Settings(project=project.root, data_dir=tmp_path / "data")
    registry = open_registry(settings, announce=False)
    version = registry.register("m", SKLEARN, clipped_pipeline(), {}, lineage())
    assert type(registry.load("m", version.version).steps[1][1]).__name__ == "Clipper"
    without = Settings(data_dir=tmp_path / "data")
    with pytest.raises(IntegrityError, match="Clipper"):
        open_registry(without, announce=False).load("m", version.version)


def test_trusted_prefixes_are_loaded_and_planned(project: Project) -> None:
    toml = project.root / PROJECT_FILE
    toml.write_text(toml.read_text() + '\n[models]\ntrusted = ["mypackage.transformers."]\n')
    loaded = load_project(project.root)
    assert loaded.trusted == ("mypackage.transformers.",)
    lines = plan_project(loaded)
    start = lines.index("trusted in artifacts, beyond Eddy's allow-list (1):")
    assert lines[start + 1] == "  mypackage.transformers."
    assert not any(line.startswith("trusted") for line in plan_project(project))


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ('trusted = "mypackage."', "must be a list of type-name prefixes"),
        ('trusted = ["mypackage"]', "'mypackage' is not a type-name prefix"),
        ('trusted = ["builtins."]', "'builtins.' is in the standard library"),
        ('trusted = ["os.path."]', "'os.path.' is in the standard library"),
        ('trust = ["mypackage."]', "unknown key 'trust' in [models]"),
    ],
)
def test_a_wrong_allow_list_is_refused_at_its_line(
    project: Project, table: str, message: str
) -> None:
    toml = project.root / PROJECT_FILE
    text = toml.read_text() + "\n[models]\n"
    line = len(text.splitlines()) + 1
    toml.write_text(text + table + "\n")
    with pytest.raises(ProjectError) as refused:
        load_project(project.root)
    assert (refused.value.file, refused.value.line) == (toml, line)
    assert message in refused.value.message


def test_a_river_model_of_the_project_stays_a_signed_pickle(project: Project) -> None:
    """Online snapshots and checkpoints of a project's model take Eddy's one sealed
    path: signed, and refused under another key before anything is unpickled."""
    build = online_model_factory(project)
    assert build is not None
    blob = seal(build(), KEY)
    with pytest.raises(IntegrityError, match="HMAC"):
        unseal(blob, b"another key")
    restored = unseal(blob, KEY)
    assert (restored.kind, model_class(restored.estimator)) == (
        PROJECT_KIND,
        project.online_model_class,
    )
