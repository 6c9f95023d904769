"""The record of what ``eddy apply`` rolled out: one file per revision, beside the registry.

Layout, under the deployment's data directory (where the registry and checkpoints
live, which every worker of the deployment already reads)::

    deployment/
      applied.json            the current revision (replaced atomically)
      history/000001.json     every revision ever applied, never rewritten
      schemas/                the JSON Schemas of the applied contracts
      .lock                   held while a revision is written

A revision holds the project's :class:`~eddy.services.project.manifest.Manifest`, who
applied it and when, and what its rebuild of the online store re-applied. Workers poll
``applied.json`` (:mod:`eddy.services.project.rollout`); readers never see a partly
written file, and two ``eddy apply`` at once get consecutive revisions.
"""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from eddy.services.project.manifest import Manifest
from eddy.streams.store.serialization import write_atomically

DEPLOYMENT_DIR = "deployment"
CURRENT_FILE = "applied.json"
HISTORY_DIR = "history"
SCHEMAS_DIR = "schemas"
LOCK_FILE = ".lock"
REVISION_DIGITS = 6


@dataclass(frozen=True)
class Applied:
    """One applied revision of a project."""

    revision: int
    manifest: Manifest
    applied_at: float  # epoch seconds
    applied_by: str
    rebuilt: dict[str, int] = field(default_factory=dict)  # the rebuild's counts (none: {})

    def as_dict(self) -> dict[str, Any]:
        return {
            "revision": self.revision,
            "applied_at": self.applied_at,
            "applied_by": self.applied_by,
            "rebuilt": self.rebuilt,
            "manifest": self.manifest.as_dict(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Applied:
        return cls(
            revision=int(data["revision"]),
            manifest=Manifest.from_dict(data["manifest"]),
            applied_at=float(data["applied_at"]),
            applied_by=str(data["applied_by"]),
            rebuilt={str(k): int(v) for k, v in data.get("rebuilt", {}).items()},
        )


class AppliedStore:
    """The applied revisions of one deployment (``data_dir``)."""

    def __init__(self, data_dir: Path) -> None:
        self.folder = data_dir / DEPLOYMENT_DIR

    @property
    def schemas(self) -> Path:
        return self.folder / SCHEMAS_DIR

    def current(self) -> Applied | None:
        """The revision in force (None: nothing applied yet)."""
        path = self.folder / CURRENT_FILE
        try:
            return Applied.from_dict(orjson.loads(path.read_bytes()))
        except FileNotFoundError:
            return None

    def history(self) -> list[Applied]:
        """Every revision, oldest first."""
        folder = self.folder / HISTORY_DIR
        if not folder.is_dir():
            return []
        return [Applied.from_dict(orjson.loads(p.read_bytes())) for p in sorted(folder.iterdir())]

    def record(self, manifest: Manifest, *, at: float, by: str, rebuilt: dict[str, int]) -> Applied:
        """Write ``manifest`` as the next revision and make it the current one."""
        with self._locked():
            current = self.current()
            applied = Applied(
                revision=1 if current is None else current.revision + 1,
                manifest=manifest,
                applied_at=at,
                applied_by=by,
                rebuilt=dict(rebuilt),
            )
            data = orjson.dumps(applied.as_dict(), option=orjson.OPT_INDENT_2)
            history = self.folder / HISTORY_DIR / f"{applied.revision:0{REVISION_DIGITS}d}.json"
            write_atomically(history, data)
            write_atomically(self.folder / CURRENT_FILE, data)
            return applied

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.folder.mkdir(parents=True, exist_ok=True)
        with (self.folder / LOCK_FILE).open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
