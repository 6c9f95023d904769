"""What the transport needs to know of the deployment, as protocols the settings satisfy.

The data plane never imports the control plane, yet its clients are built from the
deployment's one settings object (:class:`eddy.services.config.settings.Settings`).
These protocols name the fields a Kafka or Redis client reads, so the settings object
is passed in as it is and the arrow points one way.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Protocol

from pydantic import SecretStr


class SecurityProtocol(StrEnum):
    PLAINTEXT = "PLAINTEXT"
    SSL = "SSL"
    SASL_PLAINTEXT = "SASL_PLAINTEXT"
    SASL_SSL = "SASL_SSL"


class SaslMechanism(StrEnum):
    PLAIN = "PLAIN"
    SCRAM_SHA_256 = "SCRAM-SHA-256"
    SCRAM_SHA_512 = "SCRAM-SHA-512"


class KafkaConfig(Protocol):
    """How to reach the broker and how a client behaves there."""

    @property
    def kafka_bootstrap(self) -> str: ...
    @property
    def client_id(self) -> str: ...
    @property
    def kafka_request_timeout_ms(self) -> int: ...
    @property
    def consumer_session_timeout_ms(self) -> int: ...
    @property
    def consumer_heartbeat_interval_ms(self) -> int: ...
    @property
    def consumer_max_poll_interval_ms(self) -> int: ...
    @property
    def kafka_security_protocol(self) -> SecurityProtocol: ...
    @property
    def kafka_sasl_mechanism(self) -> SaslMechanism | None: ...
    @property
    def kafka_sasl_username(self) -> str | None: ...
    @property
    def kafka_sasl_password(self) -> SecretStr | None: ...
    @property
    def kafka_ssl_cafile(self) -> Path | None: ...
    @property
    def kafka_ssl_certfile(self) -> Path | None: ...
    @property
    def kafka_ssl_keyfile(self) -> Path | None: ...


class TopicLayout(KafkaConfig, Protocol):
    """The broker, plus how Eddy's topics are named and laid out on it."""

    @property
    def topic_prefix(self) -> str: ...
    @property
    def partitions(self) -> int: ...
    @property
    def replication_factor(self) -> int: ...
    @property
    def topic_check_s(self) -> float: ...


class RedisConfig(Protocol):
    """How to reach Redis."""

    @property
    def redis_url(self) -> str: ...
    @property
    def redis_password(self) -> SecretStr | None: ...
    @property
    def redis_ssl_ca_certs(self) -> Path | None: ...
    @property
    def redis_cluster(self) -> bool: ...
    @property
    def redis_cluster_nodes(self) -> str: ...
