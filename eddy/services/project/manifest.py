"""What a project deploys, as plain values, and what changes between two of them.

``eddy apply`` records a :class:`Manifest` of the project it rolled out; ``eddy plan``
and ``eddy apply`` compare the project on disk with that record (:func:`changes`), as
``feast plan`` compares a feature repository with its registry. A manifest holds what
an operator reviews (fields, features and their fingerprint, the two models, the
trusted types, the settings overrides) and a digest of every source file, so that an
edit no summary shows (a model's hyperparameter, a helper module) is still a change.

>>> before = Manifest(name="shop", model="fraud", root="/p", feature_set="aa", states="s1",
...     features=("amount", "amount_sum_1h"), fields=("amount: float, required",),
...     online_model="LogisticRegression", retrain_estimator="Pipeline (...)",
...     trusted=(), settings={}, sources={"features.py": "1", "models.py": "2"})
>>> after = replace(before, feature_set="bb", states="s2", features=("amount", "amount_sum_2h"),
...     sources={"features.py": "3", "models.py": "2"})
>>> for change in changes(before, after):
...     print(change)
feature added: amount_sum_2h
feature removed: amount_sum_1h
feature set: aa -> bb: the online store is rebuilt from the retained events
file changed: features.py
>>> changes(before, before)
[]
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace  # noqa: F401 (replace: doctest)
from pathlib import Path
from typing import Any

from eddy.services.project.loading import Project
from eddy.services.project.plan import describe_field, feature_names

SOURCE_SUFFIXES = (".py", ".toml")


@dataclass(frozen=True)
class Manifest:
    """A project as deployed: the reviewable summary and a digest per source file."""

    name: str
    model: str
    root: str
    feature_set: str  # the features' fingerprint, which answers and lineage carry
    states: str  # their state fingerprint: the online store's states are kept under it
    features: tuple[str, ...]
    fields: tuple[str, ...]  # one line per declared raw field (describe_field)
    online_model: str
    retrain_estimator: str
    trusted: tuple[str, ...]
    settings: Mapping[str, Any] = field(default_factory=dict)
    sources: Mapping[str, str] = field(default_factory=dict)  # file name -> sha256

    @property
    def digest(self) -> str:
        """One hash of every source file: equal digests mean the same project code."""
        joined = "\n".join(f"{name} {sha}" for name, sha in sorted(self.sources.items()))
        return hashlib.sha256(joined.encode()).hexdigest()[:16]

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "settings": dict(self.settings), "sources": dict(self.sources)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Manifest:
        return cls(
            name=str(data["name"]),
            model=str(data["model"]),
            root=str(data["root"]),
            feature_set=str(data["feature_set"]),
            states=str(data["states"]),
            features=tuple(data["features"]),
            fields=tuple(data["fields"]),
            online_model=str(data["online_model"]),
            retrain_estimator=str(data["retrain_estimator"]),
            trusted=tuple(data["trusted"]),
            settings=dict(data["settings"]),
            sources=dict(data["sources"]),
        )


@dataclass(frozen=True)
class Change:
    """One difference between the deployed project and the one to apply."""

    what: str
    detail: str

    def __str__(self) -> str:
        return f"{self.what}: {self.detail}"


def manifest_of(project: Project) -> Manifest:
    """The manifest of a loaded project (reads its source files to digest them)."""
    return Manifest(
        name=project.name,
        model=project.model,
        root=str(project.root),
        feature_set=project.fingerprint,
        states=project.features.state_fingerprint(),
        features=tuple(feature_names(project.features, project.schema)),
        fields=tuple(describe_field(f) for f in project.schema.fields),
        online_model=project.online_model_class,
        retrain_estimator=project.retrain_estimator_class,
        trusted=project.trusted,
        settings=dict(project.settings),
        sources=source_digests(project.root),
    )


def source_digests(root: Path) -> dict[str, str]:
    """The sha256 of each ``.py`` and ``.toml`` file directly in the project folder
    (``eddy.toml``, ``features.py``, ``models.py`` and any module they import from it)."""
    return {
        path.name: hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.iterdir())
        if path.is_file() and path.suffix in SOURCE_SUFFIXES
    }


def changes(deployed: Manifest | None, new: Manifest) -> list[Change]:
    """What applying ``new`` over ``deployed`` changes, in reading order (empty: nothing).

    Definitions that fold other states (their state fingerprint) are the change that
    costs: the online store gets states of their own, rebuilt from the retained
    ``events`` topic; a new ratio or operation is served from the stored states.
    """
    if deployed is None:
        return [
            Change("first deployment", f"project {new.name}, model {new.model!r}"),
            Change("feature set", f"{new.feature_set}: built from the retained events"),
        ]
    found: list[Change] = []
    found += _scalar("project", deployed.name, new.name)
    found += _scalar("model name", deployed.model, new.model)
    found += _scalar("project folder", deployed.root, new.root)
    fields = _listed("field", deployed.fields, new.fields, key=_field_name)
    found += fields
    if fields:
        found.append(
            Change(
                "note",
                "the stored states keep the events they hold; events refused under the "
                "old fields are replayed with `eddy dlq replay -e raw_fields`",
            )
        )
    found += _listed("feature", deployed.features, new.features)
    if deployed.feature_set != new.feature_set:
        consequence = (
            "the online store is rebuilt from the retained events"
            if deployed.states != new.states
            else "served from the stored states as they are (no rebuild)"
        )
        found.append(
            Change("feature set", f"{deployed.feature_set} -> {new.feature_set}: {consequence}")
        )
    found += _scalar("online model", deployed.online_model, new.online_model)
    found += _scalar("retrain estimator", deployed.retrain_estimator, new.retrain_estimator)
    found += _listed("trusted type", deployed.trusted, new.trusted)
    for key in sorted(set(deployed.settings) | set(new.settings)):
        old, now = deployed.settings.get(key), new.settings.get(key)
        if old != now:
            found.append(Change(f"setting {key}", f"{_shown(old)} -> {_shown(now)}"))
    for name in sorted(set(deployed.sources) | set(new.sources)):
        old_sha, new_sha = deployed.sources.get(name), new.sources.get(name)
        if old_sha == new_sha:
            continue
        verb = "added" if old_sha is None else "removed" if new_sha is None else "changed"
        found.append(Change(f"file {verb}", name))
    return found


def _scalar(what: str, old: str, new: str) -> list[Change]:
    return [] if old == new else [Change(what, f"{old} -> {new}")]


def _listed(what: str, old: Sequence[str], new: Sequence[str], *, key: Any = None) -> list[Change]:
    """Added, removed and (with ``key`` naming an item) changed items of two lists."""
    key = key or (lambda item: item)
    old_by, new_by = {key(i): i for i in old}, {key(i): i for i in new}
    found = [Change(f"{what} added", new_by[k]) for k in new_by if k not in old_by]
    found += [Change(f"{what} removed", old_by[k]) for k in old_by if k not in new_by]
    found += [
        Change(f"{what} changed", f"{old_by[k]} -> {new_by[k]}")
        for k in new_by
        if k in old_by and old_by[k] != new_by[k]
    ]
    return found


def _field_name(line: str) -> str:
    return line.split(":", 1)[0]


def _shown(value: object) -> str:
    return "(default)" if value is None else repr(value)
