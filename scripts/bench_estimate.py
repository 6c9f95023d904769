"""Know before the labels (#20): Eddy's estimate of a served classifier's performance
from its answers alone, against the metric its labels show afterwards, against Eddy's
label-based alert and against NannyML's CBPE on the same windows.

    .venv/bin/python scripts/bench_estimate.py [--quick]

Pure CPU and seeded: no Kafka or Redis, and nothing but this process, two replay
workers and the NannyML peer. Per seed, a binary stream with a fixed true rule over four
standard normal inputs, P(positive | x) = sigmoid(3 (x1 - 1.5) - 1.5 x2 + x3 x4), and a
served model fitted on reference examples by scikit-learn's
``HistGradientBoostingClassifier`` (the retrainer's default estimator): a good model,
not a perfectly calibrated one. As many reference examples again are its holdout, which
seeds the version's calibration table (:meth:`Calibration.from_pairs`) as training
does. Then three streams of answers with a change at a known answer:

- **control**: nothing changes;
- **covariate shift**: x1's mean moves from 0 to 1.5, toward the line where the model
  decides (a population with larger values of one input; the rule is unchanged):
  accuracy falls from about 0.92 to 0.84, and the scores show it. Estimation should work;
- **concept shift**: x2's effect reverses (its coefficient -1.5 → +1.5), the inputs
  stay as they were: the scores are the same as before while accuracy falls to about
  0.86. No estimate from scores can see it.

Each stream is replayed event by event once per label delay D: answer i reaches
:meth:`EstimateWatch.served` at event i and its label reaches
:meth:`EstimateWatch.labelled` and :meth:`ServedWatch.update_many` (the label-based
alert Eddy already has: its concept findings) at event i + D; labels due after the
stream's end never arrive. Both watches run with Eddy's defaults:
``EstimateConfig()``, and the learner's detector, cooldown and seed
(``LearnerConfig``). Measured per seed, scenario and delay:

- per window of ``EstimateConfig().window`` answers (aligned chunks): the estimated
  accuracy and ROC AUC as known at the window's last answer (calibrated by the labels
  arrived by then) against the realized ones computed afterwards from every label: the
  mean absolute error over the windows, and over the windows after the change;
- when each alert first fires after the change, in events after it: the estimated
  degradation, the estimate-disagrees finding and the label-based concept alert;
- false alarms: any finding on the control, any before the change elsewhere.

Next to it, NannyML's CBPE (``scripts/peers/nannyml_cbpe.py``, in its own virtualenv
``.eddy/nannyml-venv`` made on first use), fitted on the same holdout and run in batch on
the same windows: it sees each window whole and calibrates on the reference only, so
label delay does not concern it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import roc_auc_score
from threadpoolctl import threadpool_limits

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench_features import PEERS_DIR, peer_python

from eddy.streams.drift.estimate import (
    ESTIMATED_DEGRADATION,
    Calibration,
    EstimateConfig,
    EstimateWatch,
)
from eddy.streams.drift.served import ServedOutcome, ServedWatch
from eddy.streams.learning.learner import LearnerConfig
from eddy.streams.learning.models import CLASSIFICATION
from eddy.streams.messages.contracts import DriftKind

NANNYML_PEER = PEERS_DIR / "nannyml_cbpe.py"
NANNYML_REQUIREMENTS = PEERS_DIR / "requirements-nannyml.txt"
NANNYML_VENV = ROOT / ".eddy" / "nannyml-venv"
MODEL = "bench"
VERSION = f"{MODEL}@1"
FEATURES = 4
SLOPE, CENTRE, X2, SHIFT = 3.0, 1.5, -1.5, 1.5  # the rule, and the covariate shift of x1
CONTROL, COVARIATE, CONCEPT = "control", "covariate shift", "concept shift"
SCENARIOS = (CONTROL, COVARIATE, CONCEPT)
DELAYS = (0, 1_000, 10_000)
LABEL_BATCH = 100  # labels handed to ServedWatch per call, as the learner joins a poll's
REPLAY_WORKERS = 2
NANNYML = "NannyML CBPE, batch"


@dataclass(frozen=True)
class Sizes:
    seeds: tuple[int, ...]
    events: int  # answers per stream
    change_at: int  # the first answer after the change
    reference: int  # training examples, and as many again in the holdout


FULL = Sizes((1, 2, 3, 4, 5), 50_000, 20_000, 10_000)
QUICK = Sizes((1,), 30_000, 10_000, 10_000)


@dataclass(frozen=True)
class Stream:
    seed: int
    scenario: str
    scores: list[float]  # the served version's P(positive) of each answer
    labels: list[bool]


@dataclass(frozen=True)
class Replay:
    """What one replay of a stream saw, events counted from the stream's first answer."""

    accuracy: list[float]  # Eddy's estimate per window, as known at its last answer
    roc_auc: list[float]
    degradations: list[int]  # events at which an estimated degradation fired
    disagreements: list[int]  # ... labels disagreed with the estimate
    label_alerts: list[int]  # ... the label-based concept alert fired


@dataclass(frozen=True)
class Outcome:
    """One seed's figures for one scenario and one method (Eddy at a delay, or NannyML);
    alert times in events after the change, None when it never fired."""

    seed: int
    scenario: str
    method: str
    realized_before: float  # the realized accuracy, mean of the windows before the change
    realized_after: float  # ... from the change on
    accuracy_mae: float
    accuracy_mae_after: float
    roc_auc_mae: float
    roc_auc_bias: float  # mean of estimated - realized ROC AUC: below 0, it runs low
    degraded: int | None  # the estimated alert (NannyML: its first alerted window's end)
    disagreed: int | None
    label_alert: int | None
    false_estimated: int  # estimated degradations on the control or before the change
    false_disagreements: int | None  # None: the method has no such check
    false_label_alerts: int | None  # ... no label-based alert


def eddy_method(delay: int) -> str:
    return f"Eddy, label delay {delay:,}"


METHODS = (*(eddy_method(delay) for delay in DELAYS), NANNYML)


def order(outcome: Outcome) -> tuple[int, int, int]:
    """Scenario, then method (Eddy by delay, then NannyML), then seed."""
    return SCENARIOS.index(outcome.scenario), METHODS.index(outcome.method), outcome.seed


def draw(
    rng: np.random.Generator, n: int, shifted: bool = False, reversed_: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` inputs and their labels under the rule (x1 shifted, x2's effect reversed)."""
    x = rng.normal(size=(n, FEATURES))
    if shifted:
        x[:, 0] += SHIFT
    x2 = -X2 if reversed_ else X2
    logit = SLOPE * (x[:, 0] - CENTRE) + x2 * x[:, 1] + x[:, 2] * x[:, 3]
    return x, rng.random(n) < 1 / (1 + np.exp(-logit))


def served_model(seed: int, sizes: Sizes) -> tuple[HistGradientBoostingClassifier, Stream]:
    """The served version, fitted on reference examples, and its holdout's answers."""
    rng = np.random.default_rng([seed, len(SCENARIOS)])
    x, y = draw(rng, sizes.reference)
    with threadpool_limits(1):  # OpenMP threads on two shared cores cost 20x here
        model = HistGradientBoostingClassifier(random_state=seed).fit(x, y)
    x, y = draw(rng, sizes.reference)
    return model, Stream(seed, "holdout", scores_of(model, x), y.tolist())


def scores_of(model: HistGradientBoostingClassifier, x: np.ndarray) -> list[float]:
    with threadpool_limits(1):
        return [float(p) for p in model.predict_proba(x)[:, 1]]


def stream(model: HistGradientBoostingClassifier, seed: int, scenario: str, sizes: Sizes) -> Stream:
    rng = np.random.default_rng([seed, SCENARIOS.index(scenario)])
    x_before, y_before = draw(rng, sizes.change_at)
    x_after, y_after = draw(
        rng,
        sizes.events - sizes.change_at,
        shifted=scenario == COVARIATE,
        reversed_=scenario == CONCEPT,
    )
    x, y = np.vstack([x_before, x_after]), np.concatenate([y_before, y_after])
    return Stream(seed, scenario, scores_of(model, x), y.tolist())


def replay(stream: Stream, holdout: Stream, delay: int) -> Replay:
    """Play ``stream`` event by event with labels ``delay`` events late (see above)."""
    config = EstimateConfig()
    learner = LearnerConfig(model=MODEL)
    watch = EstimateWatch(config)
    watch.seed(VERSION, Calibration.from_pairs(zip(holdout.scores, holdout.labels, strict=True)))
    served = ServedWatch(
        learner.detector,
        seed=learner.seed,
        cooldown=learner.concept_cooldown,
        drift=learner.drift,
        task=CLASSIFICATION,
    )
    found = Replay([], [], [], [], [])
    scores, labels = stream.scores, stream.labels
    arrived: list[ServedOutcome] = []  # one label arrives per event from event ``delay``
    for t, score in enumerate(scores):
        for finding in watch.served(VERSION, [score]):
            if finding.kind == ESTIMATED_DEGRADATION:
                found.degradations.append(t)
        if (t + 1) % config.window == 0:
            latest = watch.latest(VERSION)
            if latest is None or latest.roc_auc is None:  # both classes fill every window
                raise RuntimeError(f"no ROC AUC estimate for the window ending at {t}")
            found.accuracy.append(latest.accuracy)
            found.roc_auc.append(latest.roc_auc)
        i = t - delay
        if i >= 0:
            if watch.labelled(VERSION, scores[i], labels[i]) is not None:
                found.disagreements.append(t)
            arrived.append(ServedOutcome(VERSION, scores[i] >= 0.5, scores[i], labels[i], i))
        if (t + 1) % LABEL_BATCH == 0 or t == len(scores) - 1:
            first = t + 1 - len(arrived)
            for alert in served.update_many(arrived):
                if alert.kind is DriftKind.CONCEPT and not alert.every_version:
                    found.label_alerts.append(first + alert.index)
            arrived = []
    return found


def realized(stream: Stream, window: int) -> tuple[list[float], list[float]]:
    """Each window's accuracy and ROC AUC, from every label."""
    scores, labels = np.asarray(stream.scores), np.asarray(stream.labels)
    accuracy, roc_auc = [], []
    for start in range(0, len(scores) - window + 1, window):
        s, y = scores[start : start + window], labels[start : start + window]
        accuracy.append(float(np.mean((s >= 0.5) == y)))
        roc_auc.append(float(roc_auc_score(y, s)))
    return accuracy, roc_auc


def mae(estimated: Sequence[float], actual: Sequence[float]) -> float:
    return statistics.fmean(abs(e - a) for e, a in zip(estimated, actual, strict=True))


def bias(estimated: Sequence[float], actual: Sequence[float]) -> float:
    return statistics.fmean(e - a for e, a in zip(estimated, actual, strict=True))


def first_after(events: Sequence[int], change_at: int) -> int | None:
    return next((t - change_at for t in events if t >= change_at), None)


def false_alarms(events: Sequence[int], scenario: str, change_at: int) -> int:
    return len(events) if scenario == CONTROL else sum(1 for t in events if t < change_at)


def eddy_outcome(stream: Stream, delay: int, found: Replay, sizes: Sizes) -> Outcome:
    window = EstimateConfig().window
    accuracy, roc_auc = realized(stream, window)
    after = sizes.change_at // window
    return Outcome(
        seed=stream.seed,
        scenario=stream.scenario,
        method=eddy_method(delay),
        realized_before=statistics.fmean(accuracy[:after]),
        realized_after=statistics.fmean(accuracy[after:]),
        accuracy_mae=mae(found.accuracy, accuracy),
        accuracy_mae_after=mae(found.accuracy[after:], accuracy[after:]),
        roc_auc_mae=mae(found.roc_auc, roc_auc),
        roc_auc_bias=bias(found.roc_auc, roc_auc),
        degraded=first_after(found.degradations, sizes.change_at),
        disagreed=first_after(found.disagreements, sizes.change_at),
        label_alert=first_after(found.label_alerts, sizes.change_at),
        false_estimated=false_alarms(found.degradations, stream.scenario, sizes.change_at),
        false_disagreements=false_alarms(found.disagreements, stream.scenario, sizes.change_at),
        false_label_alerts=false_alarms(found.label_alerts, stream.scenario, sizes.change_at),
    )


def nannyml_outcomes(
    streams: Sequence[Stream], holdouts: dict[int, Stream], sizes: Sizes
) -> list[Outcome]:
    """NannyML's CBPE on every stream, in one run of the peer (its import costs
    seconds); each fitted on the stream's seed's holdout."""
    window = EstimateConfig().window
    with tempfile.TemporaryDirectory(prefix="eddy-estimate-") as folder:
        directory = Path(folder)
        jobs: list[dict[str, str | int]] = []
        outs = [directory / f"estimate-{k}.json" for k in range(len(streams))]
        for seed, holdout in holdouts.items():
            write_csv(directory / f"reference-{seed}.csv", holdout, with_labels=True)
        for k, s in enumerate(streams):
            write_csv(directory / f"analysis-{k}.csv", s, with_labels=False)
            jobs.append(
                {
                    "reference": str(directory / f"reference-{s.seed}.csv"),
                    "analysis": str(directory / f"analysis-{k}.csv"),
                    "out": str(outs[k]),
                    "chunk_size": window,
                }
            )
        (directory / "jobs.json").write_text(json.dumps(jobs))
        python = peer_python(NANNYML_VENV, NANNYML_REQUIREMENTS)
        subprocess.run([str(python), str(NANNYML_PEER), str(directory / "jobs.json")], check=True)
        estimates = [json.loads(out.read_text()) for out in outs]
    outcomes = []
    after = sizes.change_at // window
    for s, found in zip(streams, estimates, strict=True):
        accuracy, roc_auc = realized(s, window)
        alerted = [(k + 1) * window - 1 for k, a in enumerate(found["accuracy_alert"]) if a]
        outcomes.append(
            Outcome(
                seed=s.seed,
                scenario=s.scenario,
                method=NANNYML,
                realized_before=statistics.fmean(accuracy[:after]),
                realized_after=statistics.fmean(accuracy[after:]),
                accuracy_mae=mae(found["accuracy"], accuracy),
                accuracy_mae_after=mae(found["accuracy"][after:], accuracy[after:]),
                roc_auc_mae=mae(found["roc_auc"], roc_auc),
                roc_auc_bias=bias(found["roc_auc"], roc_auc),
                degraded=first_after(alerted, sizes.change_at),
                disagreed=None,
                label_alert=None,
                false_estimated=false_alarms(alerted, s.scenario, sizes.change_at),
                false_disagreements=None,
                false_label_alerts=None,
            )
        )
    return outcomes


def write_csv(path: Path, stream: Stream, with_labels: bool) -> None:
    """The columns NannyML reads: P(positive), the answer (and the label)."""
    lines = ["y_pred_proba,y_pred" + (",y_true" if with_labels else "")]
    for score, label in zip(stream.scores, stream.labels, strict=True):
        row = f"{score!r},{int(score >= 0.5)}"
        lines.append(row + (f",{int(label)}" if with_labels else ""))
    path.write_text("\n".join(lines) + "\n")


def _replay_outcome(args: tuple[Stream, Stream, int, Sizes]) -> Outcome:
    stream, holdout, delay, sizes = args
    return eddy_outcome(stream, delay, replay(stream, holdout, delay), sizes)


def measure(sizes: Sizes) -> list[Outcome]:
    """Every seed, scenario and delay for Eddy, then NannyML on the same streams."""
    holdouts: dict[int, Stream] = {}
    streams: list[Stream] = []
    for seed in sizes.seeds:
        model, holdouts[seed] = served_model(seed, sizes)
        streams += [stream(model, seed, scenario, sizes) for scenario in SCENARIOS]
    work = [(s, holdouts[s.seed], delay, sizes) for s in streams for delay in DELAYS]
    with ProcessPoolExecutor(REPLAY_WORKERS) as pool:
        outcomes = list(pool.map(_replay_outcome, work))
    return outcomes + nannyml_outcomes(streams, holdouts, sizes)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="one seed, shorter streams")
    args = parser.parse_args()
    started = time.monotonic()
    outcomes = measure(QUICK if args.quick else FULL)
    for o in sorted(outcomes, key=order):
        print(
            f"{o.scenario:16} {o.method:26} seed {o.seed}  accuracy MAE {o.accuracy_mae:.3f} "
            f"(after {o.accuracy_mae_after:.3f})  AUC MAE {o.roc_auc_mae:.3f}  "
            f"alerts after the change: estimated {o.degraded}, disagrees {o.disagreed}, "
            f"label-based {o.label_alert}  false alarms: estimated {o.false_estimated}, "
            f"disagrees {o.false_disagreements}, label-based {o.false_label_alerts}"
        )
    print(f"{time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
