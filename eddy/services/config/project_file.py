"""What a project's ``eddy.toml`` contributes to Eddy's settings: its ``[settings]``
overrides and its model's name.

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
"""

from __future__ import annotations

import tomllib
from collections.abc import Collection
from pathlib import Path
from typing import Any

from eddy.services.project.layout import PROJECT_FILE

PROJECT_TABLE = "project"
SETTINGS_TABLE = "settings"
MODEL_KEY = "model"
MODEL_SETTING = "model_name"
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
    path = root / PROJECT_FILE
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ProjectFileError(f"{path}: missing (create a project with `eddy init`)") from None
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        raise ProjectFileError(f"{path}: not valid TOML: {error}") from None
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


def _table(path: Path, document: dict[str, Any], key: str) -> dict[str, Any]:
    table = document.get(key, {})
    if not isinstance(table, dict):
        raise ProjectFileError(f"{path}: {key} must be a table: [{key}]")
    return table
