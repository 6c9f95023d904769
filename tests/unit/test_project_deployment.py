"""A project in use: its settings under the environment (issue #17, slice 2)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from eddy.services.cli.main import app
from eddy.services.config.settings import Settings, SettingsError
from eddy.services.project.layout import PROJECT_FILE, PROJECT_VARIABLE
from eddy.services.project.scaffold import init_project

PROJECT_MODEL = "churn"
PROJECT_WINDOW = 2000
PROJECT_PARTITIONS = 5
ENV_PARTITIONS = 7


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
