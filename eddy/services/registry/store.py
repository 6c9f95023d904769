"""The model registry: versions, aliases, lineage, deployment history and an audit log.

Embedded default store: SQLite metadata (``<data>/registry/registry.sqlite``, WAL mode,
safe for several processes) and content-addressed artifacts
(``<data>/registry/artifacts/<sha256>``). One naming scheme for both kinds of model:
``<model>`` has versions ``1, 2, ...``; an online (River) snapshot and a batch
(scikit-learn) model are both versions, told apart by ``flavor``. Aliases ``champion``
and ``challenger`` point at versions; every alias change is a deployment-history row
(what served when, who or what changed it, why) and an audit entry, and is announced
through the ``announce`` callback (the ``model-updates`` topic).

Artifacts are signed (:mod:`eddy.streams.store.serialization`): River objects as pickles,
scikit-learn models as skops files loaded with an allow-list of trusted types. Loading verifies the
SHA-256 and the HMAC first; a tampered, unsigned or wrongly signed artifact raises
:class:`~eddy.streams.store.serialization.IntegrityError` and nothing is deserialised.
The allow-list is :data:`TRUSTED_PREFIXES` plus the prefixes the registry is opened with
(a project's ``[models] trusted``), never skops' ``trusted=True``.
"""

from __future__ import annotations

import getpass
import hashlib
import importlib
import json
import os
import socket
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from eddy.services.registry.triggers import AuditAction
from eddy.streams.store.serialization import (
    SKOPS,
    IntegrityError,
    seal,
    sign,
    unseal,
    verify,
    write_atomically,
)

CHAMPION = "champion"
CHALLENGER = "challenger"
ALIASES = (CHAMPION, CHALLENGER)
ROLLBACK_PREFIX = "rollback: "
RIVER = "river"
SKLEARN = "sklearn"
BUSY_TIMEOUT_S = 30.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS versions (
    model TEXT NOT NULL, version INTEGER NOT NULL, flavor TEXT NOT NULL,
    artifact TEXT NOT NULL, created_at REAL NOT NULL, created_by TEXT NOT NULL,
    metrics TEXT NOT NULL, lineage TEXT NOT NULL,
    PRIMARY KEY (model, version));
CREATE INDEX IF NOT EXISTS versions_by_flavor ON versions (model, flavor, version);
CREATE TABLE IF NOT EXISTS aliases (
    model TEXT NOT NULL, alias TEXT NOT NULL, version INTEGER NOT NULL, since REAL NOT NULL,
    PRIMARY KEY (model, alias));
CREATE TABLE IF NOT EXISTS deployments (
    id INTEGER PRIMARY KEY AUTOINCREMENT, model TEXT NOT NULL, alias TEXT NOT NULL,
    version INTEGER, previous INTEGER, at REAL NOT NULL, actor TEXT NOT NULL,
    reason TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT, at REAL NOT NULL, actor TEXT NOT NULL,
    action TEXT NOT NULL, model TEXT NOT NULL, version INTEGER, details TEXT NOT NULL);
"""


class RegistryError(ValueError):
    """A registry request that cannot be honoured (unknown model, version or alias)."""


@dataclass(frozen=True)
class Lineage:
    """Where a version came from: enough to reproduce it and to answer "why"."""

    trained_on: dict[str, list[int]]  # "topic[partition]" -> [first, last] offsets
    feature_set: str
    params: dict[str, Any]
    libraries: dict[str, str]
    code_version: str
    trigger: dict[str, str]  # a registry.triggers.Trigger as stored (Trigger.to_dict)
    trainer: str
    window: dict[str, Any] = field(default_factory=dict)  # times, example counts


@dataclass(frozen=True)
class Version:
    model: str
    version: int
    flavor: str
    artifact: str
    created_at: float
    created_by: str
    metrics: dict[str, float]
    lineage: Lineage

    @property
    def name(self) -> str:
        return f"{self.model}@{self.version}"


@dataclass(frozen=True)
class Deployment:
    model: str
    alias: str
    version: int | None
    previous: int | None
    at: float
    actor: str
    reason: str


def preload_codecs() -> None:
    """Import the scikit-learn artifact codec (skops) now. The registry imports it on
    first use, so that a process that never stores a scikit-learn model never pays for
    it; a retrainer does, and its first import took seconds inside the first retrain,
    delaying the first drift's recovery by as much."""
    importlib.import_module("skops.io")


def trainer_identity(role: str) -> str:
    """``role`` on ``user@host`` (pid): who or what trained or changed something."""
    return f"{role} on {getpass.getuser()}@{socket.gethostname()} (pid {os.getpid()})"


class Registry:
    """``trusted``: type-name prefixes a scikit-learn artifact may hold beyond
    :data:`TRUSTED_PREFIXES` (a project's ``[models] trusted``)."""

    def __init__(
        self,
        root: Path,
        key: bytes,
        announce: Callable[[str, Version, str | None], None] | None = None,
        trusted: Sequence[str] = (),
    ) -> None:
        self.root = root
        self._key = key
        self._announce = announce
        self._trusted = (*TRUSTED_PREFIXES, *trusted)
        self._artifacts = root / "artifacts"
        self._artifacts.mkdir(parents=True, exist_ok=True)
        with self._db() as db:
            db.executescript(_SCHEMA)

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.root / "registry.sqlite", timeout=BUSY_TIMEOUT_S)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            yield db
            db.commit()
        finally:
            db.close()

    # --- writing --------------------------------------------------------------------

    def register(
        self, model: str, flavor: str, obj: Any, metrics: dict[str, float], lineage: Lineage
    ) -> Version:
        """Store ``obj``'s signed artifact and add it as the model's next version."""
        blob = self._encode(flavor, obj)
        digest = hashlib.sha256(blob).hexdigest()
        path = self._artifacts / digest
        intact = path.exists() and hashlib.sha256(path.read_bytes()).hexdigest() == digest
        if not intact:  # new, or a damaged file under this address: (re)write it
            write_atomically(path, blob)
        with self._db() as db:
            db.execute("BEGIN IMMEDIATE")  # serialises concurrent registrations
            (latest,) = db.execute(
                "SELECT COALESCE(MAX(version), 0) FROM versions WHERE model = ?", (model,)
            ).fetchone()
            version = Version(
                model, latest + 1, flavor, digest, time.time(), lineage.trainer, metrics, lineage
            )
            db.execute(
                "INSERT INTO versions VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    model,
                    version.version,
                    flavor,
                    digest,
                    version.created_at,
                    version.created_by,
                    json.dumps(metrics),
                    json.dumps(asdict(lineage)),
                ),
            )
            self._audit(
                db, lineage.trainer, AuditAction.REGISTER, model, version.version, asdict(lineage)
            )
        return version

    def set_alias(self, model: str, alias: str, version: int, actor: str, reason: str) -> None:
        """Point ``alias`` at ``version``; recorded in history and audit, then announced."""
        if alias not in ALIASES:
            raise RegistryError(f"unknown alias {alias!r}; known: {', '.join(ALIASES)}")
        target = self.get(model, version)
        with self._db() as db:
            db.execute("BEGIN IMMEDIATE")
            row = db.execute(
                "SELECT version FROM aliases WHERE model = ? AND alias = ?", (model, alias)
            ).fetchone()
            previous = row[0] if row else None
            db.execute(
                "INSERT OR REPLACE INTO aliases VALUES (?, ?, ?, ?)",
                (model, alias, version, time.time()),
            )
            self._deployment(db, model, alias, version, previous, actor, reason)
            if alias == CHAMPION and self._alias_in(db, model, CHALLENGER) == version:
                db.execute("DELETE FROM aliases WHERE model = ? AND alias = ?", (model, CHALLENGER))
                self._deployment(
                    db, model, CHALLENGER, None, version, actor, f"promoted to champion: {reason}"
                )
        if self._announce is not None:
            self._announce(alias, target, reason)

    def _alias_in(self, db: sqlite3.Connection, model: str, alias: str) -> int | None:
        row = db.execute(
            "SELECT version FROM aliases WHERE model = ? AND alias = ?", (model, alias)
        ).fetchone()
        return None if row is None else int(row[0])

    def _deployment(
        self,
        db: sqlite3.Connection,
        model: str,
        alias: str,
        version: int | None,
        previous: int | None,
        actor: str,
        reason: str,
    ) -> None:
        """One history row and its audit entry: every alias change, removals included."""
        db.execute(
            "INSERT INTO deployments (model, alias, version, previous, at, actor, reason)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (model, alias, version, previous, time.time(), actor, reason),
        )
        action = AuditAction.alias_change(alias, cleared=version is None)
        self._audit(db, actor, action, model, version, {"previous": previous, "reason": reason})

    def promote(self, model: str, version: int, actor: str, reason: str) -> None:
        self.set_alias(model, CHAMPION, version, actor, reason)

    def rollback(self, model: str, actor: str, reason: str) -> int:
        """Undo the last champion change; returns the version that serves again.

        The champion history is replayed as a stack: a promotion pushes (re-promoting
        the current champion changes nothing), a rollback pops. So promote 1, 2, 3 then
        roll back twice serves 2, then 1 — never the version just rolled back from.
        """
        target = self.previous_champion(model)
        if target is None:
            raise RegistryError(f"{model} has no earlier champion to roll back to")
        self.set_alias(model, CHAMPION, target, actor, f"{ROLLBACK_PREFIX}{reason}")
        return target

    def previous_champion(self, model: str) -> int | None:
        """The version a rollback would serve again (see :meth:`rollback`), if any."""
        stack: list[int] = []
        for d in self.history(model):
            if d.alias != CHAMPION or d.version is None:
                continue
            if d.reason.startswith(ROLLBACK_PREFIX):
                stack.pop()
            elif not stack or stack[-1] != d.version:
                stack.append(d.version)
        return stack[-2] if len(stack) >= 2 else None

    def _audit(
        self,
        db: sqlite3.Connection,
        actor: str,
        action: AuditAction,
        model: str,
        version: int | None,
        details: dict[str, Any],
    ) -> None:
        db.execute(
            "INSERT INTO audit (at, actor, action, model, version, details)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (time.time(), actor, action, model, version, json.dumps(details, default=str)),
        )

    def record_decision(
        self, model: str, version: int, actor: str, details: dict[str, Any]
    ) -> None:
        """Audit a promotion decision (promote, challenger, keep) with its evidence."""
        with self._db() as db:
            self._audit(db, actor, AuditAction.DECISION, model, version, details)

    def record(
        self,
        model: str,
        version: int | None,
        actor: str,
        action: AuditAction,
        details: dict[str, Any],
    ) -> None:
        """Audit an act that changes no version or alias (a refused command, ...)."""
        with self._db() as db:
            self._audit(db, actor, action, model, version, details)

    # --- reading --------------------------------------------------------------------

    def models(self) -> list[str]:
        with self._db() as db:
            return [r[0] for r in db.execute("SELECT DISTINCT model FROM versions ORDER BY model")]

    def versions(
        self,
        model: str,
        *,
        flavor: str | None = None,
        created_before: float | None = None,
        newest: int | None = None,
    ) -> list[Version]:
        """The model's versions, oldest first: only ``flavor``'s, only those created
        before ``created_before``, only the ``newest`` N of them, as asked.

        The filters run in SQLite, so a caller that needs a few versions decodes a few
        rows: the learner registers a snapshot every ``EDDY_SNAPSHOT_EVERY`` examples, and
        the dashboard's status and the retrainer's reviews, which ask for the newest ones,
        would otherwise read every snapshot ever taken, ever more slowly."""
        where: list[str] = ["model = ?"]
        args: list[object] = [model]
        if flavor is not None:
            where.append("flavor = ?")
            args.append(flavor)
        if created_before is not None:
            where.append("created_at < ?")
            args.append(created_before)
        with self._db() as db:
            rows = db.execute(
                f"SELECT * FROM versions WHERE {' AND '.join(where)} "  # noqa: S608 (fixed clauses, values bound)
                "ORDER BY version DESC LIMIT ?",
                (*args, -1 if newest is None else newest),
            ).fetchall()
        return [_version(row) for row in reversed(rows)]

    def version_count(self, model: str, *, flavor: str | None = None) -> int:
        """How many versions the model has (of ``flavor`` only, when given)."""
        with self._db() as db:
            (count,) = db.execute(
                "SELECT COUNT(*) FROM versions WHERE model = ? AND flavor = COALESCE(?, flavor)",
                (model, flavor),
            ).fetchone()
        return int(count)

    def learned_exactly(
        self, model: str, flavor: str, trained_on: dict[str, list[int]]
    ) -> int | None:
        """The newest version of ``flavor`` whose lineage learned exactly ``trained_on``
        (None: none). Asked by the learner at every snapshot, so it reads one field of
        each row in SQLite rather than every version whole: an online snapshot every
        ``EDDY_SNAPSHOT_EVERY`` examples grows a registry by thousands of versions a day.
        Offsets are compared as SQLite writes JSON, in the order the learner lists them
        (sorted by topic and partition); a version whose lineage holds a NaN (valid to
        Python's ``json``, not to SQLite) is never found."""
        with self._db() as db:
            row = db.execute(
                "SELECT version FROM versions WHERE model = ? AND flavor = ? "
                # A lineage Python wrote with NaN is not JSON to SQLite: skipped, not raised.
                "AND CASE WHEN json_valid(lineage) THEN json_extract(lineage, '$.trained_on') "
                "END = json(?) ORDER BY version DESC LIMIT 1",
                (model, flavor, json.dumps(trained_on)),
            ).fetchone()
        return None if row is None else int(row[0])

    def get(self, model: str, version: int) -> Version:
        with self._db() as db:
            row = db.execute(
                "SELECT * FROM versions WHERE model = ? AND version = ?", (model, version)
            ).fetchone()
        if row is None:
            raise RegistryError(f"no version {version} of model {model!r}")
        return _version(row)

    def alias(self, model: str, alias: str) -> Version | None:
        with self._db() as db:
            row = db.execute(
                "SELECT version FROM aliases WHERE model = ? AND alias = ?", (model, alias)
            ).fetchone()
        return None if row is None else self.get(model, row[0])

    def aliases(self, model: str) -> dict[str, int]:
        with self._db() as db:
            rows = db.execute("SELECT alias, version FROM aliases WHERE model = ?", (model,))
            return {alias: version for alias, version in rows}

    def history(self, model: str) -> list[Deployment]:
        with self._db() as db:
            rows = db.execute(
                "SELECT model, alias, version, previous, at, actor, reason FROM deployments"
                " WHERE model = ? ORDER BY id",
                (model,),
            ).fetchall()
        return [Deployment(*row) for row in rows]

    def audit_log(self, model: str) -> list[dict[str, Any]]:
        with self._db() as db:
            rows = db.execute(
                "SELECT at, actor, action, version, details FROM audit WHERE model = ? ORDER BY id",
                (model,),
            ).fetchall()
        return [
            {"at": at, "actor": actor, "action": action, "version": v, "details": json.loads(d)}
            for at, actor, action, v, d in rows
        ]

    def load(self, model: str, version: int) -> Any:
        """The deserialised model, only after its signature checks out."""
        record = self.get(model, version)
        blob = (self._artifacts / record.artifact).read_bytes()
        if hashlib.sha256(blob).hexdigest() != record.artifact:
            raise IntegrityError(f"{record.name}: artifact file does not match its address")
        return self._decode(record.flavor, blob)

    # --- artifacts ------------------------------------------------------------------

    def _encode(self, flavor: str, obj: Any) -> bytes:
        if flavor == RIVER:
            return seal(obj, self._key)
        if flavor == SKLEARN:
            import skops.io

            return sign(skops.io.dumps(obj), self._key, SKOPS)
        raise RegistryError(f"unknown flavor {flavor!r}")

    def _decode(self, flavor: str, blob: bytes) -> Any:
        if flavor == RIVER:
            return unseal(blob, self._key)
        header, payload = verify(blob, self._key)
        if header.get("codec") != SKOPS:
            raise IntegrityError(f"expected a skops artifact, got {header.get('codec')!r}")
        import skops.io

        untrusted = skops.io.get_untrusted_types(data=payload)
        allowed = [t for t in untrusted if trusted_type(t, self._trusted)]
        unknown = sorted(set(untrusted) - set(allowed))
        if unknown:
            raise IntegrityError(
                f"skops artifact contains types outside the allow-list: {unknown}; a "
                f"project whose models use them trusts their package in its eddy.toml: "
                f'[models] trusted = ["{_package_of(unknown[0])}"]'
            )
        return skops.io.loads(payload, trusted=allowed)


# Types a scikit-learn artifact may contain beyond skops' own defaults.
TRUSTED_PREFIXES = ("sklearn.", "numpy.", "scipy.sparse.")


def trusted_type(type_name: str, trusted: tuple[str, ...]) -> bool:
    """Whether the allow-list ``trusted`` admits ``type_name``: an entry ending in a dot
    admits everything under it, any other entry names one type exactly (``pkg.mod.Cls``
    does not admit ``pkg.mod.ClsEvil``).

    >>> trusted_type("sklearn.pipeline.Pipeline", ("sklearn.",))
    True
    >>> one = ("pkg.mod.Cls",)
    >>> trusted_type("pkg.mod.ClsEvil", one), trusted_type("pkg.mod.Cls", one)
    (False, True)
    """
    return any(
        type_name.startswith(entry) if entry.endswith(".") else type_name == entry
        for entry in trusted
    )


def _package_of(type_name: str) -> str:
    """The prefix that trusts ``type_name``'s module, for a refusal to suggest.

    >>> _package_of("mypackage.transformers.Clipper")
    'mypackage.transformers.'
    """
    module, _, _ = type_name.rpartition(".")
    return f"{module}." if module else type_name


def _version(row: tuple[Any, ...]) -> Version:
    model, version, flavor, artifact, created_at, created_by, metrics, lineage = row
    return Version(
        model,
        version,
        flavor,
        artifact,
        created_at,
        created_by,
        json.loads(metrics),
        Lineage(**json.loads(lineage)),
    )
