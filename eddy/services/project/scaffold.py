"""``eddy init``: a new project folder, written from the template shipped with Eddy.

The template (``template/`` beside this module, package data) is Eddy's own demo as a
project: the demo's raw fields, its feature definitions and the default online model
and retrain estimator, written out as code the user owns and changes. ``examples/demo``
in the repository holds the same files, and a test keeps the two equal.
"""

from __future__ import annotations

from pathlib import Path

from eddy.services.project.layout import PROJECT_FILES

TEMPLATE_DIR = Path(__file__).resolve().parent / "template"


class ProjectExists(FileExistsError):
    """The folder already holds project files, which ``eddy init`` never overwrites."""


def init_project(folder: Path) -> list[Path]:
    """Write the template's files into ``folder`` (created if needed) and return them.

    Refuses a folder that already holds any of them (eddy.toml first of all): a user's
    own features or models must not be overwritten by an example.
    """
    present = [name for name in PROJECT_FILES if (folder / name).exists()]
    if present:
        raise ProjectExists(
            f"{folder} already holds {', '.join(present)}: `eddy init` writes a new project "
            "and overwrites nothing (use another folder, or edit the files there)"
        )
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name in PROJECT_FILES:
        with (folder / name).open("xb") as new_file:  # "x": never over a file made meanwhile
            new_file.write((TEMPLATE_DIR / name).read_bytes())
        written.append(folder / name)
    return written
