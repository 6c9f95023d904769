"""Eddy's one settings object, read from ``EDDY_*`` environment variables.

Every process builds its configuration here and nowhere else: this is the only module
that reads the environment. Unknown ``EDDY_*`` keys are rejected (a typo must not
silently fall back to a default), secrets are masked when printed, and the defaults run
on a laptop against the broker and Redis that ``eddy up`` starts on 127.0.0.1. A project
in use (``EDDY_PROJECT``) sets what the environment leaves unset: the environment wins
over the project's eddy.toml, which wins over the defaults.

>>> s = Settings.from_env({"EDDY_TOPIC_PREFIX": "demo."})
>>> s.topic_prefix, s.kafka_bootstrap
('demo.', '127.0.0.1:9092')
>>> Settings.from_env({"EDDY_KAFKA_BOOTSTRAPS": "x:9092"})
Traceback (most recent call last):
...
eddy.services.config.settings.SettingsError: unknown setting EDDY_KAFKA_BOOTSTRAPS (known: ...)
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from eddy.services.config.project_file import ProjectFileError, project_values
from eddy.services.project.layout import PROJECT_FILE
from eddy.streams.drift.data import DEFAULT_CONFIG as DEFAULT_DRIFT
from eddy.streams.drift.data import DriftConfig
from eddy.streams.drift.estimate import EstimateConfig
from eddy.streams.messages.contracts import MAX_FEATURES
from eddy.streams.store.serialization import signing_key
from eddy.streams.transport.config import SaslMechanism, SecurityProtocol

ENV_PREFIX = "EDDY_"
PROJECT_ROOT = Path(__file__).resolve().parents[3]


class SettingsError(ValueError):
    """The environment does not describe a valid Eddy configuration."""


class Settings(BaseModel):
    """All of Eddy's configuration; frozen once built."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kafka_bootstrap: str = Field(
        "127.0.0.1:9092", description="Kafka bootstrap servers, comma-separated host:port."
    )
    redis_url: str = Field("redis://127.0.0.1:6379/0", description="Redis URL (rediss:// = TLS).")
    redis_cluster: bool = Field(
        False,
        description=(
            "EDDY_REDIS_URL names a node of a Redis Cluster: use redis-py's cluster "
            "client, which finds the others (batches go per slot, one pipeline per node)."
        ),
    )
    redis_cluster_nodes: str = Field(
        "",
        pattern=r"^([^,:\s]+:[0-9]+(,[^,:\s]+:[0-9]+)*)?$",
        description=(
            "More nodes of the Redis Cluster to start from (host:port, comma-separated), "
            "so a service (re)starting while the URL's node is down still finds it."
        ),
    )
    topic_prefix: str = Field("eddy.", description="Prefix of every Eddy topic name.")
    partitions: int = Field(3, ge=1, description="Partitions of each partitioned topic.")
    replication_factor: int = Field(1, ge=1, description="Replication factor of new topics.")
    data_dir: Path = Field(
        PROJECT_ROOT / ".eddy", description="Local state: broker, Redis, models."
    )
    client_id: str = Field("eddy", description="Client id prefix sent to Kafka.")
    project: Path | None = Field(
        None,
        description="The Eddy project folder (eddy.toml, features.py, models.py): its "
        "[settings] apply under the EDDY_* variables, its features and raw fields run. "
        "The eddy command sets it to the nearest folder from the current one upward that "
        "holds eddy.toml; unset: no project, Eddy's built-in demo features.",
    )
    consumer_session_timeout_ms: int = Field(
        10_000, ge=1_000, description="Consumer-group session timeout (joins and failover)."
    )
    consumer_heartbeat_interval_ms: int = Field(
        3_000, ge=100, description="Consumer-group heartbeat interval."
    )
    consumer_max_poll_interval_ms: int = Field(
        300_000,
        ge=1_000,
        description="Longest a consumer may go between polls before the group drops it.",
    )
    stall_timeout_s: float = Field(
        120.0,
        ge=0,
        description="A worker whose offsets do not move for this long while it has lag "
        "reports unhealthy and exits, for its supervisor to restart it (0: never).",
    )
    kafka_request_timeout_ms: int = Field(30_000, ge=1_000, description="Kafka request timeout.")
    deployment_check_s: float = Field(
        2.0,
        gt=0,
        description="How often a worker of a project checks whether `eddy apply` rolled out "
        "another version of it (it then stops gracefully and starts again with it).",
    )
    topic_check_s: float = Field(
        30.0,
        gt=0,
        description="How often a worker checks that the topics it reads still exist (it "
        "stops, naming the topic, when one was deleted).",
    )
    kafka_security_protocol: SecurityProtocol = SecurityProtocol.PLAINTEXT
    kafka_sasl_mechanism: SaslMechanism | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_cafile: Path | None = None
    kafka_ssl_certfile: Path | None = None
    kafka_ssl_keyfile: Path | None = None
    signing_key: SecretStr | None = Field(
        None, description="HMAC key for model artifacts (default: a random key in the data dir)."
    )
    redis_password: SecretStr | None = None
    redis_maxmemory: str = Field(
        "2gb",
        pattern=r"^(?i)[0-9]+([kmg]b?|b)?$",
        description=(
            "Memory limit of the Redis that `eddy up` starts (policy noeviction: a full "
            "Redis refuses writes, it never evicts feature state)."
        ),
    )
    redis_ssl_ca_certs: Path | None = None
    feature_batch_size: int = Field(
        500, ge=1, description="Events per feature-worker batch (one Redis round trip each)."
    )
    feature_batch_wait_ms: int = Field(
        50, ge=1, description="Longest wait to fill a feature-worker batch."
    )
    feature_engine: str = Field(
        "poll",
        pattern="^(poll|faust)$",
        description="What consumes the feature worker's batches: poll (Eddy's consumer "
        "runtime, the default: about twice the events/s) or faust (a faust-streaming "
        "agent). Both hand the same batches to the one FeaturePipeline; stop every "
        "worker of a deployment before switching (the two cannot share a group).",
    )
    feature_cache_entities: int = Field(
        100_000,
        ge=0,
        description="Entity states a feature worker keeps after writing them, to fold "
        "into without reading Redis again (0: none).",
    )
    feature_ttl_s: int = Field(
        7 * 24 * 3600, ge=60, description="Expiry of an idle entity's online features."
    )
    label_window_s: int = Field(
        24 * 3600,
        ge=0,
        description="How long features are kept for late labels (0: no snapshots).",
    )
    label_wait_s: int = Field(
        120, ge=0, description="How long the learner retries a label whose snapshot is missing."
    )
    model_name: str = Field(
        "default", description="The model Eddy learns, retrains and serves (registry name)."
    )
    learner_kind: str = Field(
        "logistic",
        description="Online model: logistic, softmax, hoeffding_adaptive_tree, "
        "adaptive_random_forest, linear_regression.",
    )
    learner_detector: str = Field(
        "adwin",
        description="Concept-drift detector: adwin, page_hinkley, ddm, eddm, hddm_a, hddm_w, "
        "kswin.",
    )
    learner_batch: int = Field(
        1,
        ge=1,
        description="Mini-batch size of the online model (1: one example at a time; >1 only "
        "for logistic and linear_regression: faster, adapts more slowly after drift).",
    )
    learner_reader_process: bool = Field(
        True,
        description="Read and decode the learner's topics in a second process while it "
        "learns (false: on its one thread; a machine with one core gains nothing).",
    )
    drift_tests: str = Field(
        ",".join(DEFAULT_DRIFT.numeric_tests),
        description="Comma-separated data-drift tests of numeric features and predictions: "
        "psi, ks, jensen_shannon, wasserstein.",
    )
    drift_categorical_test: str = Field(
        DEFAULT_DRIFT.categorical_test,
        description="Data-drift test of categorical features: chi_square or l_infinity.",
    )
    drift_thresholds: str = Field(
        "",
        description='Thresholds over the defaults, e.g. "psi=0.3,ks=0.25" (a test drifts '
        "above its threshold).",
    )
    drift_window: int = Field(
        DEFAULT_DRIFT.window, ge=1, description="Values in the reference and current windows."
    )
    drift_min_samples: int = Field(
        DEFAULT_DRIFT.min_samples, ge=1, description="Fewest values in both windows to test."
    )
    drift_check_every: int = Field(
        DEFAULT_DRIFT.check_every,
        ge=1,
        description="Test the windows every N examples (the main cost of drift monitoring).",
    )
    drift_cooldown: int = Field(
        DEFAULT_DRIFT.cooldown, ge=0, description="Fewest examples between two alerts of a feature."
    )
    drift_rearm_ratio: float = Field(
        DEFAULT_DRIFT.rearm_ratio,
        ge=0,
        le=1,
        description="A drifted feature alerts again only after every statistic fell below "
        "threshold x this (hysteresis).",
    )
    drift_warmup: int = Field(
        DEFAULT_DRIFT.warmup,
        ge=0,
        description="Observations before the drift references start (a cold start's new "
        "entities and a still-learning model are no evidence).",
    )
    drift_max_features: int = Field(
        DEFAULT_DRIFT.max_features,
        ge=1,
        le=MAX_FEATURES,
        description="Features a drift monitor tracks, the first it sees (ever-new names "
        "would grow it and every checkpoint without end; an alert naming them all must "
        "stay within a message's key bound).",
    )
    drift_action: str = Field(
        "warn",
        pattern="^(warn|retrain)$",
        description="What a data- or prediction-drift alert alone asks for: warn (a retrain "
        "follows only when the served model's live error confirms harm) or retrain.",
    )
    estimate_window: int = Field(
        1_000,
        ge=1,
        description="Answers per window of a served version's live performance estimate "
        "(estimated from its answers before labels: confidence-based, binary classifiers).",
    )
    estimate_check_every: int = Field(
        100, ge=1, description="Estimate again every N answers of a version (at most the window)."
    )
    estimate_min_drop: float = Field(
        0.05,
        gt=0,
        lt=1,
        description="An estimated-degradation alert fires when a version's estimated "
        "accuracy falls at least this far below its first window's (and 3 standard errors).",
    )
    estimate_action: str = Field(
        "warn",
        pattern="^(warn|retrain)$",
        description="What an estimated-degradation alert asks for: warn (the label-based "
        "alerts and promotion decisions still judge) or retrain.",
    )
    learner_dedup_ids: int = Field(
        200_000, ge=1, description="How many learned example/label ids the learner remembers."
    )
    checkpoint_every: int = Field(1_000, ge=1, description="Checkpoint every N learned examples.")
    checkpoint_interval_s: float = Field(
        10.0, gt=0, description="... or after this many seconds with unsaved learning."
    )
    checkpoint_max_share: float = Field(
        0.1,
        gt=0,
        le=1,
        description="Most of the learner's time checkpoints may take: after one that took d "
        "seconds, the next waits at least d x (1/share - 1).",
    )
    snapshot_every: int = Field(
        10_000,
        ge=0,
        description="Register the online model as a registry version every N examples (0: off).",
    )
    retrain_window: int = Field(10_000, ge=10, description="Recent examples a retrain uses.")
    retrain_holdout: float = Field(
        0.2, gt=0, lt=1, description="Most recent share held out to compare with the champion."
    )
    retrain_min_holdout: int = Field(
        200, ge=1, description="Fewest held-out examples a promotion decision needs."
    )
    retrain_estimator: str = Field(
        "hist_gradient_boosting", description="hist_gradient_boosting or logistic_regression."
    )
    retrain_metric: str = Field(
        "log_loss", description="Metric that decides promotion (log_loss, accuracy, roc_auc, mae)."
    )
    retrain_margin: float = Field(
        0.01, ge=0, description="Relative improvement over the champion needed to promote."
    )
    retrain_confidence: float = Field(
        0.95,
        gt=0,
        lt=1,
        description="Confidence that a classifier beats the champion on the same held-out "
        "examples (paired exact McNemar) before it is promoted, or before a champion is "
        "rolled back to the previous one on the same recent labelled examples.",
    )
    retrain_debounce_s: float = Field(
        5.0, ge=0, description="Alerts within this time of the first make one retrain."
    )
    retrain_drift_wait_s: float = Field(
        600.0,
        ge=0,
        description="After a concept alert, wait up to this long for enough examples after "
        "the drift to judge a promotion (the retrain learns only from those).",
    )
    retrain_threads: int = Field(
        1,
        ge=0,
        description="Native threads (OpenMP, BLAS) a retrain's fit may use; 0: every core. "
        "One suits windows of thousands of examples on cores shared with other services.",
    )
    retrain_refresh: bool = Field(
        True,
        description="Retrain when the recent review window holds only examples no "
        "retrained version learned from; the refit serves when it is no worse on the same "
        "held-out examples.",
    )
    retrain_every_s: float = Field(
        0.0, ge=0, description="Also retrain the learner's model on this schedule (0: never)."
    )
    predictor_batch_size: int = Field(
        200, ge=1, description="Most requests a predictor answers per batch."
    )
    predictor_fetch_wait_ms: int = Field(
        5, ge=0, description="Longest a predictor's fetch waits for requests (latency)."
    )
    reply_topic_pattern: str = Field(
        r"^[A-Za-z0-9][A-Za-z0-9._-]{0,248}$",
        description="Reply topics a prediction request may name (a regular expression). "
        "Internal topics (a leading underscore) and Eddy's own topics other than the "
        "answers topic are refused whatever it says.",
    )
    request_log_ttl_s: int = Field(
        7 * 24 * 3600, ge=60, description="How long each request's log entry is kept."
    )
    request_log_input_bytes: int = Field(
        4096, ge=0, description="Bytes of each request's input kept in the request log."
    )
    shadow_log_max: int = Field(
        100_000, ge=1, description="Challenger/champion answers kept for live comparison."
    )
    max_event_time_skew_s: int = Field(
        300, ge=0, description="How far in the future an event_time may be (clock skew)."
    )
    live_evaluation_every_s: float = Field(
        60.0,
        ge=0,
        description="Compare champion and challenger on live answers this often (0: off).",
    )
    metrics_port: int = Field(
        9400, ge=0, le=65000, description="Base port of /metrics (role offsets added; 0: off)."
    )
    monitor_port: int = Field(9500, ge=1, le=65535, description="Dashboard and status API port.")
    monitor_sample_s: float = Field(
        2.0, gt=0, description="How often the monitor samples the services' metrics."
    )
    slice_features: str = Field(
        "",
        description="Comma-separated features whose values define slices for per-slice "
        "metrics and the promotion gate (empty: overall only).",
    )
    slice_tolerance: float = Field(
        0.02,
        ge=0,
        description="Largest regression of a slice's promotion metric a challenger may have.",
    )
    slice_min_examples: int = Field(
        30, ge=1, description="Fewest held-out examples a slice needs to be judged."
    )
    slice_max_values: int = Field(
        50, ge=1, description="Most distinct values tracked per slice feature (rest: other)."
    )
    prediction_cache: str = Field(
        "off",
        pattern="^(off|hot|all)$",
        description="Precomputed answers in Redis: off, hot (entities asked about often) "
        "or all (every entity, on feature change).",
    )
    prediction_cache_hot_requests: int = Field(
        3, ge=1, description="Requests within the hot window that make an entity hot."
    )
    prediction_cache_hot_window_s: int = Field(
        300, ge=1, description="The window in which an entity's requests are counted."
    )
    prediction_cache_ttl_s: int = Field(
        3600, ge=1, description="Longest a precomputed answer is kept."
    )
    skew_sample: int = Field(
        200, ge=1, description="Logged requests a training-serving skew check recomputes."
    )
    skew_tolerance: float = Field(
        1e-6, ge=0, description="Largest relative difference of a feature that is not skew."
    )
    skew_every_s: float = Field(
        0.0, ge=0, description="Run the skew check on this schedule (0: only on demand)."
    )
    control_token: SecretStr | None = Field(
        None,
        description="Bearer token for the status API's write endpoints (unset: they refuse).",
    )
    log_level: str = Field("INFO", pattern="^(DEBUG|INFO|WARNING|ERROR)$")

    @property
    def slices(self) -> tuple[str, ...]:
        """The slice features, parsed: ``"region, plan"`` gives ``("region", "plan")``."""
        return tuple(name.strip() for name in self.slice_features.split(",") if name.strip())

    @property
    def drift(self) -> DriftConfig:
        """The learner's data- and prediction-drift configuration."""
        thresholds: dict[str, float] = {}
        for item in filter(None, (part.strip() for part in self.drift_thresholds.split(","))):
            test, sep, value = item.partition("=")
            try:
                thresholds[test.strip()] = float(value) if sep else math.nan
            except ValueError:
                thresholds[test.strip()] = math.nan
        unknown = set(thresholds) - set(DEFAULT_DRIFT.thresholds)
        if unknown or any(math.isnan(t) for t in thresholds.values()):
            raise ValueError(
                f"drift_thresholds: expected test=number pairs for tests of "
                f"{sorted(DEFAULT_DRIFT.thresholds)}, got {self.drift_thresholds!r}"
            )
        return DriftConfig(
            numeric_tests=tuple(t.strip() for t in self.drift_tests.split(",") if t.strip()),
            categorical_test=self.drift_categorical_test,
            thresholds=thresholds,
            window=self.drift_window,
            min_samples=self.drift_min_samples,
            check_every=self.drift_check_every,
            cooldown=self.drift_cooldown,
            rearm_ratio=self.drift_rearm_ratio,
            warmup=self.drift_warmup,
            max_features=self.drift_max_features,
        )

    @property
    def estimate(self) -> EstimateConfig:
        """How the learner estimates each served version's performance live."""
        return EstimateConfig(
            window=self.estimate_window,
            check_every=min(self.estimate_check_every, self.estimate_window),
            min_drop=self.estimate_min_drop,
        )

    def deployment_key(self) -> bytes:
        """The key that signs model artifacts and control records: ``EDDY_SIGNING_KEY``,
        or this installation's own random key in the data directory."""
        configured = self.signing_key.get_secret_value().encode() if self.signing_key else None
        return signing_key(configured, self.data_dir)

    @field_validator("kafka_bootstrap")
    @classmethod
    def _bootstrap_has_ports(cls, value: str) -> str:
        for server in value.split(","):
            host, sep, port = server.strip().rpartition(":")
            if not sep or not host or not port.isdigit():
                raise ValueError(f"expected host:port[,host:port...], got {value!r}")
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: str) -> str:
        if not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError(f"expected a redis://, rediss:// or unix:// URL, got {value!r}")
        return value

    @model_validator(mode="after")
    def _drift_is_consistent(self) -> Settings:
        try:
            _ = self.drift  # built to be checked: DriftConfig refuses what does not fit
        except ValueError as exc:
            raise ValueError(f"EDDY_DRIFT_*: {exc}") from None
        return self

    @model_validator(mode="after")
    def _requests_outlast_sessions(self) -> Settings:
        # kafka-python refuses a group consumer whose requests may time out before its
        # session does (a JoinGroup waits up to a session timeout): say so at start-up.
        if self.kafka_request_timeout_ms <= self.consumer_session_timeout_ms:
            raise ValueError(
                "EDDY_KAFKA_REQUEST_TIMEOUT_MS must be larger than EDDY_CONSUMER_SESSION_TIMEOUT_MS"
            )
        return self

    @model_validator(mode="after")
    def _cluster_is_named(self) -> Settings:
        # Without a URL, `eddy up` would start a single Redis the cluster client refuses.
        if self.redis_cluster and not self.uses_external_redis:
            raise ValueError(
                "EDDY_REDIS_CLUSTER needs EDDY_REDIS_URL naming a node of the cluster "
                "(`scripts/stack.sh env --cluster` prints the local one's)"
            )
        return self

    @model_validator(mode="after")
    def _sasl_is_complete(self) -> Settings:
        uses_sasl = self.kafka_security_protocol.startswith("SASL")
        if uses_sasl and not (
            self.kafka_sasl_mechanism and self.kafka_sasl_username and self.kafka_sasl_password
        ):
            raise ValueError(
                "SASL protocols need EDDY_KAFKA_SASL_MECHANISM, _USERNAME and _PASSWORD"
            )
        return self

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Build settings from ``environ`` (default: the process environment).

        With ``EDDY_PROJECT`` set, the project's eddy.toml sets what the environment
        does not (:mod:`eddy.services.config.project_file`): the environment wins over
        the project, the project over the defaults. Raises :class:`SettingsError` naming
        every problem, including unknown keys and where each bad value came from.
        """
        env = dict(os.environ if environ is None else environ)
        known = {ENV_PREFIX + name.upper() for name in cls.model_fields}
        unknown = sorted(k for k in env if k.startswith(ENV_PREFIX) and k not in known)
        if unknown:
            raise SettingsError(
                f"unknown setting {', '.join(unknown)} (known: {', '.join(sorted(known))})"
            )
        values: dict[str, Any] = {
            key[len(ENV_PREFIX) :].lower(): value for key, value in env.items() if key in known
        }
        from_project: dict[str, Any] = {}
        if not values.get("project"):
            values.pop("project", None)  # EDDY_PROJECT= (empty) is no project, not "."
        else:
            # Resolved once, here: child processes started elsewhere find the same folder.
            values["project"] = str(Path(values["project"]).resolve())
            from_project = cls._project_values(Path(values["project"]))
        try:
            return cls.model_validate(from_project | values)
        except ValidationError as exc:
            problems = "; ".join(
                f"{cls._source(e['loc'], values, from_project)}: {e['msg']}" for e in exc.errors()
            )
            raise SettingsError(f"invalid settings: {problems}") from None

    @classmethod
    def _project_values(cls, root: Path) -> dict[str, Any]:
        """The settings the project in ``root`` sets (unknown names refused)."""
        try:
            found = project_values(root, path_fields=PATH_FIELDS)
        except ProjectFileError as exc:
            raise SettingsError(f"{ENV_PREFIX}PROJECT: {exc}") from None
        unknown = sorted(set(found) - set(cls.model_fields))
        if unknown:
            raise SettingsError(
                f"unknown setting {', '.join(unknown)} in [settings] of {root / PROJECT_FILE} "
                "(settings are EDDY_* variables without the prefix, in lower case; "
                "`eddy plan` says more)"
            )
        private = sorted(set(found) & PRIVATE_SETTINGS)
        private += [k for k in CREDENTIAL_URLS if "@" in str(found.get(k, ""))]
        if private:
            where = f"[settings] of {root / PROJECT_FILE}"
            raise SettingsError(f"{', '.join(private)} in {where}: {PRIVATE_SETTING_ADVICE}")
        return found

    @staticmethod
    def _source(
        location: tuple[int | str, ...], env: Mapping[str, Any], project: Mapping[str, Any]
    ) -> str:
        """Where an invalid value came from: its variable, or the project's eddy.toml."""
        name = ".".join(map(str, location))
        if location and location[0] in project and location[0] not in env:
            return f"{env['project']}/{PROJECT_FILE} [settings] {name}"
        return f"{ENV_PREFIX}{name.upper()}"

    @property
    def redis_outage_patience_s(self) -> float:
        """How long the learner and the predictor wait out a Redis outage in-process
        before they exit for their supervisor: half of what keeps them in their group
        (the max poll interval) and unstalled (the stall timeout, when set)."""
        bounds = [self.consumer_max_poll_interval_ms / 1000]
        if self.stall_timeout_s > 0:
            bounds.append(self.stall_timeout_s)
        return min(bounds) / 2

    @property
    def uses_external_kafka(self) -> bool:
        """True when the user named a broker: then Eddy starts none of its own."""
        return "kafka_bootstrap" in self.model_fields_set

    @property
    def uses_external_redis(self) -> bool:
        """True when the user named a Redis: then Eddy starts none of its own."""
        return "redis_url" in self.model_fields_set

    def pointed_at(self, exports: str) -> Settings:
        """These settings moved to the services ``exports`` names: the ``export
        EDDY_X=value`` lines ``scripts/stack.sh env --cluster`` prints (the clustered
        stack), e.g. ``export EDDY_REDIS_CLUSTER=true``.

        >>> Settings().pointed_at("export EDDY_REPLICATION_FACTOR=3").replication_factor
        3
        """
        pairs = (
            line.removeprefix("export ").split("=", 1)
            for line in exports.splitlines()
            if line.startswith(f"export {ENV_PREFIX}") and "=" in line
        )
        values = {name[len(ENV_PREFIX) :].lower(): value.strip("'\"") for name, value in pairs}
        typed = type(self).model_validate(values)
        return self.model_copy(update={name: getattr(typed, name) for name in values})

    def as_env(self) -> dict[str, str]:
        """These settings as EDDY_* variables, secrets in clear: for child processes."""
        env: dict[str, str] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if value is not None:
                text = value.get_secret_value() if isinstance(value, SecretStr) else str(value)
                env[f"{ENV_PREFIX}{name.upper()}"] = text
        return env

    def child_env(self, **overrides: object) -> dict[str, str]:
        """The environment for a child process running with these settings: this
        process's environment without its EDDY_* variables, plus :meth:`as_env` of these
        settings updated with ``overrides``."""
        inherited = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
        return inherited | self.model_copy(update=overrides).as_env()

    def __repr_args__(self) -> list[tuple[str | None, Any]]:
        """repr() and str() show masked values, so a logged Settings leaks nothing."""
        return list(self.masked().items())

    def masked(self) -> dict[str, str]:
        """Every setting as text, secrets replaced by ``**********``."""
        shown: dict[str, str] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, SecretStr):
                shown[name] = "**********"
            elif name == "redis_url" and "@" in str(value):
                scheme, _, rest = str(value).partition("://")
                shown[name] = f"{scheme}://**********@{rest.rpartition('@')[2]}"
            else:
                shown[name] = "" if value is None else str(value)
        return shown


# Settings that hold a path: in a project's eddy.toml a relative one is relative to the
# project's folder, not to wherever a service happens to start.
PATH_FIELDS = frozenset(
    name for name, field in Settings.model_fields.items() if field.annotation in (Path, Path | None)
)

# Settings that hold a secret (keys, passwords, tokens): never in a project's eddy.toml,
# a file committed to the user's repository and printed by `eddy plan`.
PRIVATE_SETTINGS = frozenset(
    name
    for name, field in Settings.model_fields.items()
    if field.annotation in (SecretStr, SecretStr | None)
)
PRIVATE_SETTING_ADVICE = "a secret is not kept in a project's files; set its EDDY_* variable"
# Settings whose value may carry a password (``redis://user:secret@host``): private too
# when it does.
CREDENTIAL_URLS = ("redis_url",)
