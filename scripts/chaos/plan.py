"""What a chaos run does: its mode, its scenarios in order, and the deployment's settings.

Pure: nothing here starts or touches anything.

>>> [s.name for s in SCENARIOS][:3]
['baseline', 'kill-features', 'kill-learner']
>>> SHORT.scenarios[0].name
'kill-features'
>>> SHORT.kills, FULL.kills > SHORT.kills
(1, True)
>>> [s.name for s in FULL.cluster_scenarios], SHORT.cluster_scenarios
(['cluster-baseline', 'kill-broker', 'kill-redis-master'], ())
>>> only = FULL.only({"kill-broker", "kafka-restart"})
>>> [s.name for s in only.scenarios], [s.name for s in only.cluster_scenarios]
(['kafka-restart'], ['kill-broker'])
"""

from __future__ import annotations

import signal
from dataclasses import dataclass, replace
from pathlib import Path

from pydantic import SecretStr

from eddy.services.config.settings import Settings

MODEL = "chaos"
TOPIC_PREFIX = "chaos."
PARTITIONS = 3
# Group failover in seconds, as in the integration tests (the broker's minimum session).
SESSION_TIMEOUT_MS = 6_000
HEARTBEAT_MS = 1_000
CHECKPOINT_EVERY = 200
CHECKPOINT_INTERVAL_S = 1.0
SNAPSHOT_EVERY = 1_000
RETRAIN_WINDOW = 1_000
RETRAIN_MIN_HOLDOUT = 20
RETRAIN_DEBOUNCE_S = 1.0
# The slow-retrain scenario's retrainer reads every example there is.
SLOW_RETRAIN_WINDOW = 1_000_000


@dataclass(frozen=True)
class Scenario:
    name: str
    fault: str  # what is done to the deployment, for the table and the docs


SCENARIOS = (
    Scenario("baseline", "nothing: the control row"),
    Scenario("kill-features", "SIGKILL the feature worker under load"),
    Scenario("kill-learner", "SIGKILL the learner under load"),
    Scenario("kill-predictor", "SIGKILL the predictor under load"),
    Scenario("kill-retrainer", "SIGKILL the retrainer right after it registers a retrain"),
    Scenario("kafka-restart", "stop the Kafka broker, keep it down, start it again"),
    Scenario("redis-outage", "stop Redis (SIGTERM), keep it down, start it again"),
    Scenario("redis-loss", "SIGKILL Redis and start it without its data (an empty failover)"),
    Scenario("redis-full", "Redis out of memory (maxmemory 1, noeviction), then not"),
    Scenario("malformed-flood", "flood events and requests with the malformed corpus"),
    Scenario("slow-retrain", "a retrain that runs past the retrainer's max poll interval"),
    Scenario("fuzz", "mutated records with random keys and headers on every input topic"),
)
# Played on the clustered stack (three KRaft brokers, a Redis Cluster of three masters
# and three replicas), by a deployment of its own: the full mode's second phase.
CLUSTER_SCENARIOS = (
    Scenario("cluster-baseline", "nothing: the control row on the cluster"),
    Scenario(
        "kill-broker",
        "SIGKILL the broker leading most events partitions, keep it down, start it again",
    ),
    Scenario(
        "kill-redis-master",
        "SIGKILL the Redis master serving most of the scenario's feature keys, keep it "
        "down (its replica is promoted), start it again (it rejoins as a replica)",
    ),
)


@dataclass(frozen=True)
class Mode:
    """How hard and how long: ``short`` is what CI runs, ``full`` what the docs record."""

    name: str
    events_per_s: float
    requests_per_s: float
    entities: int  # per scenario, so each scenario's effects can be told apart
    labelled_share: float  # events that carry their label (→ training examples)
    lead_s: float  # traffic before the fault
    tail_s: float  # traffic after the fault is over
    kills: int  # SIGKILLs per service kind
    kill_gap_s: float  # traffic between two kills of the same kind
    kafka_down_s: float  # also how long the cluster's killed broker stays down
    kafka_signal: signal.Signals
    redis_down_s: float  # also how long the cluster's killed Redis master stays down
    flood_copies: int  # copies of the malformed corpus
    fuzz_records: int  # mutated records per input topic in the fuzz scenario
    warm_up: int  # examples the learner learns first (its first snapshot: the champion)
    filler: int  # examples that make the retraining window big, so a retrain is slow
    slow_poll_interval_ms: int  # the slow-retrain scenario's consumer max poll interval
    catch_up_s: float  # deadline for processing to resume and catch up by itself
    warm_up_s: float  # deadline for the deployment to serve its first champion
    scenarios: tuple[Scenario, ...] = SCENARIOS
    cluster_scenarios: tuple[Scenario, ...] = ()  # the second phase, on the cluster

    def only(self, names: set[str]) -> Mode:
        """This mode playing only the scenarios named (of either phase)."""
        return replace(
            self,
            scenarios=tuple(s for s in self.scenarios if s.name in names),
            cluster_scenarios=tuple(s for s in self.cluster_scenarios if s.name in names),
        )

    def names(self) -> set[str]:
        return {s.name for s in (*self.scenarios, *self.cluster_scenarios)}


SHORT = Mode(
    name="short",
    events_per_s=20.0,
    requests_per_s=10.0,
    entities=8,
    labelled_share=0.5,
    lead_s=1.0,
    tail_s=2.0,
    kills=1,
    kill_gap_s=0.0,
    kafka_down_s=1.0,
    kafka_signal=signal.SIGTERM,
    redis_down_s=10.0,  # long enough for every Redis client to fail and come back
    flood_copies=3,
    fuzz_records=0,
    warm_up=1_000,
    filler=30_000,
    slow_poll_interval_ms=2_000,
    catch_up_s=60.0,
    warm_up_s=120.0,
    # The control row is left out: the flood's valid traffic is a control of its own.
    # The two Redis faults that a short run's integration tests already cover (an outage
    # ridden out, a full Redis) are played in the full mode only; redis-loss stays. The
    # long fuzz is the full mode's too (the unit tests fuzz every decoder meanwhile).
    scenarios=tuple(
        s for s in SCENARIOS[1:] if s.name not in {"redis-outage", "redis-full", "fuzz"}
    ),
)

FULL = Mode(
    name="full",
    events_per_s=40.0,
    requests_per_s=20.0,
    entities=30,
    labelled_share=0.5,
    lead_s=5.0,
    tail_s=10.0,
    kills=5,
    kill_gap_s=8.0,
    kafka_down_s=30.0,
    kafka_signal=signal.SIGKILL,
    redis_down_s=30.0,
    flood_copies=20,
    fuzz_records=5_000,
    warm_up=1_000,
    filler=50_000,
    slow_poll_interval_ms=5_000,
    catch_up_s=180.0,
    warm_up_s=300.0,
    cluster_scenarios=CLUSTER_SCENARIOS,
)

MODES = {mode.name: mode for mode in (SHORT, FULL)}


SCENARIO_NAMES = tuple(s.name for s in (*SCENARIOS, *CLUSTER_SCENARIOS))
KILLED = {
    "kill-features": "features",
    "kill-learner": "learner",
    "kill-predictor": "predictor",
    "kill-retrainer": "retrainer",
}
# Services run as `eddy run <name>`, each under a supervisor of its own.
SERVICES = ("features", "learner", "retrainer", "predictor")


@dataclass(frozen=True)
class Ports:
    kafka: int
    controller: int
    redis: int


@dataclass(frozen=True)
class ClusterPorts:
    """The clustered stack's base ports: node N listens on base + N - 1."""

    kafka: int  # brokers
    controller: int  # their controller listeners
    redis: int  # Redis nodes
    redis_bus: int  # their cluster bus

    def first(self) -> Ports:
        return Ports(self.kafka, self.controller, self.redis)


def deployment_settings(base: Settings, ports: Ports, data_dir: Path, signing_key: str) -> Settings:
    """The services' settings: the private stack, a data folder of their own, and a
    cadence that makes checkpoints, snapshots and retrains happen within minutes."""
    return base.model_copy(
        update={
            "kafka_bootstrap": f"127.0.0.1:{ports.kafka}",
            "redis_url": f"redis://127.0.0.1:{ports.redis}/0",
            "topic_prefix": TOPIC_PREFIX,
            "partitions": PARTITIONS,
            "data_dir": data_dir,
            "client_id": "chaos",
            "consumer_session_timeout_ms": SESSION_TIMEOUT_MS,
            "consumer_heartbeat_interval_ms": HEARTBEAT_MS,
            "metrics_port": 0,
            "model_name": MODEL,
            "learner_kind": "logistic",
            "checkpoint_every": CHECKPOINT_EVERY,
            "checkpoint_interval_s": CHECKPOINT_INTERVAL_S,
            "snapshot_every": SNAPSHOT_EVERY,
            "retrain_window": RETRAIN_WINDOW,
            "retrain_min_holdout": RETRAIN_MIN_HOLDOUT,
            "retrain_debounce_s": RETRAIN_DEBOUNCE_S,
            "signing_key": SecretStr(signing_key),
            "log_level": "INFO",
        }
    )


def slow_retrainer_settings(settings: Settings, mode: Mode) -> Settings:
    """The retrainer of the slow-retrain scenario: a window as big as the topic and a
    max poll interval shorter than the retrain it causes."""
    return settings.model_copy(
        update={
            "retrain_window": SLOW_RETRAIN_WINDOW,
            "consumer_max_poll_interval_ms": mode.slow_poll_interval_ms,
        }
    )
