"""Why a project was refused, and where: the file and the line a user should open.

Every failure to load a project is one :class:`ProjectError`, printed as
``file:line: message`` like a compiler's error, so editors and terminals link to it.
The helpers find the best line for each kind of failure: where a traceback left the
project's own file, where a string literal names a field, where a TOML key is set.

>>> source = 'FEATURES = make(\\n    "amount",\\n    "country",\\n)\\n'
>>> literal_line(source, "country"), literal_line(source, "colour")
(3, 1)
>>> document = '[project]\\nname = "x"\\n\\n[settings]\\nretrain_window = 5\\n'
>>> toml_line(document, "settings", "retrain_window"), toml_line(document, "settings")
(5, 4)
>>> str(ProjectError(Path("p/eddy.toml"), 5, "unknown setting 'x'"))
"p/eddy.toml:5: unknown setting 'x'"
"""

from __future__ import annotations

import ast
import re
import traceback
from pathlib import Path

FIRST_LINE = 1  # where a problem of the whole file is reported
TOML_HEADER = re.compile(r"^\s*\[\s*([^\[\]]+?)\s*\]\s*(#.*)?$")
TOML_KEY = re.compile(r"""^\s*["']?([^"'=\s]+)["']?\s*=""")


class ProjectError(Exception):
    """A project that cannot be loaded: ``file:line: message``."""

    def __init__(self, file: Path, line: int, message: str) -> None:
        super().__init__(f"{file}:{line}: {message}")
        self.file = file
        self.line = line
        self.message = message


def raised_at(file: Path, error: BaseException) -> int:
    """The line of ``file`` nearest to where ``error`` was raised: its innermost frame in
    that file (the project's code, not the library it called), else line 1."""
    target = file.resolve()
    line = FIRST_LINE
    for frame, lineno in traceback.walk_tb(error.__traceback__):
        if Path(frame.f_code.co_filename).resolve() == target:
            line = lineno
    return line


def literal_line(source: str, text: str) -> int:
    """The first line of ``source`` (Python) where ``text`` is a string literal, else 1."""
    lines = [
        node.lineno
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Constant) and node.value == text
    ]
    return min(lines, default=FIRST_LINE)


def assignment_line(source: str, name: str) -> int:
    """The line of ``source`` (Python) where the module last assigns ``name`` at its top
    level (the value it ends up with), else 1.

    >>> assignment_line("X = 1\\nY = 2\\nX: int = 3\\n", "X"), assignment_line("Y = 2\\n", "X")
    (3, 1)
    """
    line = FIRST_LINE
    for node in ast.parse(source).body:
        targets = node.targets if isinstance(node, ast.Assign) else []
        if isinstance(node, ast.AnnAssign):
            targets = [node.target]
        if any(isinstance(t, ast.Name) and t.id == name for t in targets):
            line = node.lineno
    return line


def toml_line(text: str, table: str, key: str | None = None) -> int:
    """The line of a TOML document that sets ``key`` in ``table`` (or opens the table
    ``[table.key]``), else the line of the table's first header (``[table]`` or one of
    its subtables), else line 1. It reads plain headers and ``key = value`` lines, which
    is how eddy.toml is written."""
    current = ""
    header_line: int | None = None
    for number, line in enumerate(text.splitlines(), start=1):
        header = TOML_HEADER.match(line)
        if header:
            current = header.group(1).replace('"', "").replace("'", "").replace(" ", "")
            if key is not None and current == f"{table}.{key}":
                return number
            if header_line is None and (current == table or current.startswith(f"{table}.")):
                header_line = number
            continue
        setting = TOML_KEY.match(line)
        if key is not None and current == table and setting and setting.group(1) == key:
            return number
    return FIRST_LINE if header_line is None else header_line
