"""The dashboard in a real browser: Debian's Chromium, headless, driven by Selenium.

``test_monitor.py`` checks the status API and that the page is served; what an operator
sees is drawn by the page's JavaScript with Chart.js, which only a browser runs. A run
once showed, in headless Chromium, a rolling accuracy of 0 and an error of 1.0 as lines
across the chart while nothing had been scored (issue #19). Here ``eddy run monitor``
watches a feature worker, a learner and a predictor of a deployment of the test's own,
first before anything is scored, then under live traffic (labelled events, and requests
labelled a second after they are answered); the checks read Chart.js's own state in the
page (what it lays out to draw), not pixels. Screenshots of both moments
are kept under ``.eddy/test-artifacts/dashboard-browser/``.

Chromium and ChromeDriver are Debian's (``scripts/bootstrap.sh`` installs them): Selenium
is handed the driver's path, so its Selenium Manager never runs, and nothing is
downloaded.
"""

from __future__ import annotations

import collections
import random
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

from eddy.services.config.settings import PROJECT_ROOT, Settings
from eddy.services.ops.metrics import ROLE_OFFSETS
from eddy.services.ops.monitor import CHART_JS, scrape
from eddy.streams.messages.contracts import Event, Label, PredictionRequest
from eddy.streams.messages.validation import encode
from eddy.streams.transport.clients import make_producer
from eddy.streams.transport.topics import Topic, topic_name
from tests.factories import DeploymentSettings
from tests.monitoring import champion_and_alert
from tests.network import free_port, get
from tests.processes import start_eddy
from tests.waiting import wait_until

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
WIDTH = 1400
WINDOW_FRAME = 200  # pixels of the headless window that are not page
# As root on a machine without a network: no sandbox, and none of the calls to Google's
# hosts that a closed network refuses noisily. A profile of the test's own.
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    f"--window-size={WIDTH},2000",
)
ARTIFACTS = PROJECT_ROOT / ".eddy" / "test-artifacts" / "dashboard-browser"
SERVICES = ("features", "learner", "predictor")
SAMPLE_S = 0.5
TRAFFIC_PER_S = 20
TRAFFIC_LIMIT_S = 90.0  # the traffic stops by itself even if the test hangs
CHARTS = ("accuracy", "estimate", "throughput", "latency", "drift")
ESTIMATE = ("estimated accuracy", "estimate lower bound", "estimate upper bound")
REALIZED = "realized accuracy"
LABEL_LAG = TRAFFIC_PER_S  # a request's label comes this many requests after it: 1 s

# Each chart's datasets as Chart.js laid them out to draw: the values of the elements it
# does not skip (a null value is a skipped element: a gap). A bar is a point at its label.
PAGE_STATE_JS = """
if (typeof Chart === "undefined") return null;
const [ids] = arguments;
const charts = {};
for (const id of ids) {
  const chart = Chart.getChart(id);
  charts[id] = chart.data.datasets.map((dataset, i) => ({
    label: dataset.label,
    visible: chart.isDatasetVisible(i),
    points: chart.getDatasetMeta(i).data.flatMap((element, j) => {
      const value = dataset.data[j];
      const point = typeof value === "number" ? { x: chart.data.labels[j], y: value } : value;
      return element.skip || point == null || !Number.isFinite(point.y) ? [] : [point];
    }),
  }));
}
const text = id => document.getElementById(id)?.textContent ?? "";
return {
  charts,
  empty: Object.fromEntries(ids.map(id => [id, text(id + "-empty")])),
  tables: Object.fromEntries(["aliases", "history", "alerts"].map(id => [id, text(id)])),
  served: text("served-version"),
};
"""


def _metrics_base() -> int:
    """``EDDY_METRICS_PORT`` such that each service's port (base + its offset) is free."""
    for _ in range(20):
        base = free_port() - ROLE_OFFSETS["features"]
        ports = [base + ROLE_OFFSETS[role] for role in SERVICES]
        if all(_free(port) for port in ports):
            return base
    pytest.fail("no free block of metrics ports on 127.0.0.1")


def _free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _browser(profile: Path, log: Path) -> webdriver.Chrome:
    """Headless Chromium; ``log`` gets ChromeDriver's log, the console is kept to read."""
    for path in (CHROMIUM, CHROMEDRIVER):
        if not path.exists():
            pytest.fail(
                f"{path} is missing: scripts/bootstrap.sh installs Debian's chromium and "
                "chromium-driver",
                pytrace=False,
            )
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(
        service=Service(str(CHROMEDRIVER), log_output=str(log)), options=options
    )


def _page_state(driver: webdriver.Chrome) -> dict[str, Any]:
    """The charts as drawn, the empty-state notes and the tables' text (PAGE_STATE_JS)."""
    state = driver.execute_script(PAGE_STATE_JS, list(CHARTS))
    if state is None:
        pytest.fail("the page has no Chart.js: scripts/bootstrap.sh installs it", pytrace=False)
    return dict(state)


def _dataset(state: dict[str, Any], chart: str, label: str) -> list[dict[str, float]]:
    for dataset in state["charts"][chart]:
        if dataset["label"] == label:
            return list(dataset["points"])
    raise AssertionError(f"no dataset {label!r} in the {chart} chart")


def _without_data(state: dict[str, Any]) -> list[str]:
    """``chart: dataset`` for each dataset that draws nothing (or is hidden)."""
    return [
        f"{chart}: {dataset['label']}"
        for chart in CHARTS
        for dataset in state["charts"][chart]
        if not (dataset["visible"] and dataset["points"])
    ]


def _screenshot(driver: webdriver.Chrome, path: Path) -> Path:
    """Save a PNG of the whole page beside the test's files, and a copy under ARTIFACTS
    that outlives pytest's temporary folders."""
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(WIDTH, int(height) + WINDOW_FRAME)  # a screenshot is the window
    driver.save_screenshot(str(path))
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    kept = ARTIFACTS / path.name
    shutil.copyfile(path, kept)
    print(f"screenshot: {kept}")
    return kept


def _traffic(settings: Settings, stop: threading.Event) -> None:
    """Labelled events (the feature worker turns them into the learner's examples) and
    prediction requests, TRAFFIC_PER_S of each, until ``stop`` or TRAFFIC_LIMIT_S; each
    request is labelled LABEL_LAG requests later (the learner joins the label to what the
    champion answered: its realized accuracy)."""
    rng = random.Random(19)
    events = topic_name(Topic.EVENTS, settings.topic_prefix)
    requests = topic_name(Topic.PREDICTION_REQUESTS, settings.topic_prefix)
    labels = topic_name(Topic.LABELS, settings.topic_prefix)
    unlabelled: collections.deque[tuple[str, bool]] = collections.deque()
    producer = make_producer(settings, linger_ms=5)
    deadline = time.monotonic() + TRAFFIC_LIMIT_S
    i = 0
    try:
        while not stop.wait(1 / TRAFFIC_PER_S) and time.monotonic() < deadline:
            amount = rng.uniform(0, 100)
            x: dict[str, Any] = {"amount": amount, "country": rng.choice("ABC")}
            entity = f"u{i % 10}"
            now = datetime.now(UTC)
            event = Event(
                event_id=f"ev-{i}",
                entity_id=entity,
                event_time=now,
                features=x,
                label=amount > 50,
            )
            request = PredictionRequest(request_id=f"req-{i}", entity_id=entity, features=x)
            producer.send(events, key=entity.encode(), value=encode(event))
            producer.send(requests, key=entity.encode(), value=encode(request))
            unlabelled.append((request.request_id, amount > 50))
            if len(unlabelled) > LABEL_LAG:
                request_id, truth = unlabelled.popleft()
                label = Label(request_id=request_id, label=truth, event_time=now)
                producer.send(labels, key=request_id.encode(), value=encode(label))
            i += 1
    finally:
        producer.close(timeout=10)


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    """The test's ``eddy`` processes, stopped (SIGTERM, then SIGKILL) whatever happens."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process in started:
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def test_every_chart_draws_live_data_and_nothing_where_there_is_none(
    deployment_settings: DeploymentSettings,
    tmp_path: Path,
    processes: list[subprocess.Popen[bytes]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Selenium Manager is skipped when the driver's path is given; offline all the same.
    monkeypatch.setenv("SE_OFFLINE", "true")
    assert CHART_JS.exists(), f"{CHART_JS} is missing: scripts/bootstrap.sh installs Chart.js"
    base = _metrics_base()
    settings = deployment_settings(
        "dash",
        model_name="m",
        monitor_port=free_port(),
        monitor_sample_s=SAMPLE_S,
        metrics_port=base,
        # Checkpoints (which report the learner's metrics) and drift statistics soon.
        checkpoint_interval_s=1.0,
        checkpoint_every=20,
        drift_window=20,
        drift_min_samples=10,
        drift_check_every=5,
        snapshot_every=0,
        # The champion's estimate from its first 40 answers (2 s of traffic), then every 20.
        estimate_window=40,
        estimate_check_every=20,
    )
    registry, alert = champion_and_alert(settings)
    promoted_at = registry.history("m")[0].at
    producer = make_producer(settings)
    sent = producer.send(
        topic_name(Topic.DRIFT_ALERTS, settings.topic_prefix), key=b"m", value=encode(alert)
    ).get(timeout=30)
    # A record the learner refuses (and dead-letters) is a change it checkpoints, and a
    # checkpoint reports its metrics: a learner that has scored nothing, as before a
    # run's first labels come.
    examples = topic_name(Topic.TRAINING_EXAMPLES, settings.topic_prefix)
    producer.send(examples, value=b"not a training example").get(timeout=30)
    producer.close()

    for role in (*SERVICES, "monitor"):
        processes.append(start_eddy(settings, tmp_path / f"{role}.log", "run", role))
    monitor_url = f"http://127.0.0.1:{settings.monitor_port}"
    learner_metrics = f"http://127.0.0.1:{base + ROLE_OFFSETS['learner']}/metrics"

    def logs() -> str:
        return "\n".join(
            f"--- {log.name}\n{log.read_text(errors='replace')[-2000:]}"
            for log in sorted(tmp_path.glob("*.log"))
        )

    def running() -> bool:
        return all(process.poll() is None for process in processes)

    def learner_reported() -> bool:
        samples = scrape(learner_metrics) or {}
        return any(
            labels.get("metric") == "examples" for labels, _ in samples.get("eddy_model_metric", [])
        )

    wait_until(
        learner_reported,
        "the learner to report its metrics with nothing scored",
        timeout_s=60,
        every_s=0.3,
        alive=running,
        logs=logs,
    )
    reported_at = time.time()
    get(f"{monitor_url}/api/status")  # the monitor answers

    with ExitStack() as cleanup:
        driver = _browser(tmp_path / "chromium-profile", tmp_path / "chromedriver.log")
        cleanup.callback(driver.quit)
        driver.get(f"{monitor_url}/")
        state: dict[str, Any] = {}

        def page_logs() -> str:
            entries = driver.get_log("browser")  # type: ignore[no-untyped-call]
            console = "\n".join(str(entry) for entry in entries)
            return f"page: {state}\nconsole:\n{console}\n{logs()}"

        def rendered_after_report() -> bool:
            state.clear()
            state.update(_page_state(driver))
            learned = _dataset(state, "throughput", "examples learned/s")
            return any(point["x"] > reported_at for point in learned)

        # A sample taken (and drawn) after the learner reported: the monitor has read
        # the learner's metrics with nothing scored in them.
        wait_until(
            rendered_after_report,
            "the page to draw a sample of the learner's metrics",
            timeout_s=30,
            every_s=0.25,
            alive=running,
            logs=page_logs,
        )
        _screenshot(driver, tmp_path / "nothing-scored.png")
        for label in ("rolling accuracy", "error"):
            drawn = _dataset(state, "accuracy", label)
            assert not drawn, f"{label} drawn with nothing scored: {drawn[-5:]}"
        assert "rolling accuracy" in state["empty"]["accuracy"], state["empty"]
        # Nothing answered, nothing labelled: no estimate, no band, no realized accuracy.
        for label in (*ESTIMATE, REALIZED):
            drawn = _dataset(state, "estimate", label)
            assert not drawn, f"{label} drawn with nothing answered: {drawn[-5:]}"
        assert "estimated accuracy" in state["empty"]["estimate"], state["empty"]
        assert state["served"] == "(champion m@1)"

        stop = threading.Event()
        traffic = threading.Thread(target=_traffic, args=(settings, stop), daemon=True)
        traffic.start()
        cleanup.callback(traffic.join, 15)
        cleanup.callback(stop.set)

        def everything_drawn() -> bool:
            state.clear()
            state.update(_page_state(driver))
            return (
                not _without_data(state)
                and "first champion" in state["tables"]["history"]
                and "concept" in state["tables"]["alerts"]
            )

        wait_until(
            everything_drawn,
            "every chart to draw data, with the alert and the promotion",
            timeout_s=60,
            every_s=0.25,
            alive=running,
            logs=lambda: f"without data: {_without_data(state)}\n{page_logs()}",
        )
        kept = _screenshot(driver, tmp_path / "live.png")

    assert kept.stat().st_size > 0
    accuracy = _dataset(state, "accuracy", "rolling accuracy")
    error = _dataset(state, "accuracy", "error")
    # Nothing drawn for the samples taken before anything was scored: the line starts
    # after them, and error is 1 - accuracy only where there is an accuracy.
    assert min(point["x"] for point in accuracy) > reported_at
    assert all(0 <= point["y"] <= 1 for point in accuracy)
    assert [(a["x"], round(a["y"] + e["y"], 9)) for a, e in zip(accuracy, error, strict=True)] == [
        (a["x"], 1.0) for a in accuracy
    ]
    # The champion's estimate within its band, drawn only for samples after the learner
    # had estimated it; the realized accuracy fills in beside it as labels land.
    estimated, lower, upper = (_dataset(state, "estimate", label) for label in ESTIMATE)
    assert min(point["x"] for point in estimated) > reported_at
    bands = {point["x"]: (low["y"], point["y"]) for point, low in zip(upper, lower, strict=True)}
    assert all(bands[p["x"]][0] <= p["y"] <= bands[p["x"]][1] for p in estimated)
    realized = _dataset(state, "estimate", REALIZED)
    assert all(0 <= point["y"] <= 1 for point in realized + estimated)
    alert_markers = _dataset(state, "accuracy", "drift alert")
    assert alert_markers[0]["x"] == pytest.approx(sent.timestamp / 1000)
    promotion_markers = _dataset(state, "accuracy", "promotion")
    assert [p["x"] for p in promotion_markers] == [pytest.approx(promoted_at)]
    assert all(not note for note in state["empty"].values()), state["empty"]
    assert "champion1" in state["tables"]["aliases"].replace(" ", "")
    assert "- → 1" in state["tables"]["history"]
