"""The deployment settings every integration test starts from (tests/factories.py).

Checked without a broker (topic creation is replaced): a prefix of the deployment's
own, the data folder given, the overrides applied, and the topics asked for under
exactly those settings before the settings are handed out.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from eddy.services.config.settings import Settings
from tests import factories


def test_a_deployment_gets_its_own_prefix_and_data_folder_and_its_topics(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    created: list[Settings] = []
    monkeypatch.setattr(factories, "ensure_topics", created.append)
    stack = Settings().model_copy(update={"topic_prefix": "eddy-test-session.", "partitions": 2})

    first = factories.deployment_settings(stack, tmp_path / "data", "fw", partitions=3)
    second = factories.deployment_settings(stack, tmp_path / "data", "fw", model_name="m")

    assert re.fullmatch(r"eddy-fw-[0-9a-f]{8}\.", first.topic_prefix)
    assert first.topic_prefix != second.topic_prefix
    assert first.data_dir == tmp_path / "data"
    assert (first.partitions, second.partitions) == (3, 2)
    assert (first.model_name, second.model_name) == (stack.model_name, "m")
    assert created == [first, second]
