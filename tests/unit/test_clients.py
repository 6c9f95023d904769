from __future__ import annotations

from typing import Any

import pytest
from kafka.errors import CommitFailedError, KafkaConnectionError, RebalanceInProgressError

from eddy.services.config.settings import Settings
from eddy.streams.transport.clients import (
    ClientInvariantError,
    commit_unless_refused,
    consumer_config,
    producer_config,
    security_config,
)


def test_producers_always_wait_for_all_replicas_with_idempotence() -> None:
    config = producer_config(Settings(), linger_ms=5)
    assert config["acks"] == "all"
    assert config["enable_idempotence"] is True
    assert config["linger_ms"] == 5


@pytest.mark.parametrize("override", [{"acks": 1}, {"acks": 0}, {"enable_idempotence": False}])
def test_loosening_a_producer_invariant_fails_at_start_up(override: dict[str, object]) -> None:
    with pytest.raises(ClientInvariantError):
        producer_config(Settings(), **override)


def test_consumers_never_auto_commit() -> None:
    assert consumer_config(Settings(), "g")["enable_auto_commit"] is False
    with pytest.raises(ClientInvariantError, match="enable_auto_commit"):
        consumer_config(Settings(), "g", enable_auto_commit=True)


def test_group_timeouts_come_from_settings() -> None:
    settings = Settings(consumer_session_timeout_ms=6000, consumer_heartbeat_interval_ms=1000)
    config = consumer_config(settings, "g")
    assert (config["session_timeout_ms"], config["heartbeat_interval_ms"]) == (6000, 1000)


def test_sasl_ssl_settings_pass_through() -> None:
    settings = Settings.from_env(
        {
            "EDDY_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "EDDY_KAFKA_SASL_MECHANISM": "SCRAM-SHA-256",
            "EDDY_KAFKA_SASL_USERNAME": "eddy",
            "EDDY_KAFKA_SASL_PASSWORD": "pw",
            "EDDY_KAFKA_SSL_CAFILE": "/ca.pem",
        }
    )
    config = security_config(settings)
    assert config == {
        "security_protocol": "SASL_SSL",
        "ssl_cafile": "/ca.pem",
        "ssl_certfile": None,
        "ssl_keyfile": None,
        "sasl_mechanism": "SCRAM-SHA-256",
        "sasl_plain_username": "eddy",
        "sasl_plain_password": "pw",
    }


class RefusingConsumer:
    """Commits raise ``error`` (None: commits succeed); counts the attempts."""

    def __init__(self, error: Exception | None) -> None:
        self.error = error
        self.commits = 0

    def commit(self) -> None:
        self.commits += 1
        if self.error is not None:
            raise self.error


@pytest.mark.parametrize("error", [CommitFailedError("moved on"), RebalanceInProgressError()])
def test_a_commit_the_group_refuses_is_reported_not_raised(error: Exception) -> None:
    consumer: Any = RefusingConsumer(error)
    assert commit_unless_refused(consumer) is False
    assert consumer.commits == 1
    assert commit_unless_refused(RefusingConsumer(None)) is True  # type: ignore[arg-type]


def test_other_commit_failures_still_raise() -> None:
    consumer: Any = RefusingConsumer(KafkaConnectionError("broker gone"))
    with pytest.raises(KafkaConnectionError):
        commit_unless_refused(consumer)
