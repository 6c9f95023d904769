"""The status API's served-accuracy series, from the learner's ``/metrics`` text, without
a stack: the champion's estimated accuracy, its band and its realized accuracy, each a
gap (None) until the learner reports it, and never another version's figures."""

from __future__ import annotations

import io
import urllib.request
from pathlib import Path
from typing import Any

import orjson
import pytest
from prometheus_client import CollectorRegistry, Gauge, generate_latest

from eddy.services.config.settings import Settings
from eddy.services.ops.metrics import ROLE_OFFSETS
from eddy.services.ops.monitor import SERVED_ACCURACY, Monitor
from eddy.services.registry.store import CHALLENGER, RIVER, Lineage, Registry
from eddy.streams.learning.models import make_model

METRICS_PORT = 9400
LEARNER_PORT = METRICS_PORT + ROLE_OFFSETS["learner"]
LINEAGE = Lineage({}, "fs", {}, {}, "test", {"type": "operator", "id": "t"}, "test")
KEYS = tuple(SERVED_ACCURACY.values())


class Learner:
    """The learner's ``/metrics`` as prometheus_client writes it: the same gauges (names
    and labels) as :mod:`eddy.services.ops.metrics`, in a registry of the test's own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.model = Gauge("eddy_model_metric", "", ["metric"], registry=self.registry)
        self.served = Gauge(
            "eddy_served_performance",
            "",
            ["model", "version", "metric", "figure"],
            registry=self.registry,
        )
        self.up = True

    def report(self, version: str, metric: str = "accuracy", **figures: float) -> None:
        for figure, value in figures.items():
            self.served.labels("m", version, metric, figure).set(value)

    def text(self) -> bytes:
        if not self.up:
            raise ConnectionRefusedError("the learner is down")
        return generate_latest(self.registry)


@pytest.fixture
def learner(monkeypatch: pytest.MonkeyPatch) -> Learner:
    """The learner the monitor scrapes; the other roles do not answer."""
    learner = Learner()

    def urlopen(url: str, timeout: float) -> io.BytesIO:
        if f":{LEARNER_PORT}/" not in url:
            raise ConnectionRefusedError(url)
        return io.BytesIO(learner.text())

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)  # what scrape() calls
    return learner


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    """Model "m": version 1 champion, version 2 challenger."""
    registry = Registry(tmp_path / "registry", b"key")
    for _ in range(2):
        registry.register("m", RIVER, make_model("logistic"), {}, LINEAGE)
    registry.promote("m", 1, "test", "first champion")
    registry.set_alias("m", CHALLENGER, 2, "test", "retrained")
    return registry


def served(point: dict[str, Any]) -> dict[str, Any]:
    return {key: point[key] for key in ("served_version", *KEYS)}


def test_the_series_follows_the_champion_estimate_first_then_labels(
    learner: Learner, registry: Registry, tmp_path: Path
) -> None:
    monitor = Monitor(
        Settings(data_dir=tmp_path, model_name="m", metrics_port=METRICS_PORT), registry
    )
    learner.model.labels("examples").set(0)

    nothing = monitor.sample()  # the learner answers, and has estimated nothing yet
    learner.report("m@2", estimate=0.7, lower=0.6, upper=0.8, realized=0.65)  # a challenger
    learner.report("m@1", estimate=0.91, lower=0.88, upper=0.94)
    learner.report("m@1", metric="log_loss", estimate=0.3, realized=0.2)
    estimated = monitor.sample()
    learner.report("m@1", realized=0.9)  # labels landed
    realized = monitor.sample()

    assert served(nothing) == {"served_version": "m@1"} | dict.fromkeys(KEYS)
    assert served(estimated) == {
        "served_version": "m@1",
        "estimated_accuracy": 0.91,
        "estimated_accuracy_lower": 0.88,
        "estimated_accuracy_upper": 0.94,
        "realized_accuracy": None,
    }
    assert served(realized) == served(estimated) | {"realized_accuracy": 0.9}
    series = orjson.loads(orjson.dumps(monitor.status()))["series"]
    assert [served(p) for p in series] == [served(nothing), served(estimated), served(realized)]


def test_after_a_promotion_the_series_is_the_new_champion_s(
    learner: Learner, registry: Registry, tmp_path: Path
) -> None:
    monitor = Monitor(
        Settings(data_dir=tmp_path, model_name="m", metrics_port=METRICS_PORT), registry
    )
    learner.report("m@1", estimate=0.91, lower=0.88, upper=0.94, realized=0.9)
    before = monitor.sample()
    registry.promote("m", 2, "test", "better")
    promoted = monitor.sample()  # version 2 has served nothing yet: a gap
    learner.report("m@2", estimate=0.95, lower=0.93, upper=0.97)
    estimated = monitor.sample()

    assert (before["served_version"], before["estimated_accuracy"]) == ("m@1", 0.91)
    assert served(promoted) == {"served_version": "m@2"} | dict.fromkeys(KEYS)
    assert (estimated["estimated_accuracy"], estimated["realized_accuracy"]) == (0.95, None)


def test_no_figure_is_made_up(learner: Learner, registry: Registry, tmp_path: Path) -> None:
    """A learner down, a figure that is not a number, a model without a champion: gaps."""
    monitor = Monitor(
        Settings(data_dir=tmp_path, model_name="m", metrics_port=METRICS_PORT), registry
    )
    learner.report("m@1", estimate=float("nan"), lower=0.88, upper=0.94)
    assert monitor.sample()["estimated_accuracy"] is None
    learner.up = False
    assert served(monitor.sample()) == {"served_version": "m@1"} | dict.fromkeys(KEYS)

    learner.up = True
    other = Monitor(
        Settings(data_dir=tmp_path, model_name="n", metrics_port=METRICS_PORT), registry
    )
    assert served(other.sample()) == {"served_version": None} | dict.fromkeys(KEYS)
