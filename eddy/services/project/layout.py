"""What an Eddy project folder holds, and where the ``eddy`` command finds it.

A project is a folder in the user's repository::

    DIR/
      eddy.toml     [project] name = "...", model = "..." (the model's registry name)
                    [settings] overrides of Eddy's settings, by Settings field name
                      (an EDDY_* variable without the prefix, in lower case), e.g.
                      retrain_window = 2000; validated by Settings
                    [fields.<name>] one table per raw event field: type = "float",
                      "int", "str" or "bool"; optional min and max (numbers),
                      categories (a list of strings), required (default true)
      features.py   defines FEATURES, a FeatureSet (eddy.streams.features.compute)
      models.py     def online_model(): a River estimator or pipeline (learn_one,
                      predict_one)
                    def retrain_estimator(classification: bool): an unfitted
                      scikit-learn estimator or Pipeline (fit, predict, get_params)
      README.md     what each file is, and the commands

Every ``eddy`` command that needs a project takes ``EDDY_PROJECT`` when it is set, and
otherwise the nearest folder holding ``eddy.toml`` from the current folder upward, as
git finds its repository.

>>> import tempfile
>>> with tempfile.TemporaryDirectory() as tmp:
...     root = Path(tmp).resolve()
...     _ = (root / PROJECT_FILE).write_text('[project]\\nname = "x"\\nmodel = "x"\\n')
...     (root / "src" / "deep").mkdir(parents=True)
...     find_project(root / "src" / "deep", {}) == root
True
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

PROJECT_FILE = "eddy.toml"
FEATURES_FILE = "features.py"
MODELS_FILE = "models.py"
README_FILE = "README.md"
PROJECT_FILES = (PROJECT_FILE, FEATURES_FILE, MODELS_FILE, README_FILE)
# The variable naming the project folder; Settings knows it as the field `project`, so
# every other command accepts it too.
PROJECT_VARIABLE = "EDDY_PROJECT"


def find_project(cwd: Path, environ: Mapping[str, str]) -> Path | None:
    """The project folder: ``EDDY_PROJECT`` (relative to ``cwd``) when set, else the
    nearest folder from ``cwd`` upward holding ``eddy.toml``, else None.

    ``EDDY_PROJECT`` is taken as it is, even without an ``eddy.toml``: loading it then
    says what is missing, where a silent fall back to another folder would mislead.
    """
    named = environ.get(PROJECT_VARIABLE)
    if named:
        return (cwd / named).resolve()
    for folder in (cwd.resolve(), *cwd.resolve().parents):
        if (folder / PROJECT_FILE).is_file():
            return folder
    return None
