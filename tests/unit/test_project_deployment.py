"""A project in use: its settings under the environment, its features and raw fields in
every service (issue #17, slice 2)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from eddy.services.cli.main import app
from eddy.services.config.learner import deployment_learner
from eddy.services.config.settings import Settings, SettingsError
from eddy.services.project.deployment import (
    deployment_features,
    deployment_project,
    raw_schema_of,
    warn_of_short_lateness,
)
from eddy.services.project.errors import ProjectError
from eddy.services.project.layout import PROJECT_FILE, PROJECT_VARIABLE
from eddy.services.project.loading import load_project
from eddy.services.project.scaffold import init_project
from eddy.streams.dead_letters.letter import ERROR_CLASS, ERROR_REASON, RawRecord
from eddy.streams.features.compute import Aggregate, FeatureSet, sliding
from eddy.streams.features.definitions import FEATURES
from eddy.streams.features.pipeline import decode_batch
from eddy.streams.messages.raw_schema import RAW_FIELDS_ERROR

PROJECT_MODEL = "churn"
PROJECT_WINDOW = 2000
PROJECT_PARTITIONS = 5
ENV_PARTITIONS = 7
EVENT_TIME = datetime(2026, 1, 1, tzinfo=UTC)
MAX_FUTURE = timedelta(minutes=5)
# A project of its own features: hourly statistics of a temperature between -40 and 60.
TEMPERATURE_FEATURES = """
from eddy.streams.features.compute import Aggregate, FeatureSet, tumbling

FEATURES = FeatureSet(
    aggregates=(Aggregate("temperature", ("count", "mean"), tumbling(3600)),),
    passthrough=None,
    time_since_last=False,
)
"""
TEMPERATURE_FIELD = """
[fields.temperature]
type = "float"
min = -40
max = 60
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """The template with settings of its own and a model named ``churn``."""
    folder = tmp_path / "project"
    init_project(folder)
    toml = folder / PROJECT_FILE
    text = toml.read_text().replace('model = "demo"', f'model = "{PROJECT_MODEL}"')
    text = text.replace(
        "[settings]\n",
        f"[settings]\nretrain_window = {PROJECT_WINDOW}\npartitions = {PROJECT_PARTITIONS}\n"
        'data_dir = "state"\n',
    )
    toml.write_text(text)
    return folder


def with_temperature(folder: Path) -> Path:
    """``folder``'s project turned into one that aggregates a declared temperature."""
    (folder / "features.py").write_text(TEMPERATURE_FEATURES)
    with (folder / PROJECT_FILE).open("a") as toml:
        toml.write(TEMPERATURE_FIELD)
    return folder


def test_the_environment_wins_over_the_project_and_the_project_over_the_defaults(
    project: Path,
) -> None:
    settings = Settings.from_env(
        {PROJECT_VARIABLE: str(project), "EDDY_PARTITIONS": str(ENV_PARTITIONS)}
    )
    assert settings.partitions == ENV_PARTITIONS  # environment over project
    assert settings.retrain_window == PROJECT_WINDOW  # project over default
    assert settings.topic_prefix == Settings().topic_prefix  # default
    assert settings.model_name == PROJECT_MODEL  # a project's model is its [project] model
    named = Settings.from_env({PROJECT_VARIABLE: str(project), "EDDY_MODEL_NAME": "m2"})
    assert named.model_name == "m2"


def test_a_project_path_is_resolved_and_its_relative_paths_are_the_projects(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(project.parent)
    settings = Settings.from_env({PROJECT_VARIABLE: project.name})
    assert settings.project == project.resolve()
    assert settings.data_dir == project.resolve() / "state"


def test_without_eddy_project_no_project_applies_even_from_inside_one(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(project)
    for environ in ({}, {PROJECT_VARIABLE: ""}):
        settings = Settings.from_env(environ)
        assert settings.project is None
        assert settings.model_name == Settings().model_name
        assert settings.retrain_window == Settings().retrain_window


@pytest.mark.parametrize(
    ("settings_line", "named"),
    [
        ("partitions = 0", "[settings] partitions"),
        ("retrain_windw = 5", "retrain_windw"),
        ('model_name = "x"', "[project] model"),
    ],
)
def test_a_bad_project_setting_is_refused_naming_its_file(
    project: Path, settings_line: str, named: str
) -> None:
    toml = project / PROJECT_FILE
    toml.write_text(toml.read_text().replace("[settings]\n", f"[settings]\n{settings_line}\n"))
    toml.write_text(toml.read_text().replace(f"partitions = {PROJECT_PARTITIONS}\n", ""))
    with pytest.raises(SettingsError) as raised:
        Settings.from_env({PROJECT_VARIABLE: str(project)})
    assert named in str(raised.value)
    assert str(toml) in str(raised.value)


def test_a_project_folder_without_eddy_toml_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match=r"EDDY_PROJECT: .*missing"):
        Settings.from_env({PROJECT_VARIABLE: str(tmp_path)})


def test_the_cli_uses_the_project_it_is_run_in(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Empty, so that monkeypatch restores the variable the command sets in this process.
    monkeypatch.setenv(PROJECT_VARIABLE, "")
    (project / "src").mkdir()
    monkeypatch.chdir(project / "src")
    result = CliRunner().invoke(app, ["config"])
    assert result.exit_code == 0, result.output
    assert f"{PROJECT_VARIABLE}={project.resolve()}" in result.output
    assert f"EDDY_RETRAIN_WINDOW={PROJECT_WINDOW}" in result.output
    assert f"EDDY_MODEL_NAME={PROJECT_MODEL}" in result.output


def test_deployment_features_are_the_projects_or_the_built_in_ones(project: Path) -> None:
    assert deployment_features(Settings()) is FEATURES
    assert deployment_project(Settings()) is None
    with_temperature(project)
    settings = Settings.from_env({PROJECT_VARIABLE: str(project)})
    features = deployment_features(settings)
    assert features.fingerprint() != FEATURES.fingerprint()
    assert [name for a in features.aggregates for name in a.op_names] == [
        "temperature_count_1h",
        "temperature_mean_1h",
    ]
    assert deployment_learner(settings, features).drift_ignore == features.accumulating_names()


def event_record(offset: int, **features: object) -> RawRecord:
    value = orjson.dumps(
        {
            "event_id": f"e{offset}",
            "entity_id": "u1",
            "event_time": EVENT_TIME.isoformat(),
            "features": features,
        }
    )
    return RawRecord("events", 0, offset, b"u1", value, ())


def test_events_outside_the_declared_fields_are_dead_lettered_naming_the_field(
    project: Path,
) -> None:
    schema = raw_schema_of(
        deployment_project(Settings.from_env({PROJECT_VARIABLE: str(with_temperature(project))}))
    )
    assert schema is not None
    fitting = event_record(0, size=1, color=0, shape=2, temperature=21.5)
    out_of_range = event_record(1, size=1, color=0, shape=2, temperature=99.0)
    undeclared = event_record(2, size=1, color=0, shape=2, humidity=0.4)
    records = [fitting, out_of_range, undeclared]

    events, letters = decode_batch(records, EVENT_TIME, MAX_FUTURE, schema)

    assert [record for record, _ in events] == [fitting]
    reasons = [dict(letter.headers)[ERROR_REASON].decode() for letter in letters]
    assert {dict(letter.headers)[ERROR_CLASS].decode() for letter in letters} == {RAW_FIELDS_ERROR}
    assert "'temperature'" in reasons[0]
    assert "above its max 60" in reasons[0]
    assert "unknown field 'humidity'" in reasons[1]
    # Without a project, the message contract alone decides, as before.
    assert len(decode_batch(records, EVENT_TIME, MAX_FUTURE)[0]) == len(records)


def test_a_request_may_leave_declared_fields_out_but_not_break_them(project: Path) -> None:
    schema = raw_schema_of(
        deployment_project(Settings.from_env({PROJECT_VARIABLE: str(with_temperature(project))}))
    )
    assert schema is not None
    assert schema.refusal({"temperature": 20.0}, partial=True) is None
    refusal = schema.refusal({"temperature": "warm"}, partial=True)
    assert refusal is not None
    assert refusal.error_class == RAW_FIELDS_ERROR
    assert "field 'temperature' must be a float, got str" in refusal.reason


def test_a_project_keeps_no_secret_in_its_settings(tmp_path: Path) -> None:
    # A key or password in eddy.toml would be committed with the project and printed by
    # `eddy plan`: both the settings and the loader refuse it, naming where it was.
    root = tmp_path / "p"
    init_project(root)
    toml = root / "eddy.toml"
    toml.write_text(toml.read_text().replace("[settings]\n", '[settings]\nsigning_key = "k"\n'))
    with pytest.raises(SettingsError, match="signing_key in \\[settings\\]"):
        Settings.from_env({"EDDY_PROJECT": str(root)})
    with pytest.raises(ProjectError) as refused:
        load_project(root)
    assert refused.value.line == 10
    assert "secret" in str(refused.value)


def test_a_redis_url_with_a_password_is_refused_in_a_project(project: Path) -> None:
    text = (project / "eddy.toml").read_text()
    (project / "eddy.toml").write_text(
        text.replace(
            "[settings]", '[settings]\nredis_url = "redis://:hunter2@redis.internal:6379/0"', 1
        )
    )
    with pytest.raises(SettingsError, match=r"redis_url in \[settings\].*a secret is not kept"):
        Settings.from_env({PROJECT_VARIABLE: str(project)})


def test_a_project_named_by_its_file_says_to_name_the_folder(project: Path) -> None:
    with pytest.raises(SettingsError, match="not a project folder"):
        Settings.from_env({PROJECT_VARIABLE: str(project / "eddy.toml")})


def test_the_stack_script_gets_the_projects_data_folder_and_services(project: Path) -> None:
    from eddy.services.cli.main import stack_env

    text = (project / "eddy.toml").read_text()
    (project / "eddy.toml").write_text(
        text.replace("[settings]", '[settings]\nredis_maxmemory = "64mb"', 1)
    )
    env = stack_env(Settings.from_env({PROJECT_VARIABLE: str(project)}), {"PATH": "/bin"})
    assert env["EDDY_DATA_DIR"] == str(project.resolve() / "state")
    assert env["EDDY_REDIS_MAXMEMORY"] == "64mb"
    # Left to the defaults, the script starts its own Kafka and Redis: nothing to pass.
    assert "EDDY_KAFKA_BOOTSTRAP" not in env
    assert "EDDY_REDIS_URL" not in env
    assert stack_env(Settings.from_env({}), {})["STACK_PYTHON"]


def test_a_project_using_sasl_loads_with_the_password_in_the_environment(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = (project / "eddy.toml").read_text()
    (project / "eddy.toml").write_text(
        text.replace(
            "[settings]",
            '[settings]\nkafka_security_protocol = "SASL_SSL"\n'
            'kafka_sasl_mechanism = "SCRAM-SHA-512"\nkafka_sasl_username = "eddy"',
            1,
        )
    )
    monkeypatch.delenv("EDDY_KAFKA_SASL_PASSWORD", raising=False)
    with pytest.raises(ProjectError, match="SASL"):
        load_project(project)
    monkeypatch.setenv("EDDY_KAFKA_SASL_PASSWORD", "from-the-environment")
    assert load_project(project).settings["kafka_sasl_username"] == "eddy"


@pytest.mark.parametrize(("lateness", "skew", "warned"), [(60, 300, True), (300, 300, False)])
def test_a_lateness_below_the_event_time_skew_is_warned_of(
    lateness: int, skew: int, warned: bool, caplog: pytest.LogCaptureFixture
) -> None:
    features = FeatureSet(
        (Aggregate("amount", ("count",), sliding(600, 60)),), allowed_lateness_s=lateness
    )
    with caplog.at_level("WARNING", logger="eddy.services.project.deployment"):
        warn_of_short_lateness(Settings(max_event_time_skew_s=skew), features)
        lateness_logged = [r.__dict__["allowed_lateness_s"] for r in caplog.records]
        assert lateness_logged == ([lateness] if warned else [])
        warn_of_short_lateness(Settings(), FEATURES)  # an hour against 5 minutes: quiet
        assert len(caplog.records) == int(warned)
