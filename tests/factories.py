"""What the shared factory fixtures in ``tests/conftest.py`` make, typed for the tests.

A test module never imports ``conftest`` (pytest imports it, and a test module imports
no other test module); it names a fixture's type from here instead.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any, Protocol

from eddy.services.config.settings import Settings
from eddy.streams.transport.admin import ensure_topics


class DeploymentSettings(Protocol):
    """The ``deployment_settings`` fixture: ``make(tag, **overrides)``."""

    def __call__(self, tag: str, **overrides: Any) -> Settings: ...


def deployment_settings(stack: Settings, data_dir: Path, tag: str, **overrides: Any) -> Settings:
    """The stack's settings for a deployment of one test's own, Eddy's topics created.

    The topic prefix ``eddy-<tag>-<random>.`` keeps the deployment's topics, consumer
    groups and Redis keys apart from every other test's (``tag`` says whose they are
    when a broker is inspected); ``data_dir`` keeps its registry and checkpoints apart.
    ``overrides`` are further settings. The topics exist, with their partitions
    visible, when this returns: a service started next finds them.
    """
    settings = stack.model_copy(
        update={
            "topic_prefix": f"eddy-{tag}-{uuid.uuid4().hex[:8]}.",
            "data_dir": data_dir,
            **overrides,
        }
    )
    ensure_topics(settings)
    return settings
