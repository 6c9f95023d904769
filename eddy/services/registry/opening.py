"""Opening the deployment's registry: where it lives, the key it signs with, who hears of it.

Every process and command that reads or changes models opens the registry the same way:
under the data directory, signing artifacts with the deployment's key, and (unless it
only reads) announcing every alias change on ``model-updates``
(:func:`~eddy.services.registry.announcements.announcer`). The storage itself
(:mod:`eddy.services.registry.store`) knows nothing of settings or Kafka, so the wiring
lives here, beside it.
"""

from __future__ import annotations

from eddy.services.config.settings import Settings
from eddy.services.registry.announcements import announcer
from eddy.services.registry.store import Registry


def open_registry(settings: Settings, *, announce: bool = True) -> Registry:
    """The deployment's registry, signing with the deployment's key."""
    return Registry(
        settings.data_dir / "registry",
        settings.deployment_key(),
        announcer(settings) if announce else None,
    )
