"""Opening the deployment's registry: where it lives, the key it signs with, who hears of
it, which types its scikit-learn artifacts may hold.

Every process and command that reads or changes models opens the registry the same way:
under the data directory, signing artifacts with the deployment's key, (unless it only
reads) announcing every alias change on ``model-updates``
(:func:`~eddy.services.registry.announcements.announcer`), and, with a project
(``EDDY_PROJECT``), loading its scikit-learn artifacts with the project's ``[models]
trusted`` prefixes on top of Eddy's allow-list: the predictor, ``eddy trace`` and the
governance report load what the project's retrainer registered. The storage itself
(:mod:`eddy.services.registry.store`) knows nothing of settings or Kafka, so the wiring
lives here, beside it.
"""

from __future__ import annotations

from eddy.services.config.project_file import project_trusted
from eddy.services.config.settings import Settings
from eddy.services.registry.announcements import announcer
from eddy.services.registry.store import Registry


def open_registry(settings: Settings, *, announce: bool = True) -> Registry:
    """The deployment's registry, signing with the deployment's key and trusting the
    project's extra types (read from its eddy.toml, as its settings are)."""
    return Registry(
        settings.data_dir / "registry",
        settings.deployment_key(),
        announcer(settings) if announce else None,
        trusted=() if settings.project is None else project_trusted(settings.project),
    )
