"""``eddy models list``: the newest versions of each model, the aliased ones however old.

A registry gains an online snapshot every ``EDDY_SNAPSHOT_EVERY`` examples, so listing
every version would bury the few an operator looks for under thousands of lines.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from eddy.services.cli.main import LISTED_VERSIONS, app
from eddy.services.config.settings import Settings
from eddy.services.registry.opening import open_registry
from eddy.services.registry.store import RIVER, SKLEARN, Lineage

MODEL = "fraud"
VERSIONS = LISTED_VERSIONS + 7
OLD_CHAMPION = 3
SKLEARN_EVERY = 5


@pytest.fixture
def listed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.setenv("EDDY_DATA_DIR", str(tmp_path / "data"))
    registry = open_registry(Settings.from_env(), announce=False)
    lineage = Lineage({}, "fs", {}, {}, "test", {"type": "operator", "id": "t"}, "test")
    for n in range(1, VERSIONS + 1):
        flavor = SKLEARN if n % SKLEARN_EVERY == 0 else RIVER
        registry.register(MODEL, flavor, {"n": n}, {"accuracy": n / 100}, lineage)
    registry.register("other", RIVER, {"n": 0}, {}, lineage)
    registry.promote(MODEL, OLD_CHAMPION, "test", "an old champion")
    return CliRunner()


def _listed(runner: CliRunner, *args: str) -> tuple[list[int], str]:
    result = runner.invoke(app, ["models", "list", *args])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    numbers = [int(line.split()[0].split("@")[1]) for line in lines if line.startswith(MODEL)]
    return numbers, result.stdout


def test_the_newest_versions_and_the_champion_are_listed_with_a_count_of_the_rest(
    listed: CliRunner,
) -> None:
    numbers, out = _listed(listed, MODEL)
    newest = list(range(VERSIONS - LISTED_VERSIONS + 1, VERSIONS + 1))
    assert numbers == [OLD_CHAMPION, *newest]
    assert f"{MODEL}@{OLD_CHAMPION}" in next(
        line for line in out.splitlines() if "champion" in line
    )
    hidden = VERSIONS - LISTED_VERSIONS - 1
    assert f"... {hidden:,} older versions of {MODEL} not listed (--last 0 lists all)" in out
    assert "other@" not in out


def test_last_and_flavor_narrow_the_list_and_zero_lists_every_version(listed: CliRunner) -> None:
    numbers, out = _listed(listed, MODEL, "--last", "0")
    assert numbers == list(range(1, VERSIONS + 1))
    assert "not listed" not in out
    numbers, _ = _listed(listed, MODEL, "--last", "2", "--flavor", SKLEARN)
    sklearn = [n for n in range(1, VERSIONS + 1) if n % SKLEARN_EVERY == 0]
    assert numbers == sklearn[-2:]  # the river champion is not a sklearn version
    numbers, out = _listed(listed, "--last", "1")
    assert numbers == [OLD_CHAMPION, VERSIONS]
    assert "other@1" in out


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["--flavor", "onnx"], "no flavor 'onnx'"),
        (["nobody"], "no model 'nobody'"),
    ],
)
def test_an_unknown_flavor_or_model_is_an_error(
    listed: CliRunner, args: list[str], error: str
) -> None:
    result = listed.invoke(app, ["models", "list", *args])
    assert result.exit_code == 2
    assert error in result.output
