"""Loading a project folder into one checked :class:`Project`, or one :class:`ProjectError`.

``load_project`` reads ``eddy.toml`` (the project's name and model, its settings
overrides, the declared raw fields, the extra types its scikit-learn artifacts may
hold), imports ``features.py`` and ``models.py`` from the folder by file path, and
checks what a running system would otherwise find out late: that the settings are
valid, that every feature reads only declared fields, that the trusted type prefixes
are dotted names outside the standard library, and that both model factories build
something with the right verbs (each is called once). The first problem found is raised
with its file and line (:mod:`eddy.services.project.errors`).

A project's modules are imported under a private name derived from the folder's path
(``_eddy_project_<hash>_features``), so two projects never share a module, and loading
a project again replaces its modules instead of reusing stale ones.
"""

from __future__ import annotations

import difflib
import hashlib
import importlib.util
import os
import re
import sys
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from pydantic import ValidationError

from eddy.services.config.project_file import (
    FIELDS_TABLE,
    MODEL_KEY,
    MODELS_TABLE,
    NOT_PROJECT_SETTINGS,
    PROJECT_TABLE,
    SETTINGS_TABLE,
    TRUSTED_KEY,
    ProjectFileError,
    trusted_prefixes,
)
from eddy.services.config.settings import (
    ENV_PREFIX,
    PRIVATE_SETTING_ADVICE,
    PRIVATE_SETTINGS,
    Settings,
)
from eddy.services.project.errors import (
    FIRST_LINE,
    ProjectError,
    assignment_line,
    literal_line,
    raised_at,
    toml_line,
)
from eddy.services.project.layout import FEATURES_FILE, MODELS_FILE, PROJECT_FILE
from eddy.streams.features.compute import TIME_SINCE_LAST, FeatureSet
from eddy.streams.messages.raw_schema import FieldDeclarationError, RawSchema

PROJECT_KEYS = ("name", MODEL_KEY)
FEATURES_NAME = "FEATURES"
ONLINE_MODEL = "online_model"
RETRAIN_ESTIMATOR = "retrain_estimator"
ONLINE_VERBS = ("learn_one", "predict_one")
RETRAIN_VERBS = ("fit", "predict", "get_params")
# A retrain scores a classifier's probabilities (log loss, the trivial baseline's).
CLASSIFIER_VERBS = (*RETRAIN_VERBS, "predict_proba")
# What a retrain estimator is fitted on when checked: numeric dicts, as a retrain's
# rows are (fit_vectors), both classes alike often; enough rows that scikit-learn's
# default 5-fold cross-validation (CalibratedClassifierCV, LogisticRegressionCV) sees
# both classes in every fold, so a sound estimator is never refused for the check.
CHECK_ROWS = 10
CHECK_COLUMN = "x"
MODULE_PREFIX = "_eddy_project_"
MODULE_HASH_CHARS = 16
TOML_ERROR_LINE = re.compile(r"at line (\d+)")


@dataclass(frozen=True)
class Project:
    """A loaded, checked project: what eddy.toml declares and what its modules define."""

    root: Path
    name: str
    model: str
    settings: Mapping[str, Any]  # the [settings] overrides as written, valid for Settings
    schema: RawSchema
    features: FeatureSet
    online_model: Callable[[], Any]
    retrain_estimator: Callable[[bool], Any]
    fingerprint: str  # of ``features``: what a trained model's lineage records
    online_model_class: str  # what online_model() built when checked, e.g. "Pipeline (...)"
    online_task: str  # what it learns: "classification" or "regression" (task_of)
    # online_model_class when it is a binary classifier (true/false or 0/1 labels
    # only, binary_model_of); None when it learns any label its task allows.
    online_binary: str | None
    retrain_estimator_class: str  # what retrain_estimator(True) built when checked
    # Type-name prefixes a scikit-learn artifact of the project may hold beyond Eddy's
    # own allow-list ([models] trusted): the registry loads nothing else.
    trusted: tuple[str, ...]


def load_project(root: Path) -> Project:
    """The project in ``root``, checked; raises :class:`ProjectError` on the first problem."""
    # Imported here, not with this module: River, scikit-learn and pandas are about
    # 100 MiB of every process that imports the CLI, a feature worker without a
    # project included, which never needs them.
    from eddy.streams.learning.models import binary_model_of, model_class, task_of

    root = root.resolve()
    path = root / PROJECT_FILE
    text = _read(path, f"no {PROJECT_FILE}: not an Eddy project (create one with `eddy init`)")
    document = _parse_toml(path, text)
    name, model = _project_names(path, text, document)
    settings = _settings_overrides(path, text, document)
    schema = _raw_schema(path, text, document)
    features = _feature_set(root / FEATURES_FILE, schema)
    trusted = _trusted_prefixes(path, text, document)
    models = _model_factories(root / MODELS_FILE)
    return Project(
        root=root,
        name=name,
        model=model,
        settings=settings,
        schema=schema,
        features=features,
        online_model=models.online_model,
        retrain_estimator=models.retrain_estimator,
        fingerprint=features.fingerprint(),
        online_model_class=model_class(models.online),
        online_task=task_of(models.online),
        online_binary=binary_model_of(models.online),
        retrain_estimator_class=model_class(models.retrain),
        trusted=trusted,
    )


def raw_inputs(features: FeatureSet) -> tuple[str, ...]:
    """The raw event fields ``features`` read: aggregated sources, ratio operands and
    category lists that are not features of the set itself, and the passthrough names.

    >>> from eddy.streams.features.definitions import FEATURES
    >>> raw_inputs(FEATURES)
    ('amount', 'country')
    """
    derived = {name for a in features.aggregates for name in a.op_names}
    derived |= {ratio.name for ratio in features.ratios}
    derived |= {TIME_SINCE_LAST} if features.time_since_last else set()
    named = [a.source for a in features.aggregates]
    named += [name for r in features.ratios for name in (r.numerator, r.denominator)]
    named += [c.feature for c in features.categories]
    named = [name for name in named if name not in derived]
    named += list(features.passthrough or ())
    return tuple(dict.fromkeys(named))


def _read(path: Path, missing: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ProjectError(path, FIRST_LINE, missing) from None
    except UnicodeDecodeError as error:
        raise ProjectError(path, FIRST_LINE, f"not UTF-8 text: {error}") from None


def _parse_toml(path: Path, text: str) -> dict[str, Any]:
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        found = TOML_ERROR_LINE.search(str(error))
        line = int(found.group(1)) if found else FIRST_LINE
        raise ProjectError(path, line, f"not valid TOML: {error}") from None
    known = (PROJECT_TABLE, SETTINGS_TABLE, FIELDS_TABLE, MODELS_TABLE)
    for key in document:
        if key not in known:
            raise ProjectError(
                path, toml_line(text, key), f"unknown table [{key}]; known: {', '.join(known)}"
            )
    return document


def _table(path: Path, text: str, document: Mapping[str, Any], key: str) -> dict[str, Any]:
    table = document.get(key, {})
    if not isinstance(table, dict):
        raise ProjectError(path, toml_line(text, "", key), f"{key} must be a table: [{key}]")
    return table


def _project_names(path: Path, text: str, document: Mapping[str, Any]) -> tuple[str, str]:
    table = _table(path, text, document, PROJECT_TABLE)
    for key in table:
        if key not in PROJECT_KEYS:
            raise ProjectError(
                path,
                toml_line(text, PROJECT_TABLE, key),
                f"unknown key {key!r} in [project]; known: {', '.join(PROJECT_KEYS)}",
            )
    name, model = (table.get(key) for key in PROJECT_KEYS)
    for key, value in zip(PROJECT_KEYS, (name, model), strict=True):
        if not isinstance(value, str) or not value.strip():
            raise ProjectError(
                path,
                toml_line(text, PROJECT_TABLE, key),
                f"[project] needs {key} = a non-empty string",
            )
    return str(name), str(model)


def _settings_overrides(path: Path, text: str, document: Mapping[str, Any]) -> dict[str, Any]:
    """The [settings] table, each key a Settings field and the whole valid for Settings
    over its defaults (Settings.from_env puts the environment's values over them when a
    service runs)."""
    overrides = _table(path, text, document, SETTINGS_TABLE)
    known = Settings.model_fields
    for key in overrides:
        if key in NOT_PROJECT_SETTINGS or key in PRIVATE_SETTINGS:
            reason = NOT_PROJECT_SETTINGS.get(key, PRIVATE_SETTING_ADVICE)
            raise ProjectError(
                path, toml_line(text, SETTINGS_TABLE, key), f"setting {key!r}: {reason}"
            )
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ProjectError(
                path,
                toml_line(text, SETTINGS_TABLE, key),
                f"unknown setting {key!r} (settings are EDDY_* variables without the "
                f"prefix, in lower case){hint}",
            )
    # Validated with the environment's EDDY_* values beside them, as a service reads
    # them: a rule across settings (a SASL protocol needs its password) may rest on a
    # secret only the environment holds.
    environment = {
        name: os.environ[f"{ENV_PREFIX}{name.upper()}"]
        for name in known
        if f"{ENV_PREFIX}{name.upper()}" in os.environ and name not in NOT_PROJECT_SETTINGS
    }
    try:
        Settings.model_validate({**environment, **overrides})
    except ValidationError as error:
        first = error.errors()[0]
        invalid = str(first["loc"][0]) if first["loc"] else None
        where = f"setting {invalid!r}" if invalid else "[settings]"
        raise ProjectError(
            path, toml_line(text, SETTINGS_TABLE, invalid), f"{where}: {first['msg']}"
        ) from None
    return overrides


def _raw_schema(path: Path, text: str, document: Mapping[str, Any]) -> RawSchema:
    fields = _table(path, text, document, FIELDS_TABLE)
    if not fields:
        raise ProjectError(
            path,
            toml_line(text, FIELDS_TABLE),
            "no raw fields declared: add a [fields.<name>] table (type = ...) for each field "
            "your events carry",
        )
    try:
        return RawSchema.from_table(fields)
    except FieldDeclarationError as error:
        raise ProjectError(path, toml_line(text, FIELDS_TABLE, error.field), str(error)) from None


def _feature_set(path: Path, schema: RawSchema) -> FeatureSet:
    module, source = _import(path)
    features = getattr(module, FEATURES_NAME, None)
    if features is None:
        raise ProjectError(
            path, FIRST_LINE, f"defines no {FEATURES_NAME}: a FeatureSet of the project's features"
        )
    if not isinstance(features, FeatureSet):
        raise ProjectError(
            path,
            assignment_line(source, FEATURES_NAME),
            f"{FEATURES_NAME} is a {type(features).__name__}, not a FeatureSet "
            "(eddy.streams.features.compute)",
        )
    for field in raw_inputs(features):
        if field not in schema.names:
            raise ProjectError(
                path,
                literal_line(source, field),
                f"a feature reads field {field!r}, which {PROJECT_FILE} does not declare "
                f"(add [fields.{field}])",
            )
    return features


@dataclass(frozen=True)
class _Models:
    """Both factories of models.py and what each built when checked."""

    online_model: Callable[[], Any]
    retrain_estimator: Callable[[bool], Any]
    online: Any
    retrain: Any


def _model_factories(path: Path) -> _Models:
    """Both factories of models.py, called to check what they build: the retrain
    estimator for both tasks, each fitted on a few rows as a retrain would."""
    module, _ = _import(path)
    online_model = _factory(module, path, ONLINE_MODEL, "()")
    retrain_estimator = _factory(module, path, RETRAIN_ESTIMATOR, "(classification: bool)")
    online = _built(path, online_model, ONLINE_MODEL, (), ONLINE_VERBS)
    retrain = _built(path, retrain_estimator, RETRAIN_ESTIMATOR, (True,), CLASSIFIER_VERBS)
    regressor = _built(path, retrain_estimator, RETRAIN_ESTIMATOR, (False,), RETRAIN_VERBS)
    _learns_rows(path, retrain_estimator, retrain, classification=True)
    _learns_rows(path, retrain_estimator, regressor, classification=False)
    return _Models(online_model, retrain_estimator, online, retrain)


def _trusted_prefixes(path: Path, text: str, document: Mapping[str, Any]) -> tuple[str, ...]:
    """The [models] table: ``trusted``, the type-name prefixes a scikit-learn artifact
    of the project may hold beyond Eddy's allow-list, each checked by
    :func:`~eddy.services.config.project_file.trusted_refusal`."""
    table = _table(path, text, document, MODELS_TABLE)
    for key in table:
        if key != TRUSTED_KEY:
            raise ProjectError(
                path,
                toml_line(text, MODELS_TABLE, key),
                f"unknown key {key!r} in [{MODELS_TABLE}]; known: {TRUSTED_KEY}",
            )
    try:
        return trusted_prefixes(table)
    except ProjectFileError as error:
        raise ProjectError(path, toml_line(text, MODELS_TABLE, TRUSTED_KEY), str(error)) from None


def _import(path: Path) -> tuple[ModuleType, str]:
    """The module in ``path``, imported under the project's private name, and its source."""
    source = _read(path, f"missing: a project has {path.name} beside {PROJECT_FILE}")
    folder = hashlib.sha256(str(path.parent).encode()).hexdigest()[:MODULE_HASH_CHARS]
    name = f"{MODULE_PREFIX}{folder}_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ProjectError(path, FIRST_LINE, "cannot be imported as a Python module")
    module = importlib.util.module_from_spec(spec)
    # Registered while it runs, as an import would: dataclasses and pickle look it up.
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except SyntaxError as error:
        sys.modules.pop(name, None)
        where = Path(error.filename) if error.filename else path
        raise ProjectError(
            where, error.lineno or FIRST_LINE, f"syntax error: {error.msg}"
        ) from None
    except Exception as error:
        sys.modules.pop(name, None)
        raise ProjectError(
            path, raised_at(path, error), f"importing {path.name} raised {_raised(error)}"
        ) from error
    return module, source


def _factory(module: ModuleType, path: Path, name: str, signature: str) -> Callable[..., Any]:
    factory: Callable[..., Any] | None = getattr(module, name, None)
    if factory is None or not callable(factory):
        raise ProjectError(path, FIRST_LINE, f"defines no function {name}{signature}")
    return factory


def _built(
    path: Path,
    factory: Callable[..., Any],
    name: str,
    arguments: tuple[Any, ...],
    verbs: tuple[str, ...],
) -> Any:
    call = f"{name}({', '.join(map(repr, arguments))})"
    try:
        built = factory(*arguments)
    except Exception as error:
        raise ProjectError(
            path, raised_at(path, error), f"{call} raised {_raised(error)}"
        ) from error
    missing = [verb for verb in verbs if not callable(getattr(built, verb, None))]
    if missing:
        raise ProjectError(
            path,
            _defined_at(path, factory),
            f"{call} returned a {type(built).__name__}, which has no {', '.join(missing)} "
            f"(a model needs {', '.join(verbs)})",
        )
    return built


def _learns_rows(
    path: Path, factory: Callable[..., Any], estimator: Any, *, classification: bool
) -> None:
    """Fit ``estimator`` on a few rows shaped as a retrain's (a list of numeric dicts)
    and ask it what a retrain asks: a failure here (a bare estimator that takes no
    dicts, a missing encoding step) would otherwise come up at the first retrain."""
    rows = [{CHECK_COLUMN: float(i)} for i in range(CHECK_ROWS)]
    labels: list[Any] = [i % 2 == 1 if classification else float(i) for i in range(CHECK_ROWS)]
    answer = "predict_proba" if classification else "predict"
    call = f"{RETRAIN_ESTIMATOR}({classification!r})"
    try:
        estimator.fit(rows, labels)
        getattr(estimator, answer)(rows)
    except Exception as error:
        line = raised_at(path, error)
        raise ProjectError(
            path,
            _defined_at(path, factory) if line == FIRST_LINE else line,
            f"{call} cannot learn a retrain's rows (a list of dicts, feature name to "
            f"number: start it with a DictVectorizer): fit and {answer} raised "
            f"{_raised(error)}",
        ) from error


def _defined_at(path: Path, function: Callable[..., Any]) -> int:
    """The line where ``function`` is defined, when it is defined in ``path``."""
    code = getattr(function, "__code__", None)
    if code is not None and Path(code.co_filename).resolve() == path.resolve():
        return int(code.co_firstlineno)
    return FIRST_LINE


def _raised(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"
