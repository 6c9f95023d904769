"""Building faust-streaming apps from Eddy's settings, with Eddy's delivery rules.

Every streaming worker is a faust app built here, so broker address, credentials,
acknowledgements, group timeouts and local state all follow the one settings object:

- producers wait for all in-sync replicas (``producer_acks=-1``);
- consumers never auto-commit (faust commits processed offsets itself, at least once);
- tables keep their state in Kafka changelog topics, and the local copy lives in the
  data folder, so a worker whose disk is wiped rebuilds its tables from Kafka;
- the web server is off unless asked for: metrics come from Eddy's own endpoint.
"""

from __future__ import annotations

import logging
import os
import ssl
from typing import Any, NoReturn

import faust

from eddy.services.config.settings import Settings
from eddy.services.ops import logs
from eddy.streams.transport.config import SecurityProtocol

ACKS_ALL = -1
COMMIT_INTERVAL_S = 1.0
# The exit code of a worker that stopped on a failed batch (BSD's EX_SOFTWARE).
EXIT_FAILED_BATCH = 70

log = logging.getLogger(__name__)


def exit_before_acknowledging(what: str) -> NoReturn:
    """End the process now, from inside an agent's ``except`` block, logging the error.

    faust's answer to an agent's exception is to restart the agent in the same process;
    on the way out ``Stream.take_events`` acknowledges every event of the batch in hand,
    and the commit timer then commits offsets whose records were never applied. Exiting
    at once (``os._exit``: no ``finally``, no shutdown commit) leaves them uncommitted;
    the supervisor starts the worker again from its committed offsets.
    """
    log.critical(
        "exiting before the batch's records are acknowledged",
        extra={"failure": what},
        exc_info=True,
    )
    for handler in logging.getLogger().handlers:
        handler.flush()
    os._exit(EXIT_FAILED_BATCH)


def broker_url(settings: Settings) -> str:
    """faust's broker URL: ``kafka://host:port;kafka://host:port``.

    >>> broker_url(Settings(kafka_bootstrap="a:9092,b:9093"))
    'kafka://a:9092;kafka://b:9093'
    """
    return ";".join(f"kafka://{server.strip()}" for server in settings.kafka_bootstrap.split(","))


def broker_credentials(settings: Settings) -> Any:
    """SASL and/or TLS credentials for faust, or None on a plaintext broker."""
    protocol = settings.kafka_security_protocol
    context = None
    if protocol in (SecurityProtocol.SSL, SecurityProtocol.SASL_SSL):
        context = ssl.create_default_context(
            cafile=str(settings.kafka_ssl_cafile) if settings.kafka_ssl_cafile else None
        )
        if settings.kafka_ssl_certfile:
            context.load_cert_chain(
                str(settings.kafka_ssl_certfile),
                str(settings.kafka_ssl_keyfile) if settings.kafka_ssl_keyfile else None,
            )
    if settings.kafka_sasl_mechanism is None:
        return faust.SSLCredentials(context) if context else None
    password = settings.kafka_sasl_password
    return faust.SASLCredentials(
        username=settings.kafka_sasl_username,
        password=password.get_secret_value() if password else None,
        mechanism=settings.kafka_sasl_mechanism.value,
        ssl_context=context,
    )


def make_app(settings: Settings, app_id: str, **overrides: Any) -> faust.App:
    """A faust app named ``app_id`` (also its consumer group) configured from settings."""
    options: dict[str, Any] = {
        "broker": broker_url(settings),
        "broker_credentials": broker_credentials(settings),
        "broker_client_id": f"{settings.client_id}-{app_id}",
        "broker_session_timeout": settings.consumer_session_timeout_ms / 1000,
        "broker_heartbeat_interval": settings.consumer_heartbeat_interval_ms / 1000,
        "broker_request_timeout": settings.kafka_request_timeout_ms / 1000,
        "broker_max_poll_interval": settings.consumer_max_poll_interval_ms / 1000,
        "broker_commit_interval": COMMIT_INTERVAL_S,
        "producer_acks": ACKS_ALL,
        "consumer_auto_offset_reset": "earliest",
        "topic_partitions": settings.partitions,
        "topic_replication_factor": settings.replication_factor,
        "store": "memory://",
        "datadir": str(settings.data_dir / "faust" / app_id),
        "web_enabled": False,
        "autodiscover": False,
    }
    options.update(overrides)
    return faust.App(app_id, **options)


def run_worker(app: faust.App, settings: Settings) -> None:
    """Run ``app`` until SIGINT/SIGTERM, logging JSON lines to stderr."""
    from faust.worker import Worker

    # faust creates its datadir without parents.
    (settings.data_dir / "faust").mkdir(parents=True, exist_ok=True)
    logs.configure(settings.log_level)
    worker = Worker(
        app, loglevel=settings.log_level, quiet=True, redirect_stdouts=False, override_logging=False
    )
    worker.execute_from_commandline()
