"""What a project's ``eddy.toml`` contributes to Eddy's settings: its ``[settings]``
overrides and its model's name; and to its registry: the extra types its scikit-learn
artifacts may hold (``[models] trusted``, :func:`project_trusted`).

:meth:`~eddy.services.config.settings.Settings.from_env` layers them between Eddy's
defaults and the environment (the environment wins): a project says how it runs, an
operator can still change one thing for one process. Only these two tables are read
here, with nothing but :mod:`tomllib`, so that settings never import the project loader
(which imports features and models, and validates its ``[settings]`` with
:class:`~eddy.services.config.settings.Settings` itself); ``load_project`` checks the
whole folder, with a file and line for each problem.

A relative path in ``[settings]`` (``data_dir = ".eddy"``) is relative to the project
folder, wherever a service is started from.

>>> import tempfile
>>> with tempfile.TemporaryDirectory() as tmp:
...     root = Path(tmp)
...     _ = (root / PROJECT_FILE).write_text(
...         '[project]\\nname = "shop"\\nmodel = "churn"\\n\\n'
...         '[settings]\\nretrain_window = 2000\\ndata_dir = "state"\\n'
...     )
...     values = project_values(root, path_fields={"data_dir"})
...     values["model_name"], values["retrain_window"], values["data_dir"] == str(root / "state")
('churn', 2000, True)
>>> trusted_prefixes({"trusted": ["mypackage.transformers."]})
('mypackage.transformers.',)
>>> trusted_refusal("mypackage")
"'mypackage' is not a type-name prefix like 'mypackage.' or 'mypackage.module.Class'"
>>> trusted_refusal("os.")
"'os.' is in the standard library: skops' own defaults trust its safe types"
"""

from __future__ import annotations

import re
import sys
import tomllib
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

from eddy.services.project.layout import PROJECT_FILE
from eddy.streams.messages.raw_schema import RawSchema

PROJECT_TABLE = "project"
SETTINGS_TABLE = "settings"
MODEL_KEY = "model"
MODEL_SETTING = "model_name"
MODELS_TABLE = "models"
FIELDS_TABLE = "fields"
TRUSTED_KEY = "trusted"
# A dotted Python name with at least one dot, ending with one (a package or module:
# every type under it) or not (one type).
TYPE_PREFIX = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*\.([A-Za-z_]\w*)?")
# Settings a project does not override, and why: they say where and what the project is.
NOT_PROJECT_SETTINGS = {
    "project": "a project does not name where it is; EDDY_PROJECT does",
    MODEL_SETTING: "the model's name is [project] model",
}


class ProjectFileError(ValueError):
    """The project's eddy.toml cannot give settings (missing, not TOML, a wrong table)."""


def project_values(root: Path, *, path_fields: Collection[str]) -> dict[str, Any]:
    """The settings ``root``'s eddy.toml sets, by field name: its ``[settings]`` and
    ``model_name`` from ``[project] model``; values of ``path_fields`` that are
    relative paths are made relative to ``root``."""
    path, document = _document(root)
    overrides = _table(path, document, SETTINGS_TABLE)
    for key, reason in NOT_PROJECT_SETTINGS.items():
        if key in overrides:
            raise ProjectFileError(f"{path}: setting {key!r}: {reason}")
    model = _table(path, document, PROJECT_TABLE).get(MODEL_KEY)
    if not isinstance(model, str) or not model.strip():
        raise ProjectFileError(f"{path}: [project] needs {MODEL_KEY} = a non-empty string")
    values = {
        key: str(root / value) if key in path_fields and isinstance(value, str) else value
        for key, value in overrides.items()
    }
    return values | {MODEL_SETTING: model}


def _document(root: Path) -> tuple[Path, dict[str, Any]]:
    """``root``'s eddy.toml, parsed: its path and its tables."""
    path = root / PROJECT_FILE
    try:
        return path, tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ProjectFileError(f"{path}: missing (create a project with `eddy init`)") from None
    except OSError as error:
        raise ProjectFileError(
            f"{root}: not a project folder ({error.strerror}); name the folder that holds "
            f"{PROJECT_FILE}"
        ) from None
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        raise ProjectFileError(f"{path}: not valid TOML: {error}") from None


def _table(path: Path, document: dict[str, Any], key: str) -> dict[str, Any]:
    table = document.get(key, {})
    if not isinstance(table, dict):
        raise ProjectFileError(f"{path}: {key} must be a table: [{key}]")
    return table


def project_trusted(root: Path) -> tuple[str, ...]:
    """The type-name prefixes ``root``'s eddy.toml trusts in its scikit-learn artifacts
    (``[models] trusted``), beyond Eddy's own allow-list: what the deployment's registry
    loads them with (:func:`~eddy.services.registry.opening.open_registry`)."""
    path, document = _document(root)
    try:
        return trusted_prefixes(_table(path, document, MODELS_TABLE))
    except ProjectFileError as error:
        raise ProjectFileError(f"{path}: {error}") from None


def project_fields(root: Path) -> RawSchema:
    """The raw fields ``root``'s eddy.toml declares (``[fields]``), read without
    importing the project's modules: what ``eddy produce`` checks lines against.
    ``eddy plan`` gives a bad declaration's line."""
    path, document = _document(root)
    try:
        return RawSchema.from_table(_table(path, document, FIELDS_TABLE))
    except ValueError as error:
        raise ProjectFileError(f"{path}: [fields]: {error}") from None


def trusted_prefixes(models: Mapping[str, Any]) -> tuple[str, ...]:
    """``trusted`` of a ``[models]`` table: a list of type-name prefixes (none when
    absent); a wrong one raises :class:`ProjectFileError` saying why."""
    trusted = models.get(TRUSTED_KEY, [])
    if not isinstance(trusted, list) or not all(isinstance(p, str) for p in trusted):
        raise ProjectFileError(
            f"[{MODELS_TABLE}] {TRUSTED_KEY} must be a list of type-name prefixes, "
            f'e.g. {TRUSTED_KEY} = ["mypackage.transformers."]'
        )
    for prefix in trusted:
        refused = trusted_refusal(prefix)
        if refused is not None:
            raise ProjectFileError(f"[{MODELS_TABLE}] {TRUSTED_KEY}: {refused}")
    return tuple(trusted)


def trusted_refusal(prefix: str) -> str | None:
    """Why ``prefix`` cannot extend the allow-list (None: it can). A prefix trusts every
    type whose full name starts with it, so it must be a dotted name (``pkg.`` for a
    package, ``pkg.module.Class`` for one type), never a bare word that other packages'
    names also start with, and never the standard library's (``builtins.``, ``os.``):
    skops loads the safe part of it by default, and the rest can run code."""
    if not TYPE_PREFIX.fullmatch(prefix):
        word = prefix.split(".")[0] or "mypackage"
        return f"{prefix!r} is not a type-name prefix like '{word}.' or '{word}.module.Class'"
    if prefix.split(".")[0] in sys.stdlib_module_names:
        return f"{prefix!r} is in the standard library: skops' own defaults trust its safe types"
    return None
