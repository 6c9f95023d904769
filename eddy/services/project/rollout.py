"""Rolling a project out (``eddy apply``) and the running workers following it.

``apply_project`` compares the project with the applied revision
(:func:`~eddy.services.project.manifest.changes`) and, when something changed: creates
the topics that are missing, writes the JSON Schemas of the contracts with the project's
raw fields, rebuilds the online store from the retained ``events`` topic when the
definitions fold other states than the deployed ones (those live under their own state
fingerprint, so the running workers keep serving the old ones meanwhile; the rebuild
reads up to the feature workers' committed offsets, what comes after is theirs), and
records the new revision (:mod:`eddy.services.project.applied`).

Each worker of a project (``eddy run features|learner|retrainer|predictor``) refuses to
start with project files that differ from the applied revision, and while it runs, a
:class:`DeploymentFollower` polls the revision every ``EDDY_DEPLOYMENT_CHECK_S``. When
another one is applied, the follower stops the worker the way SIGTERM does (a final
checkpoint, every effect durable, offsets committed) and the worker's process starts
again in place (``exec``) with the new project's modules: nothing is lost or counted
twice, by the same guarantees as any graceful restart. The feature worker's first batch
under new states finds the events it processed between the rebuild and its restart
missing from them and re-applies them from Kafka first (the online store's repair), so
the new states are exact when they serve.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from eddy.services.config.settings import Settings
from eddy.services.project.applied import Applied, AppliedStore
from eddy.services.project.loading import Project
from eddy.services.project.manifest import Change, Manifest, changes, manifest_of
from eddy.streams.features.compute import FeatureSet
from eddy.streams.messages import schema_files
from eddy.streams.messages.raw_schema import RawSchema
from eddy.streams.transport.admin import ensure_topics

log = logging.getLogger(__name__)
Rebuild = Callable[[Settings, FeatureSet, RawSchema | None], Mapping[str, int]]


class NotApplied(RuntimeError):
    """The project's files are not the revision ``eddy apply`` rolled out."""


@dataclass(frozen=True)
class Rollout:
    """What ``eddy apply`` did: the changes, and the revision recorded (None: nothing
    changed, nothing was done)."""

    changes: list[Change]
    applied: Applied | None


def pending_changes(settings: Settings, project: Project) -> tuple[Applied | None, list[Change]]:
    """The revision in force and what applying ``project`` over it would change."""
    current = AppliedStore(settings.data_dir).current()
    return current, changes(None if current is None else current.manifest, manifest_of(project))


def apply_project(settings: Settings, project: Project, *, by: str, rebuild: Rebuild) -> Rollout:
    """Roll ``project`` out over the deployment ``settings`` describe (``settings`` as
    read with the project's own ``[settings]``); ``rebuild`` re-applies the retained
    events to a feature set's states (the feature worker's
    :func:`~eddy.services.workers.features.rebuild`)."""
    store = AppliedStore(settings.data_dir)
    current = store.current()
    manifest = manifest_of(project)
    found = changes(None if current is None else current.manifest, manifest)
    if not found:
        return Rollout([], None)
    ensure_topics(settings)
    schema_files.write(store.schemas, project.schema)
    rebuilt: dict[str, int] = {}
    if current is None or current.manifest.states != manifest.states:
        started = time.monotonic()
        rebuilt = dict(rebuild(settings, project.features, project.schema))
        log.info(
            "online store rebuilt for the applied feature set",
            extra={
                "feature_set": manifest.feature_set,
                **rebuilt,
                "seconds": round(time.monotonic() - started, 3),
            },
        )
    applied = store.record(manifest, at=time.time(), by=by, rebuilt=rebuilt)
    log.info(
        "project applied",
        extra={"revision": applied.revision, "digest": manifest.digest, "changes": len(found)},
    )
    return Rollout(found, applied)


def check_applied(settings: Settings, project: Project) -> Manifest:
    """The manifest of ``project``, which a worker may run: the applied revision's, or
    any before the first ``eddy apply``. Raises :class:`NotApplied` otherwise."""
    manifest = manifest_of(project)
    current = AppliedStore(settings.data_dir).current()
    if current is not None and current.manifest.digest != manifest.digest:
        raise NotApplied(
            f"the project in {project.root} is not what is applied (revision "
            f"{current.revision}, {current.manifest.root}): its files changed since "
            "`eddy apply`. Run `eddy plan` to see how, then `eddy apply` to roll it out "
            "(or restore the applied files)."
        )
    return manifest


class DeploymentFollower:
    """Watches the applied revision for a worker running ``running`` (a digest); once
    another is applied, stops the worker as SIGTERM does, and :meth:`restart` then
    starts the process again in place.

    ``stop`` is what stops the worker gracefully (default: SIGTERM to this process,
    which every worker handles by finishing its batch and checkpointing).
    """

    def __init__(
        self, settings: Settings, running: str, *, stop: Callable[[], None] | None = None
    ) -> None:
        self._store = AppliedStore(settings.data_dir)
        self._running = running
        self._every_s = settings.deployment_check_s
        self._stop = stop
        self._done = threading.Event()
        self.revision: int | None = None  # the revision that asked for a restart

    def start(self) -> None:
        log.info("following the applied project", extra={"digest": self._running})
        threading.Thread(target=self._watch, name="deployment-follower", daemon=True).start()

    def close(self) -> None:
        self._done.set()

    def _watch(self) -> None:
        while not self._done.wait(self._every_s):
            try:
                current = self._store.current()
            except (OSError, ValueError, KeyError) as exc:
                log.warning("could not read the applied revision", extra={"error": repr(exc)})
                continue
            if current is None or current.manifest.digest == self._running:
                continue
            self.revision = current.revision
            log.warning(
                "another revision of the project was applied; restarting with it",
                extra={"revision": current.revision, "digest": current.manifest.digest},
            )
            if self._stop is not None:
                self._stop()
            else:
                os.kill(os.getpid(), signal.SIGTERM)
            return

    def restart(self) -> None:
        """Start this process again, in place, if a new revision asked for it."""
        if self.revision is None:
            return
        logging.shutdown()
        # The same interpreter and arguments as this process was started with.
        os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])  # noqa: S606
