"""scripts/stack.sh's commands that start nothing: the topologies' EDDY_* exports, the
refusals, and ``eddy up|down|status --cluster`` reaching the script (issue #19)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from eddy.services.cli import main as cli
from eddy.services.config.settings import PROJECT_ROOT

STACK_SCRIPT = PROJECT_ROOT / "scripts" / "stack.sh"


def stack(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(STACK_SCRIPT), *args],
        env={"PATH": "/usr/bin:/bin", "EDDY_DATA_DIR": str(tmp_path), **env},
        capture_output=True,
        text=True,
        check=False,
    )


def exports(result: subprocess.CompletedProcess[str]) -> dict[str, str]:
    assert result.returncode == 0, result.stderr
    pairs = (line.removeprefix("export ").split("=", 1) for line in result.stdout.splitlines())
    return dict(pairs)


def test_env_points_eddy_at_the_single_stack(tmp_path: Path) -> None:
    assert exports(stack(tmp_path, "env")) == {
        "EDDY_KAFKA_BOOTSTRAP": "127.0.0.1:9092",
        "EDDY_REDIS_URL": "redis://127.0.0.1:6379/0",
        "EDDY_REDIS_CLUSTER": "false",
        "EDDY_REPLICATION_FACTOR": "1",
    }


def test_env_points_eddy_at_the_cluster_chosen_by_flag_or_variable(tmp_path: Path) -> None:
    expected = {
        "EDDY_KAFKA_BOOTSTRAP": "127.0.0.1:19092,127.0.0.1:19093,127.0.0.1:19094",
        "EDDY_REDIS_URL": "redis://127.0.0.1:17001/0",
        "EDDY_REDIS_CLUSTER": "true",
        "EDDY_REDIS_CLUSTER_NODES": ",".join(f"127.0.0.1:{17000 + n}" for n in range(1, 7)),
        "EDDY_REPLICATION_FACTOR": "3",
    }
    assert exports(stack(tmp_path, "env", "--cluster")) == expected
    assert exports(stack(tmp_path, "env", STACK_TOPOLOGY="cluster")) == expected


def test_the_clusters_ports_move_together(tmp_path: Path) -> None:
    env = exports(
        stack(
            tmp_path,
            "env",
            "--cluster",
            STACK_CLUSTER_KAFKA_PORT="29092",
            STACK_CLUSTER_REDIS_PORT="28001",
        )
    )
    assert env["EDDY_KAFKA_BOOTSTRAP"] == "127.0.0.1:29092,127.0.0.1:29093,127.0.0.1:29094"
    assert env["EDDY_REDIS_URL"] == "redis://127.0.0.1:28001/0"
    assert env["EDDY_REDIS_CLUSTER_NODES"].split(",")[-1] == "127.0.0.1:28006"


@pytest.mark.parametrize(
    ("args", "env", "said"),
    [
        (("start-node", "kafka-1"), {}, "start-node is for --cluster"),
        (("start-node", "kafka-4", "--cluster"), {}, "start-node takes kafka-1..kafka-3"),
        (("env",), {"STACK_TOPOLOGY": "mesh"}, "STACK_TOPOLOGY is single or cluster"),
        (("env", "--cluster"), {"STACK_CLUSTER_REDIS_PORT": "65533"}, "base port 65533"),
        (("up", "--cluster", "--fast"), {}, "usage:"),
        (("start-node", "--cluster"), {}, "usage:"),
    ],
)
def test_what_the_script_refuses_it_says(
    tmp_path: Path, args: tuple[str, ...], env: dict[str, str], said: str
) -> None:
    result = stack(tmp_path, *args, STACK_PYTHON=sys.executable, **env)
    assert result.returncode != 0
    assert said in result.stderr
    assert not (tmp_path / "cluster").exists()


@pytest.mark.parametrize("command", ["up", "down", "status"])
def test_eddy_passes_cluster_to_the_script(command: str, monkeypatch: pytest.MonkeyPatch) -> None:
    called: list[list[str]] = []

    def call(args: list[str], **_: object) -> int:
        called.append(args)
        return 0

    monkeypatch.setattr(cli.subprocess, "call", call)
    assert CliRunner().invoke(cli.app, [command, "--cluster"]).exit_code == 0
    assert CliRunner().invoke(cli.app, [command]).exit_code == 0
    assert called == [
        ["bash", str(cli.STACK_SCRIPT), command, "--cluster"],
        ["bash", str(cli.STACK_SCRIPT), command],
    ]
