from __future__ import annotations

from pathlib import Path

import pytest

from eddy.services.config.settings import Settings, SettingsError
from eddy.streams.transport.config import SecurityProtocol


def test_defaults_work_on_a_laptop() -> None:
    settings = Settings.from_env({})
    assert settings.kafka_bootstrap == "127.0.0.1:9092"
    assert settings.redis_url == "redis://127.0.0.1:6379/0"
    assert not settings.uses_external_kafka
    assert not settings.uses_external_redis


def test_naming_a_broker_or_redis_means_external() -> None:
    settings = Settings.from_env(
        {"EDDY_KAFKA_BOOTSTRAP": "k1:9092,k2:9092", "EDDY_REDIS_URL": "redis://r:6379/1"}
    )
    assert settings.uses_external_kafka
    assert settings.uses_external_redis


def test_unknown_eddy_keys_are_rejected_other_keys_ignored() -> None:
    with pytest.raises(SettingsError, match="EDDY_REDIS_ULR"):
        Settings.from_env({"EDDY_REDIS_ULR": "redis://x", "PATH": "/bin"})
    assert Settings.from_env({"PATH": "/bin", "HOME": "/root"}).partitions == 3


def test_every_problem_is_named_with_its_variable() -> None:
    with pytest.raises(SettingsError) as raised:
        Settings.from_env({"EDDY_PARTITIONS": "zero", "EDDY_KAFKA_BOOTSTRAP": "nohost"})
    assert "EDDY_PARTITIONS" in str(raised.value)
    assert "EDDY_KAFKA_BOOTSTRAP" in str(raised.value)


def test_settings_are_frozen() -> None:
    settings = Settings.from_env({})
    with pytest.raises(ValueError, match="frozen"):
        settings.partitions = 7  # type: ignore[misc]


def test_sasl_needs_mechanism_user_and_password() -> None:
    with pytest.raises(SettingsError, match="SASL"):
        Settings.from_env({"EDDY_KAFKA_SECURITY_PROTOCOL": "SASL_SSL"})
    settings = Settings.from_env(
        {
            "EDDY_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "EDDY_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
            "EDDY_KAFKA_SASL_USERNAME": "eddy",
            "EDDY_KAFKA_SASL_PASSWORD": "s3cret",
            "EDDY_KAFKA_SSL_CAFILE": "/etc/ca.pem",
        }
    )
    assert settings.kafka_security_protocol is SecurityProtocol.SASL_SSL
    assert settings.kafka_ssl_cafile == Path("/etc/ca.pem")


def test_secrets_are_masked_when_printed() -> None:
    settings = Settings.from_env(
        {
            "EDDY_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
            "EDDY_KAFKA_SASL_MECHANISM": "PLAIN",
            "EDDY_KAFKA_SASL_USERNAME": "eddy",
            "EDDY_KAFKA_SASL_PASSWORD": "s3cret",
            "EDDY_REDIS_URL": "redis://default:hunter2@redis:6379/0",
            "EDDY_REDIS_PASSWORD": "hunter3",
        }
    )
    shown = settings.masked()
    text = repr(shown) + repr(settings) + str(settings)
    for secret in ("s3cret", "hunter2", "hunter3"):
        assert secret not in text
    assert shown["redis_url"] == "redis://**********@redis:6379/0"
    assert shown["kafka_sasl_username"] == "eddy"


def test_drift_settings_make_the_learners_drift_config() -> None:
    from eddy.streams.drift.data import DEFAULT_CONFIG

    assert Settings.from_env({}).drift == DEFAULT_CONFIG
    drift = Settings.from_env(
        {
            "EDDY_DRIFT_TESTS": "ks, wasserstein",
            "EDDY_DRIFT_THRESHOLDS": "ks=0.3, wasserstein=0.8",
            "EDDY_DRIFT_CHECK_EVERY": "250",
            "EDDY_DRIFT_CATEGORICAL_TEST": "l_infinity",
        }
    ).drift
    assert drift.numeric_tests == ("ks", "wasserstein")
    assert (drift.thresholds["ks"], drift.thresholds["wasserstein"]) == (0.3, 0.8)
    assert drift.thresholds["psi"] == DEFAULT_CONFIG.thresholds["psi"]
    assert (drift.check_every, drift.categorical_test) == (250, "l_infinity")


@pytest.mark.parametrize(
    ("env", "complaint"),
    [
        ({"EDDY_DRIFT_THRESHOLDS": "psi"}, "test=number"),
        ({"EDDY_DRIFT_THRESHOLDS": "colour=1"}, "test=number"),
        ({"EDDY_DRIFT_TESTS": "psi,t_test"}, "numeric_tests"),
        ({"EDDY_DRIFT_MIN_SAMPLES": "900"}, "min_samples <= window"),
        ({"EDDY_DRIFT_CHECK_EVERY": "0"}, "EDDY_DRIFT_CHECK_EVERY"),
    ],
)
def test_inconsistent_drift_settings_are_refused_at_start(
    env: dict[str, str], complaint: str
) -> None:
    with pytest.raises(SettingsError, match=complaint):
        Settings.from_env(env)


def test_a_request_timeout_within_the_session_timeout_is_refused_at_start_up() -> None:
    with pytest.raises(SettingsError, match="EDDY_KAFKA_REQUEST_TIMEOUT_MS"):
        Settings.from_env(
            {"EDDY_KAFKA_REQUEST_TIMEOUT_MS": "5000", "EDDY_CONSUMER_SESSION_TIMEOUT_MS": "10000"}
        )
