from __future__ import annotations

import fnmatch
import sys
import tomllib
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from eddy.services.cli.main import app
from eddy.services.config.settings import PROJECT_ROOT, Settings
from eddy.services.demo.scenarios import scenario_stream
from eddy.services.project.errors import ProjectError
from eddy.services.project.layout import (
    FEATURES_FILE,
    MODELS_FILE,
    PROJECT_FILE,
    PROJECT_FILES,
    find_project,
)
from eddy.services.project.loading import load_project
from eddy.services.project.plan import plan_project
from eddy.services.project.scaffold import TEMPLATE_DIR, ProjectExists, init_project
from eddy.services.training.core import make_estimator
from eddy.streams.features.definitions import FEATURES as DEMO_FEATURES
from eddy.streams.learning.models import make_model
from eddy.streams.messages.raw_schema import RawSchema
from tests.projects import edit

EXAMPLE_DIR = PROJECT_ROOT / "examples" / "demo"
RETRAIN_SEED = 42  # the retrainer's seed, which the template's estimator uses too
DEMO_EVENTS_CHECKED = 300


def line_of(path: Path, text: str) -> int:
    """The 1-based line of ``path`` that first holds ``text``."""
    return next(n for n, line in enumerate(path.read_text().splitlines(), 1) if text in line)


def refusal(folder: Path) -> ProjectError:
    with pytest.raises(ProjectError) as raised:
        load_project(folder)
    return raised.value


def test_init_writes_a_project_that_loads_and_plans(project_dir: Path) -> None:
    assert sorted(p.name for p in project_dir.iterdir()) == sorted(PROJECT_FILES)
    project = load_project(project_dir)
    assert (project.name, project.model) == ("demo", "demo")
    assert project.schema.names == ("size", "color", "shape", "amount", "country")
    assert project.settings == {}
    lines = plan_project(project)
    assert lines[0] == f"project demo: model 'demo' ({project_dir.resolve()})"
    assert f"features (18, fingerprint {DEMO_FEATURES.fingerprint()}):" in lines
    assert "  amount_vs_hourly_mean" in lines
    assert "online model: Pipeline (StandardScaler | LogisticRegression)" in lines
    assert "retrain estimator: Pipeline (DictVectorizer | HistGradientBoostingClassifier)" in lines


def test_the_template_is_the_demo_with_eddys_default_models(project_dir: Path) -> None:
    project = load_project(project_dir)
    assert project.fingerprint == DEMO_FEATURES.fingerprint()
    for features, _ in scenario_stream("stagger", DEMO_EVENTS_CHECKED, drift_at=150):
        assert project.schema.problems(features) == []
    default_kind = Settings.model_fields["learner_kind"].default
    assert repr(project.online_model()) == repr(make_model(default_kind).estimator)
    default_estimator = Settings.model_fields["retrain_estimator"].default
    for classification in (True, False):
        ours = project.retrain_estimator(classification)
        eddys = make_estimator(default_estimator, classification, RETRAIN_SEED)
        assert ours.get_params(deep=False).keys() == eddys.get_params(deep=False).keys()
        assert repr(ours) == repr(eddys)


def test_examples_demo_is_the_template() -> None:
    def files(folder: Path) -> dict[str, bytes]:
        return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}

    assert sorted(files(TEMPLATE_DIR)) == sorted(PROJECT_FILES)
    assert files(EXAMPLE_DIR) == files(TEMPLATE_DIR)


def test_every_template_file_ships_as_package_data() -> None:
    config = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["eddy.services.project"]
    for name in PROJECT_FILES:
        assert any(fnmatch.fnmatch(f"template/{name}", p) for p in patterns), name


def test_init_refuses_a_folder_holding_a_project(project_dir: Path) -> None:
    before = (project_dir / FEATURES_FILE).read_text()
    with pytest.raises(ProjectExists, match=PROJECT_FILE):
        init_project(project_dir)
    assert (project_dir / FEATURES_FILE).read_text() == before


def test_eddy_project_wins_over_the_folders_above(tmp_path: Path, project_dir: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    init_project(elsewhere)
    inside = project_dir / "src"
    inside.mkdir()
    assert find_project(inside, {"EDDY_PROJECT": str(elsewhere)}) == elsewhere.resolve()
    assert find_project(tmp_path, {"EDDY_PROJECT": "elsewhere"}) == elsewhere.resolve()


def test_the_nearest_project_upward_is_found(tmp_path: Path, project_dir: Path) -> None:
    deep = project_dir / "src" / "pkg"
    deep.mkdir(parents=True)
    assert find_project(deep, {}) == project_dir.resolve()
    assert find_project(tmp_path, {}) is None


def test_settings_accept_eddy_project(project_dir: Path) -> None:
    assert Settings.from_env({"EDDY_PROJECT": str(project_dir)}).project == project_dir.resolve()


# Each malformed project: how it is broken, then the file and line it must be refused at
# and a part of the message.
Breakage = Callable[[Path], tuple[str, int, str]]


def syntax_error_in_features(root: Path) -> tuple[str, int, str]:
    path = root / FEATURES_FILE
    path.write_text(path.read_text() + "def broken(:\n")
    return FEATURES_FILE, len(path.read_text().splitlines()), "syntax error"


def features_raising_on_import(root: Path) -> tuple[str, int, str]:
    path = root / FEATURES_FILE
    edit(path, '("count", "sum", "mean"), sliding', '("count", "median"), sliding')
    return FEATURES_FILE, line_of(path, '"median"'), "ValueError: unknown aggregate ops"


def features_not_a_feature_set(root: Path) -> tuple[str, int, str]:
    path = root / FEATURES_FILE
    path.write_text(path.read_text() + "FEATURES = ['amount']\n")
    return FEATURES_FILE, line_of(path, "FEATURES = ['amount']"), "not a FeatureSet"


def no_features(root: Path) -> tuple[str, int, str]:
    edit(root / FEATURES_FILE, "FEATURES = ", "OTHER_FEATURES = ")
    return FEATURES_FILE, 1, "defines no FEATURES"


def feature_over_an_undeclared_field(root: Path) -> tuple[str, int, str]:
    edit(root / PROJECT_FILE, '[fields.country]\ntype = "str"\nrequired = false\n', "")
    line = line_of(root / FEATURES_FILE, 'Aggregate("country"')
    return FEATURES_FILE, line, "field 'country', which eddy.toml does not declare"


def online_model_raising(root: Path) -> tuple[str, int, str]:
    path = root / MODELS_FILE
    built = "return preprocessing.StandardScaler() | linear_model.LogisticRegression()"
    edit(path, built, 'raise RuntimeError("no model today")')
    return MODELS_FILE, line_of(path, "no model today"), "RuntimeError: no model today"


def retrain_estimator_not_an_estimator(root: Path) -> tuple[str, int, str]:
    path = root / MODELS_FILE
    edit(path, 'return Pipeline([("encode"', 'return "a string"\n    Pipeline([("encode"')
    line = line_of(path, "def retrain_estimator")
    return MODELS_FILE, line, "retrain_estimator(True) returned a str, which has no fit"


def retrain_estimator_without_probabilities(root: Path) -> tuple[str, int, str]:
    """A retrain scores a classifier's probabilities: LinearSVC has none (it crash-looped
    the retrainer with AttributeError at the first retrain)."""
    path = root / MODELS_FILE
    edit(
        path, "        HistGradientBoostingClassifier(random_state=SEED)\n", "        LinearSVC()\n"
    )
    edit(
        path,
        "from sklearn.pipeline import Pipeline\n",
        "from sklearn.pipeline import Pipeline\nfrom sklearn.svm import LinearSVC\n",
    )
    line = line_of(path, "def retrain_estimator")
    return (
        MODELS_FILE,
        line,
        "retrain_estimator(True) returned a Pipeline, which has no predict_proba",
    )


def retrain_estimator_without_an_encoding(root: Path) -> tuple[str, int, str]:
    """A bare estimator cannot learn a retrain's dict rows (TypeError at every retrain)."""
    path = root / MODELS_FILE
    edit(
        path,
        'return Pipeline([("encode", DictVectorizer(sparse=False)), ("model", model)])',
        "return model",
    )
    line = line_of(path, "def retrain_estimator")
    return MODELS_FILE, line, "retrain_estimator(True) cannot learn a retrain's rows"


def unknown_setting(root: Path) -> tuple[str, int, str]:
    path = root / PROJECT_FILE
    edit(path, "[settings]\n", "[settings]\nretrain_windw = 2000\n")
    return PROJECT_FILE, line_of(path, "retrain_windw"), "did you mean 'retrain_window'?"


def invalid_setting(root: Path) -> tuple[str, int, str]:
    path = root / PROJECT_FILE
    edit(path, "[settings]\n", "[settings]\n\nretrain_window = 3\n")
    return PROJECT_FILE, line_of(path, "retrain_window = 3"), "setting 'retrain_window'"


def bad_field_declaration(root: Path) -> tuple[str, int, str]:
    path = root / PROJECT_FILE
    edit(path, '[fields.color]\ntype = "int"', '[fields.color]\ntype = "colour"')
    return PROJECT_FILE, line_of(path, "[fields.color]"), "field 'color': type 'colour'"


@pytest.mark.parametrize(
    "breakage",
    [
        syntax_error_in_features,
        features_raising_on_import,
        features_not_a_feature_set,
        no_features,
        feature_over_an_undeclared_field,
        online_model_raising,
        retrain_estimator_not_an_estimator,
        retrain_estimator_without_probabilities,
        retrain_estimator_without_an_encoding,
        unknown_setting,
        invalid_setting,
        bad_field_declaration,
    ],
)
def test_a_malformed_project_is_refused_at_its_file_and_line(
    project_dir: Path, breakage: Breakage
) -> None:
    file_name, line, message = breakage(project_dir)
    error = refusal(project_dir)
    assert (error.file, error.line) == (project_dir.resolve() / file_name, line)
    assert message in error.message
    assert str(error).startswith(f"{error.file}:{line}: ")


def test_two_projects_keep_their_own_modules(tmp_path: Path, project_dir: Path) -> None:
    other = tmp_path / "other"
    init_project(other)
    edit(other / FEATURES_FILE, "passthrough=None", 'passthrough=("size",)')
    theirs, ours = load_project(other), load_project(project_dir)
    assert theirs.fingerprint != ours.fingerprint == DEMO_FEATURES.fingerprint()
    # Each project's models module stays registered under its own name (pickle finds a
    # class of models.py there), not replaced by the other project's.
    modules = {theirs.online_model.__module__, ours.online_model.__module__}
    folders = {Path(sys.modules[name].__file__ or "").parent for name in modules}
    assert folders == {other.resolve(), project_dir.resolve()}


SCHEMA = RawSchema.from_table(
    {
        "amount": {"type": "float", "min": 0, "max": 100},
        "count": {"type": "int"},
        "mobile": {"type": "bool", "required": False},
        "country": {"type": "str", "categories": ["NL", "DE"], "required": False},
    }
)


@pytest.mark.parametrize(
    ("fields", "reasons"),
    [
        ({"amount": 1.5, "count": 2}, []),
        ({"amount": 7, "count": 2, "mobile": None, "country": "NL"}, []),
        ({"amount": 1.0, "count": 2, "colour": "red"}, ["unknown field 'colour'"]),
        ({"amount": 1.0}, ["missing required field 'count'"]),
        ({"amount": None, "count": 1}, ["field 'amount' is required, got null"]),
        ({"amount": 1.0, "count": True}, ["field 'count' must be an int, got bool"]),
        ({"amount": 1.0, "count": 2.0}, ["field 'count' must be an int, got float"]),
        ({"amount": "1", "count": 2}, ["field 'amount' must be a float, got str"]),
        ({"amount": 1.0, "count": 2, "mobile": 1}, ["field 'mobile' must be a bool, got int"]),
        ({"amount": 100.5, "count": 2}, ["field 'amount' is 100.5, above its max 100"]),
        ({"amount": -1, "count": 2}, ["field 'amount' is -1, below its min 0"]),
        (
            {"amount": 1.0, "count": 2, "country": "FR"},
            ["field 'country' is 'FR', not one of its categories"],
        ),
        (
            {"zz": 1, "aa": 2},
            [
                "unknown field 'aa'",
                "unknown field 'zz'",
                "missing required field 'amount'",
                "missing required field 'count'",
            ],
        ),
    ],
)
def test_raw_schema_problems(fields: dict[str, object], reasons: list[str]) -> None:
    assert SCHEMA.problems(fields) == reasons


@pytest.mark.parametrize(
    ("declaration", "reason"),
    [
        ({"min": 0}, "type None is not one of"),
        ({"type": "str", "min": 0}, "min applies to numbers"),
        ({"type": "int", "categories": ["a"]}, "categories apply to a str"),
        ({"type": "str", "categories": []}, "non-empty list of strings"),
        ({"type": "float", "min": 5, "max": 1}, "min 5.0 is above max 1.0"),
        ({"type": "float", "max": "high"}, "max must be a finite number"),
        ({"type": "bool", "required": "yes"}, "required must be true or false"),
        ({"type": "float", "unit": "EUR"}, "unknown keys ['unit']"),
        ("float", "expected a table"),
    ],
)
def test_a_bad_field_declaration_is_named(declaration: object, reason: str) -> None:
    with pytest.raises(ValueError, match="field 'price'") as raised:
        RawSchema.from_table({"price": declaration})
    assert reason in str(raised.value)


def test_cli_init_then_plan(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runner = CliRunner()
    folder = tmp_path / "mine"
    written = runner.invoke(app, ["init", str(folder)])
    assert written.exit_code == 0, written.output
    assert f"wrote {folder / PROJECT_FILE}" in written.stdout
    again = runner.invoke(app, ["init", str(folder)])
    assert again.exit_code == 2
    assert "already holds eddy.toml" in again.stderr
    monkeypatch.chdir(folder)
    monkeypatch.delenv("EDDY_PROJECT", raising=False)
    planned = runner.invoke(app, ["plan"])
    assert planned.exit_code == 0, planned.output
    assert planned.stdout.startswith(f"project demo: model 'demo' ({folder.resolve()})")


def test_cli_plan_refuses_a_broken_project(project_dir: Path) -> None:
    feature_over_an_undeclared_field(project_dir)
    line = line_of(project_dir / FEATURES_FILE, 'Aggregate("country"')
    result = CliRunner().invoke(app, ["plan", str(project_dir)])
    assert result.exit_code == 2
    assert result.stderr.startswith(f"{project_dir.resolve() / FEATURES_FILE}:{line}: ")
    assert result.stdout == ""


def test_cli_plan_without_a_project_says_how_to_make_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("EDDY_PROJECT", raising=False)
    result = CliRunner().invoke(app, ["plan"])
    assert result.exit_code == 2
    assert "eddy init DIR" in result.stderr
