"""The ``eddy`` command: everything an operator does, one sub-command each.

Commands only parse arguments and print; the work lives in :mod:`streams` and
:mod:`services` modules, so it can be tested without a terminal.

Run inside an Eddy project (a folder holding eddy.toml, or one below it), every command
uses that project, as git uses the repository it is run in: the command sets
``EDDY_PROJECT`` to it when the variable is unset, so its settings apply and the
services it starts (``eddy run all`` and ``eddy demo`` pass it on) run its features.
Services read only ``EDDY_PROJECT``; they never look around the folder they started in.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer

from eddy.services.config.project_file import ProjectFileError, project_fields
from eddy.services.config.settings import ENV_PREFIX, PROJECT_ROOT, Settings, SettingsError
from eddy.services.ops import logs
from eddy.services.ops.console import (
    Record,
    Rejection,
    UnknownTopic,
    numbered,
    produce_lines,
    read_one,
    read_topic,
    resolve_topic,
)
from eddy.services.ops.dead_letters import dead_letter_topic, dead_letters, replay
from eddy.services.ops.metrics import serve as serve_metrics
from eddy.services.project.deployment import (
    deployment_project,
    features_of,
    raw_schema_of,
    warn_of_short_lateness,
)
from eddy.services.project.errors import ProjectError
from eddy.services.project.layout import PROJECT_FILE, PROJECT_VARIABLE, find_project
from eddy.services.project.loading import Project, load_project
from eddy.services.project.plan import plan_project
from eddy.services.project.rollout import (
    DeploymentFollower,
    NotApplied,
    apply_project,
    check_applied,
    pending_changes,
)
from eddy.services.project.scaffold import ProjectExists, init_project
from eddy.streams.dead_letters.letter import (
    ERROR_CLASS,
    ERROR_REASON,
    SOURCE_OFFSET,
    SOURCE_PARTITION,
    SOURCE_TOPIC,
)
from eddy.streams.drift.alert_text import describe_alert
from eddy.streams.messages import schema_files
from eddy.streams.messages.raw_schema import RawSchema
from eddy.streams.messages.schema_files import RAW_FIELDS_OF
from eddy.streams.store.estimates import PerformanceReport, read_reports
from eddy.streams.transport.admin import ensure_topics, list_topics
from eddy.streams.transport.clients import make_redis
from eddy.streams.transport.topics import Topic, topic_name

STACK_SCRIPT = PROJECT_ROOT / "scripts" / "stack.sh"
REDIS_TIMEOUT_S = 5.0  # a read for display: an unreachable Redis must not hang the command
# The versions `eddy models list` shows of each model unless told (--last), besides the aliased.
LISTED_VERSIONS = 20

app = typer.Typer(
    help="Eddy: event-driven dynamic training on Kafka, Redis and River.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)
topics_app = typer.Typer(help="Create and list Eddy's Kafka topics.", no_args_is_help=True)
app.add_typer(topics_app, name="topics")
run_app = typer.Typer(help="Run one of Eddy's services in the foreground.", no_args_is_help=True)
app.add_typer(run_app, name="run")
features_app = typer.Typer(help="Read the online feature store.", no_args_is_help=True)
app.add_typer(features_app, name="features")
dlq_app = typer.Typer(help="Inspect and replay dead letters.", no_args_is_help=True)
app.add_typer(dlq_app, name="dlq")
alerts_app = typer.Typer(help="Drift alerts.", no_args_is_help=True)
app.add_typer(alerts_app, name="alerts")
models_app = typer.Typer(
    help="The model registry: versions, aliases, lineage.", no_args_is_help=True
)
app.add_typer(models_app, name="models")
skew_app = typer.Typer(help="Training-serving skew.", no_args_is_help=True)
app.add_typer(skew_app, name="skew")


def _settings(project: Path | None = None) -> Settings:
    """The settings of this command (``project``: of that project's deployment, read
    without touching this process's environment); a bad one is an error, exit 2."""
    found = None if project is not None else find_project(Path.cwd(), os.environ)
    if found is not None and not os.environ.get(PROJECT_VARIABLE):
        # The entry point decides, once, for this process and the services it starts.
        os.environ[PROJECT_VARIABLE] = str(found)
    named = None if project is None else {**os.environ, PROJECT_VARIABLE: str(project)}
    try:
        settings = Settings.from_env(named)
    except SettingsError as exc:
        typer.secho(f"error: {exc}", fg="red", err=True)
        raise typer.Exit(2) from None
    logs.configure(settings.log_level)
    return settings


def _project(settings: Settings) -> Project | None:
    """The project in use, checked; a refusal is printed as file:line: message (exit 2)."""
    try:
        return deployment_project(settings)
    except ProjectError as exc:
        typer.secho(str(exc), fg="red", err=True)
        raise typer.Exit(2) from None


@contextmanager
def _following(settings: Settings, project: Project | None) -> Iterator[None]:
    """Run a worker of ``project`` only if its files are the applied revision, and
    start it again in place when another is applied (no project: nothing to follow)."""
    if project is None:
        yield
        return
    try:
        running = check_applied(settings, project)
    except NotApplied as exc:
        typer.secho(f"error: {exc}", fg="red", err=True)
        raise typer.Exit(2) from None
    # Until the worker installs its own SIGTERM handler (as it starts), a revision applied
    # meanwhile must still end in the restart below, not in Python's default death.
    if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _exit_for_restart)
    follower = DeploymentFollower(settings, running.digest)
    follower.start()
    try:
        yield
    finally:
        follower.close()
        follower.restart()


def _exit_for_restart(_signum: int, _frame: Any) -> None:
    raise SystemExit(0)


# The settings scripts/stack.sh reads (as EDDY_* variables): where the stack keeps its
# data, Redis's memory cap, and the services to use instead of starting any.
STACK_SETTINGS = ("data_dir", "redis_maxmemory", "kafka_bootstrap", "redis_url")


def _stack(action: str, settings: Settings, *, cluster: bool = False) -> int:
    env = stack_env(settings, os.environ)
    command = ["bash", str(STACK_SCRIPT), action, *(["--cluster"] if cluster else [])]
    return subprocess.call(command, env=env)  # noqa: S603 (bash from PATH)


def stack_env(settings: Settings, environ: Mapping[str, str]) -> dict[str, str]:
    """The environment of scripts/stack.sh: ``environ``, plus what the settings set
    explicitly among :data:`STACK_SETTINGS` (a project's ``[settings]``, which the script
    cannot read). Defaults stay unset: a bootstrap or Redis URL set means "use that one,
    start none" to the script."""
    env = {**environ, "STACK_PYTHON": sys.executable}
    for name in STACK_SETTINGS:
        if name in settings.model_fields_set:
            env[ENV_PREFIX + name.upper()] = str(getattr(settings, name))
    return env


ClusterOption = Annotated[
    bool,
    typer.Option(
        "--cluster",
        help="The local clustered stack instead: three Kafka brokers and a Redis Cluster of "
        "six nodes (scripts/stack.sh --cluster; `scripts/stack.sh env --cluster` prints the "
        "EDDY_* variables that point Eddy at it).",
    ),
]


@app.command()
def up(cluster: ClusterOption = False) -> None:
    """Start the local Kafka broker and Redis (or check the external ones you named)."""
    raise typer.Exit(_stack("up", _settings(), cluster=cluster))


@app.command()
def down(cluster: ClusterOption = False) -> None:
    """Stop the Kafka broker and Redis that `eddy up` started."""
    try:
        settings = _settings()
    except typer.Exit:
        # A broken project must not keep what runs from stopping: the variables decide.
        typer.secho("stopping the stack the EDDY_* variables name", err=True)
        settings = Settings()
    raise typer.Exit(_stack("down", settings, cluster=cluster))


@app.command()
def status(cluster: ClusterOption = False) -> None:
    """Say whether Kafka and Redis run and answer; exit 0 only when both do."""
    raise typer.Exit(_stack("status", _settings(), cluster=cluster))


@app.command()
def config() -> None:
    """Print the effective settings (secrets masked)."""
    for name, value in _settings().masked().items():
        typer.echo(f"EDDY_{name.upper()}={value}")


@topics_app.command("create")
def topics_create() -> None:
    """Create every Eddy topic that is missing (idempotent)."""
    for state in ensure_topics(_settings()):
        verb = "created" if state.created else "exists "
        typer.echo(f"{verb}  {state.name}  ({state.partitions} partitions)")


@topics_app.command("list")
def topics_list() -> None:
    """List the broker's topics with their partition counts."""
    for name, partitions in list_topics(_settings()).items():
        typer.echo(f"{name}  ({partitions} partitions)")


@run_app.command("all")
def run_all() -> None:
    """Every service as a child process, restarted with backoff when one crashes.

    Stops them all on Ctrl-C or SIGTERM; each writes JSON lines to <data>/logs/<name>.log.
    """
    from eddy.services.ops.supervisor import SERVICES, Supervisor

    settings = _settings()
    Supervisor(SERVICES, settings.data_dir / "logs").run()


@run_app.command("monitor")
def run_monitor() -> None:
    """Status API (/api/status) and live dashboard (/) on 127.0.0.1:EDDY_MONITOR_PORT."""
    from eddy.services.ops.monitor import Monitor
    from eddy.services.registry.opening import open_registry

    settings = _settings()
    Monitor(settings, open_registry(settings, announce=False)).run()


@run_app.command("features")
def run_features() -> None:
    """Feature worker: validate events, update online features, emit training examples.

    Start several to share the partitions of `events` (one consumer group).
    """
    from eddy.services.workers import feature_consumer
    from eddy.services.workers.faust_app import run_worker
    from eddy.services.workers.features import build_app

    settings = _settings()
    project = _project(settings)
    serve_metrics("features", settings)
    fs, schema = features_of(project), raw_schema_of(project)
    warn_of_short_lateness(settings, fs)
    with _following(settings, project):
        if settings.feature_engine == "faust":
            run_worker(build_app(settings, fs, schema), settings)
        else:
            feature_consumer.run(settings, fs, schema)


@run_app.command("learner")
def run_learner() -> None:
    """Online learner: prequential River model, drift monitors, alerts, checkpoints.

    Model, detector and checkpoint cadence come from EDDY_LEARNER_* and
    EDDY_CHECKPOINT_* settings; in a project, the model is its models.py online_model().
    Extra learners of the same model are hot standbys.
    """
    from eddy.services.config.learner import deployment_learner, online_model_factory
    from eddy.services.registry.announcements import learner_snapshots, registry_calibrations
    from eddy.services.registry.opening import open_registry
    from eddy.services.registry.store import trainer_identity
    from eddy.services.workers.learner import LearnerWorker

    settings = _settings()
    project = _project(settings)
    features = features_of(project)
    config = deployment_learner(settings, features, project)
    serve_metrics("learner", settings)
    registry = open_registry(settings)
    hook = learner_snapshots(registry, trainer_identity("eddy run learner"))
    with _following(settings, project):
        LearnerWorker(
            settings,
            config,
            feature_set=features.fingerprint(),
            on_snapshot=hook,
            online_model=online_model_factory(project),
            calibration_of=registry_calibrations(registry, config.model),
        ).run()


@run_app.command("retrainer")
def run_retrainer() -> None:
    """Retrain on drift alerts (one retrain per burst), register, promote when better.

    Also carries out control commands, compares champion and challenger live, and runs
    the training-serving skew check every EDDY_SKEW_EVERY_S (when set).
    """
    import threading

    from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

    from eddy.services.quality.skew_check import run_scheduled
    from eddy.services.registry.opening import open_registry
    from eddy.services.registry.store import preload_codecs
    from eddy.services.training.retrainer import AlertListener, Retrainer

    settings = _settings()
    project = _project(settings)
    features = features_of(project)
    # Native thread pools (OpenMP in gradient boosting) beyond the cores the retrainer
    # can have to itself only spin against the other services: a fit of a few hundred
    # examples took 5 to 15 s on 2 busy cores.
    threadpool_limits(limits=settings.retrain_threads or None)
    preload_codecs()
    serve_metrics("retrainer", settings)
    listener = AlertListener(
        settings, Retrainer(settings, open_registry(settings), project=project)
    )
    signal.signal(signal.SIGTERM, listener.stop)
    signal.signal(signal.SIGINT, listener.stop)
    stop_skew = threading.Event()
    skew = threading.Thread(
        target=run_scheduled,
        args=(settings, stop_skew, features),
        name="skew-check",
        daemon=True,
    )
    skew.start()
    try:
        with _following(settings, project):
            listener.run()
    finally:
        stop_skew.set()
        skew.join(timeout=5)


@run_app.command("predictor")
def run_predictor() -> None:
    """Prediction service: answers requests with the champion, shadow-scores challengers.

    Start several to share the load (one consumer group).
    """
    from threadpoolctl import threadpool_limits

    from eddy.services.registry.opening import open_registry
    from eddy.services.serving.predictor import Predictor

    # A scoring batch is small: native thread pools (OpenMP in gradient boosting) would
    # only contend with other processes for the cores; under load one call went from
    # about 1 ms to over a second.
    threadpool_limits(limits=1)
    settings = _settings()
    project = _project(settings)
    serve_metrics("predictor", settings)
    features = features_of(project)
    warn_of_short_lateness(settings, features)
    with _following(settings, project):
        Predictor(
            settings,
            open_registry(settings, announce=False),
            settings.model_name,
            features=features,
            schema=raw_schema_of(project),
        ).run()


@app.command()
def trace(request_id: Annotated[str, typer.Argument(help="The request's id.")]) -> None:
    """A prediction back to its model version, its lineage, its training data and alert."""
    from eddy.services.registry.opening import open_registry
    from eddy.services.registry.tracing import trace_request

    settings = _settings()
    found = trace_request(settings, open_registry(settings, announce=False), request_id)
    if found is None:
        typer.secho(f"error: no request {request_id!r} in the request log", fg="red", err=True)
        raise typer.Exit(1)
    typer.echo(orjson.dumps(found, option=orjson.OPT_INDENT_2).decode())


@app.command()
def score(
    path: Annotated[Path, typer.Argument(help="CSV or Parquet file: entity_id + features.")],
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Default: beside, .scored.csv")
    ] = None,
) -> None:
    """Score a file with the champion through the same feature code (batch inference)."""
    from eddy.services.registry.opening import open_registry
    from eddy.services.serving.batch_scoring import score_file

    settings = _settings()
    features = features_of(_project(settings))
    written, rows, version = score_file(
        settings, open_registry(settings, announce=False), features, path, output
    )
    typer.echo(f"scored {rows} rows with {version} -> {written}")


@app.command()
def retrain(
    model: Annotated[
        str | None, typer.Argument(help="Model name (default: the deployment's, EDDY_MODEL_NAME).")
    ] = None,
    reason: Annotated[str, typer.Option("--reason", help="Why, for the audit log.")] = "",
    via_control: Annotated[
        bool,
        typer.Option(
            "--via-control",
            help="Queue it for the running retrainer (carried out once, audited) "
            "instead of training in this process.",
        ),
    ] = False,
) -> None:
    """Retrain MODEL now on the recent window (an operator's trigger)."""
    from eddy.services.registry.store import trainer_identity

    settings = _settings()
    model = model or settings.model_name
    if via_control:
        from eddy.services.training.control import control_topic, request_retrain

        if not reason:
            raise typer.BadParameter("say why with --reason: it goes to the audit log")
        command = request_retrain(
            settings, model, reason, requested_by=trainer_identity("eddy retrain")
        )
        typer.echo(
            f"queued {command.command_id} for {model} on {control_topic(settings)}; "
            "the retrainer carries it out and audits it"
        )
        return
    from eddy.services.registry.opening import open_registry
    from eddy.services.registry.triggers import Trigger, TriggerKind
    from eddy.services.training.retrainer import Retrainer

    trigger = Trigger(TriggerKind.OPERATOR, trainer_identity("eddy retrain"), reason=reason)
    retrainer = Retrainer(settings, open_registry(settings), project=_project(settings))
    outcome = retrainer.retrain(model, trigger)
    typer.echo(
        f"{model}@{outcome.version}: {outcome.decision.action} ({outcome.decision.reason}) "
        f"in {outcome.seconds:.1f}s"
    )


@models_app.command("report")
def models_report(
    version: Annotated[int, typer.Argument(help="The version to report on.")],
    model: Annotated[str | None, typer.Option("--model", help="Default: EDDY_MODEL_NAME.")] = None,
    out: Annotated[Path, typer.Option("--out", help="Folder for the JSON and HTML files.")] = Path(
        "."
    ),
) -> None:
    """A self-contained governance report (JSON and HTML) of one version, for auditors."""
    from eddy.services.governance.sources import write_report
    from eddy.services.registry.store import RegistryError

    settings = _settings()
    features = features_of(_project(settings))
    try:
        json_path, html_path = write_report(
            settings, features, model or settings.model_name, version, out
        )
    except RegistryError as exc:
        typer.secho(f"error: {exc}", fg="red", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"{json_path}\n{html_path}")


@app.command()
def backtest(
    policy: Annotated[
        Path,
        typer.Option(
            "--policy",
            "-p",
            exists=True,
            dir_okay=False,
            help="Policies to compare, TOML or JSON (docs/backtest-policies.example.toml).",
        ),
    ],
    start: Annotated[
        str | None,
        typer.Option("--from", help="First offset (in every partition) or ISO-8601 time."),
    ] = None,
    end: Annotated[
        str | None,
        typer.Option("--to", help="End offset (exclusive) or ISO-8601 time. Default: now."),
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Report JSON. Default: <data>/backtests/.")
    ] = None,
    buckets: Annotated[
        int | None, typer.Option("--buckets", min=1, help="Spans of accuracy over time.")
    ] = None,
) -> None:
    """Replay a range of events and labels under each policy; compare their alerts,
    retrains, accuracy over time and compute before enabling one."""
    from eddy.services.backtest.command import parse_bound, render, run_backtest

    settings = _settings()
    project = _project(settings)
    try:
        report, path = run_backtest(
            settings,
            policy,
            features=features_of(project),
            schema=raw_schema_of(project),
            start=parse_bound(start) if start else None,
            end=parse_bound(end) if end else None,
            out=out,
            buckets=buckets,
        )
    except ValueError as exc:  # a bad bound or policy, or a missing topic
        typer.secho(f"error: {exc}", fg="red", err=True)
        raise typer.Exit(2) from None
    typer.echo(render(report))
    typer.echo(f"\nreport: {path}")


@models_app.command("list")
def models_list(
    model: Annotated[str | None, typer.Argument(help="Default: every model.")] = None,
    last: Annotated[
        int, typer.Option(min=0, help="The newest N versions of each model (0: every one).")
    ] = LISTED_VERSIONS,
    flavor: Annotated[
        str | None, typer.Option(help="Only this flavor's versions: river or sklearn.")
    ] = None,
) -> None:
    """Versions with flavor, aliases and metrics, oldest first: the newest ``--last`` of
    each model, and the versions an alias names however old. The learner registers a
    snapshot every EDDY_SNAPSHOT_EVERY examples, so a registry soon holds thousands."""
    from eddy.services.registry.opening import open_registry
    from eddy.services.registry.store import RIVER, SKLEARN

    if flavor not in (None, RIVER, SKLEARN):
        typer.secho(f"error: no flavor {flavor!r} (river or sklearn)", fg="red", err=True)
        raise typer.Exit(2)
    registry = open_registry(_settings(), announce=False)
    models = registry.models()
    if model is not None and model not in models:
        typer.secho(f"error: no model {model!r} in the registry", fg="red", err=True)
        raise typer.Exit(2)
    for name in models if model is None else [model]:
        aliases = registry.aliases(name)
        newest = registry.versions(name, flavor=flavor, newest=last or None)
        shown = {v.version for v in newest}
        older = [registry.get(name, n) for n in sorted(set(aliases.values()) - shown)]
        aliased = [v for v in older if flavor in (None, v.flavor)]
        for version in sorted([*aliased, *newest], key=lambda v: v.version):
            tags = ",".join(a for a, v in sorted(aliases.items()) if v == version.version)
            typer.echo(
                f"{version.name:24} {version.flavor:8} {tags or '-':20} "
                f"{_metrics_text(version.metrics)}"
            )
        hidden = registry.version_count(name, flavor=flavor) - len(newest) - len(aliased)
        if hidden > 0:
            typer.echo(f"... {hidden:,} older versions of {name} not listed (--last 0 lists all)")


@models_app.command("show")
def models_show(
    model: Annotated[str, typer.Argument()],
    version: Annotated[int | None, typer.Argument(help="Default: the champion.")] = None,
) -> None:
    """One version: metrics and full lineage, and its live performance once the learner
    has reported it (estimated from its answers with bands, realized from its labels)."""
    from eddy.services.registry.opening import open_registry
    from eddy.services.registry.store import CHAMPION

    settings = _settings()
    registry = open_registry(settings, announce=False)
    record = registry.get(model, version) if version else registry.alias(model, CHAMPION)
    if record is None:
        typer.secho(f"error: {model} has no champion", fg="red", err=True)
        raise typer.Exit(1)
    shown = _version_dict(record)
    report = _performance_report(settings, model, record.name)
    if report is not None:
        shown["performance"] = performance_block(report, time.time())
    typer.echo(orjson.dumps(shown, option=orjson.OPT_INDENT_2).decode())


@models_app.command("promote")
def models_promote(
    model: Annotated[str, typer.Argument()],
    version: Annotated[int, typer.Argument()],
    reason: Annotated[str, typer.Option("--reason")] = "operator decision",
) -> None:
    """Make VERSION the champion (announced on model-updates, audited)."""
    from eddy.services.registry.opening import open_registry
    from eddy.services.registry.store import trainer_identity

    open_registry(_settings()).promote(
        model, version, trainer_identity("eddy models promote"), reason
    )
    typer.echo(f"{model}@{version} is champion")


@models_app.command("rollback")
def models_rollback(
    model: Annotated[str, typer.Argument()],
    reason: Annotated[str, typer.Option("--reason")] = "operator rollback",
) -> None:
    """Restore the previous champion (announced, audited)."""
    from eddy.services.registry.opening import open_registry
    from eddy.services.registry.store import trainer_identity

    restored = open_registry(_settings()).rollback(
        model, trainer_identity("eddy models rollback"), reason
    )
    typer.echo(f"{model}@{restored} is champion again")


@models_app.command("history")
def models_history(model: Annotated[str, typer.Argument()]) -> None:
    """What served when: every alias change, who made it and why."""
    from eddy.services.registry.opening import open_registry

    for d in open_registry(_settings(), announce=False).history(model):
        when = datetime.fromtimestamp(d.at, UTC).isoformat(timespec="seconds")
        typer.echo(f"{when}  {d.alias:10} {d.previous} -> {d.version}  by {d.actor}: {d.reason}")


@models_app.command("diff")
def models_diff(
    model: Annotated[str, typer.Argument()],
    a: Annotated[int, typer.Argument()],
    b: Annotated[int, typer.Argument()],
) -> None:
    """Two versions side by side: metrics, parameters, data they learned from."""
    from eddy.services.registry.opening import open_registry

    registry = open_registry(_settings(), announce=False)
    left, right = _version_dict(registry.get(model, a)), _version_dict(registry.get(model, b))
    for key in sorted(set(_flatten(left)) | set(_flatten(right))):
        lv, rv = _flatten(left).get(key), _flatten(right).get(key)
        if lv != rv:
            typer.echo(f"{key:40} {lv!s:30} {rv!s}")


def _performance_report(settings: Settings, model: str, version: str) -> PerformanceReport | None:
    """The learner's latest report on ``version``; None when it has made none. Redis not
    answering leaves the report out, said on stderr: the registry's record still shows."""
    from redis.exceptions import RedisError

    redis = make_redis(
        settings, socket_connect_timeout=REDIS_TIMEOUT_S, socket_timeout=REDIS_TIMEOUT_S
    )
    try:
        return read_reports(redis, settings.topic_prefix, model).get(version)
    except RedisError as exc:
        typer.secho(f"warning: no live performance shown (Redis: {exc})", fg="yellow", err=True)
        return None
    finally:
        redis.close()


def performance_block(report: PerformanceReport, now: float) -> dict[str, Any]:
    """A version's live performance for ``models show``: when it was reported (UTC) and
    how long ago, so a learner that stopped reporting is seen as such.

    >>> report = PerformanceReport("m@2", {"accuracy": 0.91, "accuracy_lower": 0.88,
    ...     "accuracy_upper": 0.94, "answers": 1000.0}, 0.95, {"accuracy": 0.9}, 812.0, 0.0)
    >>> block = performance_block(report, now=90.0)
    >>> block["reference_accuracy"], block["realized"], block["at"], block["age_s"]
    (0.95, {'accuracy': 0.9}, '1970-01-01T00:00:00+00:00', 90.0)
    """
    return {
        "estimated": report.estimated,
        "reference_accuracy": report.reference_accuracy,
        "realized": report.realized,
        "calibrated_on": report.calibrated_on,
        "at": datetime.fromtimestamp(report.at, UTC).isoformat(timespec="seconds"),
        "age_s": round(now - report.at, 1),
    }


def _metrics_text(metrics: dict[str, float]) -> str:
    return " ".join(f"{k}={v:.4f}" for k, v in sorted(metrics.items()))


def _version_dict(record: Any) -> dict[str, Any]:
    """A version for display: overall metrics and per-slice metrics apart."""
    from dataclasses import asdict

    from eddy.streams.learning.slices import split

    overall, per_slice = split(record.metrics)
    return {"name": record.name, **asdict(record), "metrics": overall, "slices": per_slice}


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        flat: dict[str, Any] = {}
        for k, v in value.items():
            flat |= _flatten(v, f"{prefix}{k}.")
        return flat
    return {prefix.rstrip("."): value}


@skew_app.command("check")
def skew_check(
    publish: Annotated[
        bool, typer.Option("--publish/--no-publish", help="Send a skew alert to drift-alerts.")
    ] = True,
) -> None:
    """Recompute sampled requests' features from the event log; alert on skew.

    Prints the report (JSON); exits 1 when a feature differs beyond EDDY_SKEW_TOLERANCE.
    """
    from eddy.services.quality.skew_check import run_check

    settings = _settings()
    check = run_check(settings, features_of(_project(settings)), publish=publish)
    typer.echo(orjson.dumps(check.report.as_dict(), option=orjson.OPT_INDENT_2).decode())
    if check.alert is not None:
        typer.echo(describe_alert(check.alert.model_dump(mode="json")), err=True)
        raise typer.Exit(1)


@alerts_app.command("watch")
def alerts_watch(
    from_beginning: Annotated[
        bool, typer.Option("--from-beginning/--latest", help="Replay past alerts first.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines output.")] = False,
) -> None:
    """Follow drift alerts as they are raised (Ctrl-C to stop)."""
    settings = _settings()
    topic = topic_name(Topic.DRIFT_ALERTS, settings.topic_prefix)
    records = read_topic(
        settings, topic, from_beginning=from_beginning, max_messages=None, idle_timeout_s=1e9
    )
    for record in records:
        if as_json:
            typer.echo(orjson.dumps(record.value).decode())
        else:
            typer.echo(describe_alert(record.value))


@features_app.command("get")
def features_get(
    entity_ids: Annotated[list[str], typer.Argument(help="One or more entity ids.")],
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines output.")] = False,
) -> None:
    """Print entities' current online features and freshness (one Redis round trip)."""
    from eddy.streams.store.online import OnlineStore

    settings = _settings()
    features = features_of(_project(settings))
    store = OnlineStore(
        make_redis(settings),
        settings.topic_prefix,
        settings.feature_ttl_s,
        states=features.state_fingerprint(),
    )
    found = store.online_features(entity_ids, features, as_of=time.time())
    for entity_id, online in found.items():
        if as_json:
            typer.echo(orjson.dumps(online.__dict__).decode())
            continue
        if online.freshness_s is None:
            typer.echo(f"{entity_id}: no features (no event seen, or expired)")
            continue
        typer.echo(f"{entity_id}: newest event {online.freshness_s:.1f}s ago")
        for name, value in online.features.items():
            typer.echo(f"  {name:32} {value}")


ErrorClassOption = Annotated[
    str | None, typer.Option("--error-class", "-e", help="Only dead letters of this class.")
]


def _dead_letter_line(record: Record) -> str:
    h = record.headers
    return (
        f"{record.partition}@{record.offset}  {h.get(ERROR_CLASS, '?')}  "
        f"from {h.get(SOURCE_TOPIC, '?')}[{h.get(SOURCE_PARTITION, '?')}]"
        f"@{h.get(SOURCE_OFFSET, '?')}  {h.get(ERROR_REASON, '')}"
    )


@dlq_app.command("list")
def dlq_list(
    error_class: ErrorClassOption = None,
    max_messages: Annotated[int | None, typer.Option("--max", "-n", min=1)] = None,
) -> None:
    """One line per dead letter: where it is, its error class, source and reason."""
    settings = _settings()
    for record in dead_letters(settings, error_class=error_class, max_messages=max_messages):
        typer.echo(_dead_letter_line(record))


@dlq_app.command("show")
def dlq_show(
    where: Annotated[str, typer.Argument(help="PARTITION@OFFSET in the dead-letter topic.")],
) -> None:
    """A dead letter in full: headers and the original bytes."""
    settings = _settings()
    partition, offset = _position(where)
    record = read_one(settings, dead_letter_topic(settings), partition, offset)
    if record is None:
        typer.secho(f"error: no dead letter at {where}", fg="red", err=True)
        raise typer.Exit(1)
    typer.echo(_dead_letter_line(record))
    for name, value in record.headers.items():
        typer.echo(f"  {name}: {value}")
    typer.echo(f"  key:   {record.original.key!r}")
    typer.echo(f"  value: {record.original.value!r}")


@dlq_app.command("replay")
def dlq_replay(
    where: Annotated[
        list[str] | None, typer.Argument(help="PARTITION@OFFSET of each dead letter.")
    ] = None,
    error_class: ErrorClassOption = None,
    replay_all: Annotated[bool, typer.Option("--all", help="Every selected dead letter.")] = False,
) -> None:
    """Re-publish dead letters to their source topics after the fault is fixed."""
    settings = _settings()
    if where:
        positions = [_position(w) for w in where]
        topic = dead_letter_topic(settings)
        found = [read_one(settings, topic, p, o) for p, o in positions]
        records = [r for r in found if r is not None]
    elif replay_all or error_class:
        records = list(dead_letters(settings, error_class=error_class))
    else:
        typer.secho("error: name dead letters, or use --error-class or --all", fg="red", err=True)
        raise typer.Exit(2)
    outcomes = replay(records, settings)
    for replayed in outcomes:
        if replayed.refused is None:
            typer.echo(f"replayed {replayed.dead_letter} to {replayed.to_topic}")
        else:
            typer.secho(f"refused {replayed.dead_letter}: {replayed.refused}", fg="red", err=True)
    if any(r.refused is not None for r in outcomes):
        raise typer.Exit(1)


def _position(where: str) -> tuple[int, int]:
    partition, sep, offset = where.partition("@")
    if not sep or not partition.isdigit() or not offset.isdigit():
        raise typer.BadParameter(f"expected PARTITION@OFFSET, got {where!r}")
    return int(partition), int(offset)


@features_app.command("rebuild")
def features_rebuild() -> None:
    """Re-apply the retained `events` topic to Redis (after Redis lost its data)."""
    from eddy.services.workers.features import rebuild

    settings = _settings()
    project = _project(settings)
    totals = rebuild(settings, features_of(project), raw_schema_of(project))
    typer.echo(", ".join(f"{name} {count}" for name, count in sorted(totals.items())))


@app.command()
def produce(
    topic: Annotated[str, typer.Argument(help="Topic: suffix (events) or full name.")],
    file: Annotated[
        Path | None,
        typer.Option(
            "--file", "-f", exists=True, dir_okay=False, help="JSON-lines file (default: stdin)."
        ),
    ] = None,
    csv_file: Annotated[
        Path | None,
        typer.Option(
            "--csv",
            exists=True,
            dir_okay=False,
            help="A CSV file of events instead (columns entity_id, event_time, optional "
            "event_id and label, every other column a raw field typed as the project "
            "declares it).",
        ),
    ] = None,
) -> None:
    """Validate JSON lines (or a CSV file's rows, with --csv) against TOPIC's contract
    and send the valid ones.

    Every rejected line is reported with its number and reason; the exit code is 1
    when any line was rejected.
    """
    settings = _settings()
    try:
        spec = resolve_topic(settings, topic)
        raw = _declared_fields(settings) if spec.topic in RAW_FIELDS_OF else None
        if csv_file is not None:
            report = _produce_csv(settings, spec, csv_file, raw)
        elif file is None:
            report = produce_lines(settings, spec, numbered(sys.stdin.buffer), raw)
        else:
            with file.open("rb") as lines:
                report = produce_lines(settings, spec, numbered(lines), raw)
    except UnknownTopic as exc:
        typer.secho(f"error: {exc}", fg="red", err=True)
        raise typer.Exit(2) from None
    for rejection in report.rejected:
        typer.secho(
            f"line {rejection.line_number}: rejected ({rejection.error_class}): {rejection.reason}",
            fg="red",
            err=True,
        )
    typer.echo(f"sent {len(report.sent)}, rejected {len(report.rejected)} to {spec.name}", err=True)
    raise typer.Exit(1 if report.rejected else 0)


def _declared_fields(settings: Settings) -> RawSchema | None:
    """The project's raw fields, from its eddy.toml alone (None: no project)."""
    if settings.project is None:
        return None
    try:
        return project_fields(settings.project)
    except ProjectFileError as exc:
        typer.secho(f"error: {exc}", fg="red", err=True)
        raise typer.Exit(2) from None


def _produce_csv(settings: Settings, spec: Any, path: Path, raw: RawSchema | None) -> Any:
    import csv

    from eddy.streams.messages.csv_events import csv_event_lines

    if spec.topic is not Topic.EVENTS:
        typer.secho(f"error: --csv sends events, not {spec.name}", fg="red", err=True)
        raise typer.Exit(2)
    # utf-8-sig: a spreadsheet's export starts with a byte-order mark, which would
    # otherwise become part of the first column's name.
    with path.open(newline="", encoding="utf-8-sig") as rows:
        lines = (
            (line, Rejection(line, "csv", item) if isinstance(item, str) else item)
            for line, item in csv_event_lines(csv.DictReader(rows), raw, source=path.stem)
        )
        return produce_lines(settings, spec, lines, raw)


@app.command()
def consume(
    topic: Annotated[str, typer.Argument(help="Topic: suffix (events) or full name.")],
    from_beginning: Annotated[
        bool, typer.Option("--from-beginning/--latest", help="Where to start reading.")
    ] = True,
    max_messages: Annotated[
        int | None, typer.Option("--max", "-n", min=1, help="Stop after this many.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines output.")] = False,
    idle_timeout: Annotated[
        float, typer.Option("--timeout", help="Stop after this many seconds with nothing new.")
    ] = 5.0,
) -> None:
    """Print TOPIC's records without joining a consumer group (offsets stay untouched)."""
    settings = _settings()
    name = topic if topic.startswith(settings.topic_prefix) else settings.topic_prefix + topic
    try:
        records = read_topic(
            settings,
            name,
            from_beginning=from_beginning,
            max_messages=max_messages,
            idle_timeout_s=idle_timeout,
        )
        for record in records:
            if as_json:
                typer.echo(record.as_json())
            else:
                value = orjson.dumps(record.value).decode()
                typer.echo(
                    f"{record.topic}[{record.partition}]@{record.offset} {record.key}  {value}"
                )
    except UnknownTopic as exc:
        typer.secho(f"error: {exc}", fg="red", err=True)
        raise typer.Exit(2) from None


@app.command()
def schemas(
    write: Annotated[bool, typer.Option("--write", help="Regenerate the files.")] = False,
) -> None:
    """Check (or --write) the JSON Schema files generated from the message contracts."""
    if write:
        for name in schema_files.write():
            typer.echo(f"wrote {schema_files.SCHEMA_DIR / name}")
        return
    stale = schema_files.stale()
    for name in stale:
        typer.secho(f"stale: {name} (run `eddy schemas --write`)", fg="red", err=True)
    raise typer.Exit(1 if stale else 0)


@app.command()
def init(
    folder: Annotated[Path, typer.Argument(help="The new project's folder (created if needed).")],
) -> None:
    """Write a new Eddy project into FOLDER: eddy.toml, features.py, models.py, README.md.

    The project is Eddy's demo (its fields, features and default models), for you to
    change. Refuses a folder that already holds any of those files (exit 2).
    """
    try:
        written = init_project(folder)
    except ProjectExists as exc:
        typer.secho(f"error: {exc}", fg="red", err=True)
        raise typer.Exit(2) from None
    for path in written:
        typer.echo(f"wrote {path}")
    typer.echo(f"next: cd {folder} && eddy plan")


PROJECT_HELP = (
    f"The project (default: {PROJECT_VARIABLE}, else the nearest folder upward holding "
    f"{PROJECT_FILE})."
)


def _project_at(folder: Path | None) -> tuple[Project, Settings]:
    """The project in ``folder`` (or found as every command finds it), checked, and the
    settings of its deployment; a problem is printed as file:line: message (exit 2)."""
    root = folder or find_project(Path.cwd(), os.environ)
    if root is not None and root.is_file() and root.name == PROJECT_FILE:
        root = root.parent  # `eddy plan eddy.toml` names the project by its file
    if root is None:
        typer.secho(
            f"error: no Eddy project: no {PROJECT_FILE} in {Path.cwd()} or a folder above it, "
            f"and {PROJECT_VARIABLE} is not set (create one with `eddy init DIR`)",
            fg="red",
            err=True,
        )
        raise typer.Exit(2)
    try:
        project = load_project(root)
    except ProjectError as exc:
        typer.secho(str(exc), fg="red", err=True)
        raise typer.Exit(2) from None
    return project, _settings(project.root)


@app.command()
def plan(
    folder: Annotated[Path | None, typer.Argument(help=PROJECT_HELP)] = None,
) -> None:
    """Check an Eddy project, show what it declares (fields, features, models,
    settings) and what `eddy apply` would change in the deployment.

    A problem is printed as file:line: message, with exit code 2.
    """
    project, settings = _project_at(folder)
    for line in plan_project(project):
        typer.echo(line)
    current, found = pending_changes(settings, project)
    applied = "nothing applied yet" if current is None else f"revision {current.revision}"
    if not found:
        typer.echo(f"no changes against the deployment ({applied})")
        return
    typer.echo(f"changes against the deployment ({applied}): {len(found)}")
    for change in found:
        typer.echo(f"  {change}")
    typer.echo("next: eddy apply")


@app.command()
def apply(
    folder: Annotated[Path | None, typer.Argument(help=PROJECT_HELP)] = None,
) -> None:
    """Roll an Eddy project out: check it, create missing topics, write its contracts'
    JSON Schemas, rebuild the online store from the retained events when the features
    changed, and record the revision, which running workers then restart with.

    A problem is printed as file:line: message, with exit code 2.
    """
    from kafka.errors import KafkaError
    from redis.exceptions import RedisError

    from eddy.services.registry.store import trainer_identity
    from eddy.services.workers.features import rebuild

    project, settings = _project_at(folder)
    try:
        rollout = apply_project(
            settings, project, by=trainer_identity("eddy apply"), rebuild=rebuild
        )
    except (KafkaError, RedisError, OSError, TimeoutError) as exc:
        typer.secho(
            f"error: {type(exc).__name__}: {exc}; nothing was applied (is the stack up? "
            "`eddy status`)",
            fg="red",
            err=True,
        )
        raise typer.Exit(1) from None
    if rollout.applied is None:
        typer.echo("no changes: nothing to apply")
        return
    for change in rollout.changes:
        typer.echo(f"  {change}")
    applied = rollout.applied
    if applied.rebuilt:
        counts = ", ".join(f"{name} {n}" for name, n in sorted(applied.rebuilt.items()))
        typer.echo(f"online store rebuilt for feature set {applied.manifest.feature_set}: {counts}")
    typer.echo(
        f"applied revision {applied.revision} of project {project.name} "
        f"(digest {applied.manifest.digest}); running workers restart with it"
    )


@app.command()
def demo(
    duration: Annotated[float, typer.Option(help="Seconds of traffic.")] = 120.0,
    rate: Annotated[float, typer.Option(help="Events (and requests) per second.")] = 50.0,
    scenario: Annotated[
        str,
        typer.Option(
            help="stagger, sea, agrawal, bananas (abrupt), gradual, recurring or control."
        ),
    ] = "stagger",
    seed: Annotated[int, typer.Option(help="Seed of the scenario's stream.")] = 42,
    short: Annotated[bool, typer.Option("--short", help="A 60 s run (CI).")] = False,
) -> None:
    """The whole loop on a stream with a known concept drift, live, with a report.

    Brings the stack up, starts every service, plays an application (events, requests,
    late labels), lets the drift fire, a retrain get promoted and accuracy recover, then
    prints a summary ending with a verdict and writes an HTML and PNG report. Exits 1
    when no answer was served before or after the drift.
    """
    from rich.console import Console
    from threadpoolctl import threadpool_limits

    from eddy.services.demo.run import DemoOptions, run_demo
    from eddy.services.demo.scenarios import SCENARIOS

    settings = _settings()
    # The demo's baselines fit scikit-learn models beside the services, as the retrainer
    # does: the same limit on native threads, or they spin against the services.
    threadpool_limits(limits=settings.retrain_threads or None)
    if scenario not in SCENARIOS:
        raise typer.BadParameter(f"unknown scenario {scenario!r}; known: {', '.join(SCENARIOS)}")
    if _stack("up", settings) != 0:
        raise typer.Exit(1)
    options = DemoOptions(
        duration_s=60.0 if short else duration, rate=rate, scenario=scenario, seed=seed
    )
    summary = run_demo(settings, options, Console())
    if not summary["verdict"]["served"]:  # a service never served: the run proved nothing
        raise typer.Exit(1)


def main() -> None:
    app()
