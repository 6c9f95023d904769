"""Properties of the learner's alert streams: served versions, online error, features.

Served (eddy.streams.drift.served.ServedWatch through Learner.watch_served): each version has its
own concept watch and its own prediction-drift reference, so a new version that errs
more or answers differently is not drift of the old one; a version whose live error
rises raises a concept alert on stream "served" for that version, asking for a retrain,
with a change point and an id that a replay (in one batch or in chunks, into a fresh
learner) reproduces; prediction drift of a version's answers warns by default and asks
for a retrain when configured; at most MAX_VERSIONS versions are watched, the least
recently seen making room. Features: data drift leaves out ``drift_ignore`` features
but still watches the others. Online: the learner's own concept alerts are one-sided
and carry stream "online" and a change point. Randomness comes from seeded
``random.Random`` instances only.
"""

from __future__ import annotations

import pickle
import random
from datetime import UTC, datetime

import pytest

from eddy.streams.drift.data import DriftConfig
from eddy.streams.drift.served import MAX_VERSIONS, PREDICTION, ServedOutcome, ServedWatch
from eddy.streams.learning.learner import Item, Learner, LearnerConfig, Position
from eddy.streams.messages.contracts import AlertStream, DriftAlert, DriftKind
from tests.unit.adwin_cuts import two_sided_cuts

T0 = 1_700_000_000.0
SMALL_DRIFT = DriftConfig(window=200, min_samples=100, check_every=100)


def _served(
    version: str, n: int, error: float, answer: float, start: int, seed: int
) -> list[ServedOutcome]:
    """``n`` labelled answers of ``version``: wrong with probability ``error``; its
    P(positive) around ``answer``; served one a second from ``T0 + start``."""
    rng = random.Random(seed)
    out = []
    for t in range(n):
        label = rng.random() < 0.5
        prediction = label if rng.random() >= error else not label
        positive = min(1.0, max(0.0, rng.gauss(answer, 0.05)))
        out.append(ServedOutcome(version, prediction, positive, label, T0 + start + t))
    return out


def _of(alerts: list[DriftAlert], kind: DriftKind) -> list[DriftAlert]:
    """The alerts of ``kind`` from the served error and answers. The live estimate's
    own (eddy.streams.drift.estimate) are left out: ``_served``'s P(positive) says
    nothing of whether its answer is right, so the estimate rightly disagrees with the
    labels there; its tests are tests/unit/test_estimate.py's."""
    return [a for a in alerts if a.kind is kind and not a.detector.startswith("cbpe")]


def _at(seconds: int) -> datetime:
    return datetime.fromtimestamp(T0 + seconds, UTC)


def test_a_served_version_whose_live_error_rises_raises_a_served_concept_alert() -> None:
    outcomes = _served("m@1", 2_000, 0.1, 0.2, 0, 1) + _served("m@1", 1_000, 0.5, 0.2, 2_000, 2)
    learner = Learner(LearnerConfig(model="m"))
    alerts = learner.watch_served(outcomes)
    assert _of(alerts, DriftKind.PREDICTION) == []  # the answers did not move
    every, alert = _of(alerts, DriftKind.CONCEPT)
    # One on every answer served (m@1 answered them all), one on m@1's own.
    assert every.alert_id.startswith("m:served:concept:all:")
    assert every.model_version == "m@1"
    assert alert.stream is AlertStream.SERVED
    assert alert.model_version == "m@1"
    assert alert.action == "retrain"
    assert alert.detector == learner.config.detector
    assert alert.alert_id.startswith("m:served:concept:m@1:")
    count = int(alert.alert_id.rsplit(":", 1)[1])
    assert 2_000 < count <= 2_300  # labelled answers of m@1 when it fired: soon after
    assert alert.change_at is not None
    assert abs(alert.change_at - _at(2_000)).total_seconds() <= 100
    assert learner.examples == 0  # served outcomes are not the learner's own examples


def test_served_alert_ids_are_the_same_when_the_outcomes_are_replayed() -> None:
    outcomes = (
        _served("m@1", 2_000, 0.1, 0.2, 0, 1)
        + _served("m@1", 1_000, 0.5, 0.7, 2_000, 2)
        + _served("m@2", 1_500, 0.1, 0.3, 3_000, 3)
    )

    def replay(chunk: int) -> list[tuple[str, DriftKind, datetime | None, str]]:
        learner = Learner(LearnerConfig(model="m"))
        alerts = []
        for start in range(0, len(outcomes), chunk):
            alerts += learner.watch_served(outcomes[start : start + chunk])
        return [(a.alert_id, a.kind, a.change_at, a.action) for a in alerts]

    once = replay(len(outcomes))
    assert {kind for _, kind, _, _ in once} == {DriftKind.CONCEPT, DriftKind.PREDICTION}
    assert replay(len(outcomes)) == once
    assert replay(97) == once
    assert replay(1_000) == once
    assert len({alert_id for alert_id, _, _, _ in once}) == len(once)


def test_a_new_version_that_errs_more_and_answers_differently_is_not_drift_of_the_old() -> None:
    before = _served("m@1", 2_000, 0.1, 0.2, 0, 1)
    new_version = _served("m@2", 1_000, 0.5, 0.8, 2_000, 2)
    # Neither version's own answers changed; what users were served did get worse.
    (alert,) = Learner(LearnerConfig(model="m")).watch_served(before + new_version)
    assert alert.kind is DriftKind.CONCEPT
    assert alert.alert_id.startswith("m:served:concept:all:")
    assert alert.model_version == "m@2"
    # The same change within one version is both a concept and a prediction drift.
    same_version = [
        ServedOutcome("m@1", o.prediction, o.positive, o.label, o.at) for o in new_version
    ]
    alerts = Learner(LearnerConfig(model="m")).watch_served(before + same_version)
    assert {a.kind for a in alerts} == {DriftKind.CONCEPT, DriftKind.PREDICTION}
    assert {a.model_version for a in alerts} == {"m@1"}


def test_interleaved_versions_are_watched_separately() -> None:
    steady = _served("m@1", 3_000, 0.1, 0.2, 0, 1)
    rising = _served("m@2", 1_500, 0.1, 0.2, 0, 2) + _served("m@2", 1_500, 0.5, 0.2, 1_500, 3)
    mixed = [o for pair in zip(steady, rising, strict=True) for o in pair]
    watch = ServedWatch(
        "adwin", seed=42, cooldown=1_000, drift=DriftConfig(), task="classification"
    )
    found = [f for f in watch.update_many(mixed) if not f.every_version]
    assert [(f.version, f.kind) for f in found] == [("m@2", DriftKind.CONCEPT)]
    (finding,) = found
    assert mixed[finding.index].version == "m@2"
    # ``count`` is m@2's own count of labelled answers at the finding.
    assert finding.count == sum(o.version == "m@2" for o in mixed[: finding.index + 1])
    assert 1_500 < finding.count <= 1_800
    assert watch.versions["m@1"].concept.seen == watch.versions["m@2"].concept.seen == 3_000


@pytest.mark.parametrize(
    ("action", "expected"), [(None, "warn"), ("warn", "warn"), ("retrain", "retrain")]
)
def test_prediction_drift_of_a_versions_answers_warns_unless_configured_to_retrain(
    action: str | None, expected: str
) -> None:
    config = (
        LearnerConfig(model="m")
        if action is None
        else LearnerConfig(model="m", drift_action=action)
    )
    outcomes = _served("m@3", 1_500, 0.1, 0.2, 0, 1) + _served("m@3", 1_000, 0.1, 0.8, 1_500, 2)
    alerts = Learner(config).watch_served(outcomes)
    assert _of(alerts, DriftKind.CONCEPT) == []  # the error did not move
    (alert,) = _of(alerts, DriftKind.PREDICTION)
    assert alert.stream is AlertStream.SERVED
    assert alert.model_version == "m@3"
    assert alert.action == expected
    assert alert.feature == PREDICTION
    assert alert.evidence[0].statistic > alert.evidence[0].threshold
    assert alert.alert_id.startswith("m:served:prediction:m@3:")
    assert 1_500 < int(alert.alert_id.rsplit(":", 1)[1]) <= 2_000


def test_a_versions_answers_need_no_warm_up_even_when_the_learners_features_do() -> None:
    # A served version is a fixed model: its first answers are its reference at once,
    # while the learner's own data drift waits out a warm-up.
    config = LearnerConfig(model="m", drift=DriftConfig(warmup=3_000))
    outcomes = _served("m@1", 500, 0.1, 0.2, 0, 1) + _served("m@1", 500, 0.1, 0.8, 500, 2)
    alerts = Learner(config).watch_served(outcomes)
    assert [(a.kind, a.model_version) for a in alerts] == [(DriftKind.PREDICTION, "m@1")]


def test_a_bogus_drift_action_is_refused() -> None:
    with pytest.raises(ValueError, match="drift_action"):
        LearnerConfig(model="m", drift_action="bogus")


def test_at_most_max_versions_are_watched_and_the_least_recently_seen_makes_room() -> None:
    watch = ServedWatch("adwin", seed=42, cooldown=100, drift=DriftConfig(), task="classification")

    def serve(version: str) -> None:
        watch.update_many([ServedOutcome(version, True, 0.9, True, T0 + watch.seen)])

    for v in range(MAX_VERSIONS):
        serve(f"m@{v}")
    assert len(watch.versions) == MAX_VERSIONS
    serve("m@0")  # seen again: now m@1 is the one seen longest ago
    serve(f"m@{MAX_VERSIONS}")
    assert len(watch.versions) == MAX_VERSIONS
    assert "m@1" not in watch.versions
    assert {"m@0", f"m@{MAX_VERSIONS}"} <= set(watch.versions)
    for v in range(MAX_VERSIONS + 1, MAX_VERSIONS + 5):
        serve(f"m@{v}")
        assert len(watch.versions) == MAX_VERSIONS
    assert watch.metrics_of("m@1") == {}
    assert watch.metrics_of(f"m@{MAX_VERSIONS + 4}") != {}


def test_a_pickled_served_watch_continues_exactly_like_the_original() -> None:
    outcomes = _served("m@1", 2_000, 0.1, 0.2, 0, 1) + _served("m@1", 1_000, 0.5, 0.7, 2_000, 2)
    original = Learner(LearnerConfig(model="m"))
    assert original.watch_served(outcomes[:1_900]) == []
    copy = pickle.loads(pickle.dumps(original))
    ids = [a.alert_id for a in original.watch_served(outcomes[1_900:])]
    assert ids
    assert [a.alert_id for a in copy.watch_served(outcomes[1_900:])] == ids


def _rows(
    n: int,
    seed: int,
    *,
    flip_at: int | None = None,
    noisy_until: int = 0,
    shift_at: int | None = None,
) -> list[Item]:
    """A linearly separable stream with a ``count`` feature growing with the index;
    labels flipped from ``flip_at``, 40 % noisy before ``noisy_until``, feature ``b``
    shifted by 3 from ``shift_at``."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        b = rng.gauss(0, 1) + (3.0 if shift_at is not None and i >= shift_at else 0.0)
        x = {"a": rng.uniform(-1, 1), "b": b, "count": float(i)}
        y = x["a"] > 0
        if flip_at is not None and i >= flip_at:
            y = not y
        if i < noisy_until and rng.random() < 0.4:
            y = not y
        rows.append((x, y, Position("t", 0, i, T0 + i)))
    return rows


def _alerts(
    learner: Learner, rows: list[tuple[dict[str, float], bool, Position]]
) -> list[tuple[int, DriftAlert]]:
    return [(i, a) for i, step in enumerate(learner.learn_many(rows)) for a in step.alerts]


def test_data_drift_leaves_out_drift_ignore_features_but_watches_the_others() -> None:
    rows = _rows(2_000, 1)
    watched = _alerts(Learner(LearnerConfig(model="m", drift=SMALL_DRIFT)), rows)
    assert any(a.kind is DriftKind.DATA and a.feature == "count" for _, a in watched)
    ignoring = LearnerConfig(model="m", drift=SMALL_DRIFT, drift_ignore=("count",))
    assert [a for _, a in _alerts(Learner(ignoring), rows) if a.kind is DriftKind.DATA] == []
    # Ignoring one feature does not blind data drift to the others.
    shifted = _alerts(Learner(ignoring), _rows(2_000, 1, shift_at=1_000))
    data = [(i, a) for i, a in shifted if a.kind is DriftKind.DATA]
    assert data
    assert all(i >= 1_000 for i, _ in data)
    assert {e.feature for _, a in data for e in a.evidence} == {"b"}
    assert all(a.stream is AlertStream.FEATURES and a.action == "warn" for _, a in data)


def test_online_concept_alerts_carry_stream_online_and_a_change_point() -> None:
    config = LearnerConfig(model="m", drift_ignore=("count",))
    for seed in range(2):
        alerts = _alerts(Learner(config), _rows(4_000, seed, flip_at=2_000))
        concept = [(i, a) for i, a in alerts if a.kind is DriftKind.CONCEPT]
        assert concept, "the label flip at 2000 was not detected"
        i, alert = concept[0]
        assert 2_000 <= i < 2_300
        assert alert.stream is AlertStream.ONLINE
        assert alert.model_version == "m@online"
        assert alert.action == "retrain"
        assert alert.alert_id == f"m:concept:{i + 1}"
        assert alert.change_at is not None
        assert abs(alert.change_at - _at(2_000)).total_seconds() <= 100


def test_a_learner_whose_error_falls_raises_no_concept_alert() -> None:
    config = LearnerConfig(model="m", drift_ignore=("count",))
    for seed in range(2):
        # Noisy labels first, clean after: the learner's error falls from ~0.4 to ~0.03.
        steps = Learner(config).learn_many(_rows(3_000, seed, noisy_until=1_500))
        assert [a for s in steps for a in s.alerts if a.kind is DriftKind.CONCEPT] == []
        # The premise: a two-sided detector does see a change in this error stream.
        assert two_sided_cuts([s.error for s in steps]) > 0
        assert sum(s.error for s in steps[:1_500]) > 10 * sum(s.error for s in steps[1_500:])


def _noisy_from(n: int, seed: int, start: int, noise: float) -> list[Item]:
    """A linearly separable stream whose labels are wrong with probability ``noise``
    from ``start`` on (the world got noisier, for the online model)."""
    rng = random.Random(seed)
    rows: list[Item] = []
    for x, y, where in _rows(n, seed):
        wrong = where.offset >= start and rng.random() < noise
        rows.append((x, (not y) if wrong else y, where))
    return rows


def _online_concept(learner: Learner, rows: list[Item], served: list[ServedOutcome]) -> list[int]:
    """Where the online stream raised concept alerts, fed in batches of 100 with the
    served answers of the same seconds first (as the learner worker feeds them)."""
    found: list[int] = []
    for start in range(0, len(rows), 100):
        learner.watch_served([o for o in served if T0 + start <= o.at < T0 + start + 100])
        for i, step in enumerate(learner.learn_many(rows[start : start + 100])):
            found += [start + i for a in step.alerts if a.stream is AlertStream.ONLINE]
    return found


def test_an_online_rise_the_served_answers_clearly_do_not_share_raises_no_alert() -> None:
    config = LearnerConfig(model="m", drift_ignore=("count",))
    rows = _noisy_from(4_000, 1, start=2_000, noise=0.3)
    steady = _served("m@1", 4_000, 0.05, 0.7, start=0, seed=1)
    worse = steady[:2_000] + _served("m@1", 2_000, 0.3, 0.7, start=2_000, seed=2)

    # The premise: alone, the online learner raises the rise at 2,000.
    alone = _online_concept(Learner(config), rows, [])
    assert alone
    assert 2_000 <= alone[0] < 2_400
    quiet = Learner(config)
    assert _online_concept(quiet, rows, steady) == []
    assert quiet.unconfirmed >= 1
    # The same online rise stands when the served answers got worse over it too.
    assert _online_concept(Learner(config), rows, worse)[:1] == alone[:1]


def test_served_answers_veto_only_a_rise_they_clearly_did_not_share() -> None:
    watch = ServedWatch("adwin", seed=42, cooldown=100, drift=DriftConfig(), task="classification")
    watch.update_many(_served("m@1", 200, 0.05, 0.7, start=0, seed=1))
    watch.update_many(_served("m@2", 200, 0.4, 0.7, start=200, seed=2))
    assert watch.confirms(T0 + 100, T0 + 199, rise=0.3) is False  # m@1 stayed right
    assert watch.confirms(T0 + 200, T0 + 299, rise=0.3) is True  # the new version erred
    # A rise far larger than the served one is vetoed; one it shares is not.
    assert watch.confirms(T0 + 200, T0 + 299, rise=3.0) is False
    assert watch.confirms(T0 + 380, T0 + 399, rise=0.3) is None  # 20 answers: cannot say
    assert watch.confirms(T0 + 100, T0 + 199, rise=None) is None
    assert watch.confirms(None, T0 + 199, rise=0.3) is None
    # Answers served after the detection do not count: the verdict is the span's.
    assert watch.confirms(T0 + 150, T0 + 199, rise=0.3) is False


def test_a_version_promoted_as_the_world_changed_is_caught_on_every_answer_served() -> None:
    # m@1 right until 2,000; m@2 takes over exactly then and is wrong from its start:
    # its own error stream never rises, what users were served does.
    outcomes = _served("m@1", 2_000, 0.1, 0.2, 0, 1) + _served("m@2", 600, 0.6, 0.2, 2_000, 2)
    watch = ServedWatch("adwin", seed=42, cooldown=100, drift=DriftConfig(), task="classification")
    found = watch.update_many(outcomes)
    assert [f for f in found if not f.every_version] == []
    (finding,) = [f for f in found if f.every_version]
    assert finding.version == "m@2"
    assert 2_000 <= finding.index < 2_200
    assert finding.concept is not None
    assert finding.concept.change_at is not None
    assert abs(finding.concept.change_at - (T0 + 2_000)) <= 100


def test_a_served_watch_from_before_the_every_version_watch_restores_with_one() -> None:
    watch = ServedWatch("adwin", seed=42, cooldown=100, drift=DriftConfig(), task="classification")
    watch.update_many(_served("m@1", 100, 0.1, 0.2, 0, 1))
    state = dict(watch.__dict__)
    del state["every_version"]
    old = ServedWatch.__new__(ServedWatch)
    old.__setstate__(state)
    assert old.every_version.seen == 0
    assert old.update_many(_served("m@1", 100, 0.1, 0.2, 100, 2)) == []
    assert old.every_version.seen == 100


def _confident(n: int, start: int, seed: int, negatives: tuple[float, ...]) -> list[ServedOutcome]:
    """A near-certain classifier's labelled answers: P(positive) 0.99999 for the 10 % of
    positives, one of ``negatives`` (all far below 0.05) for the others."""
    rng = random.Random(seed)
    out = []
    for t in range(n):
        label = rng.random() < 0.1
        positive = 0.99999 if label else rng.choice(negatives)
        out.append(ServedOutcome("m@1", label, positive, label, T0 + start + t))
    return out


def test_probabilities_that_move_below_the_answer_resolution_are_no_prediction_drift() -> None:
    # The negatives' leaves change their mix (two new tiny values): a two-sample test on
    # the raw probabilities sees a shift (KS about 0.2), no answer a user sees changes.
    outcomes = _confident(1_500, 0, 1, (5e-6, 8e-6, 1e-5)) + _confident(
        1_500, 1_500, 2, (5e-6, 8e-6, 1e-5, 2e-5, 3e-5)
    )
    assert _of(Learner(LearnerConfig(model="m")).watch_served(outcomes), DriftKind.PREDICTION) == []


def test_a_confident_classifier_answering_positive_more_often_is_prediction_drift() -> None:
    before = _confident(1_500, 0, 1, (5e-6, 8e-6, 1e-5))
    after = [
        ServedOutcome(o.version, True, 0.99999, True, o.at) if i % 3 == 0 else o
        for i, o in enumerate(_confident(1_500, 1_500, 2, (5e-6, 8e-6, 1e-5)))
    ]
    alerts = _of(
        Learner(LearnerConfig(model="m")).watch_served(before + after), DriftKind.PREDICTION
    )
    assert [a.model_version for a in alerts] == ["m@1"]


@pytest.mark.parametrize("from_before_the_resolution", [True, False])
def test_a_checkpoint_holding_raw_probabilities_restarts_its_answer_windows(
    from_before_the_resolution: bool,
) -> None:
    # A checkpoint sealed before answers were rounded holds raw P(positive) values in its
    # answer windows; the rounded answers after the upgrade must not be taken for drift.
    watch = ServedWatch("adwin", seed=42, cooldown=100, drift=DriftConfig(), task="classification")
    raw = _confident(1_000, 0, 1, (5e-6, 8e-6, 1e-5))
    watch.update_many(raw[:1])
    watch.versions["m@1"].answers.update_many([{PREDICTION: o.positive} for o in raw])
    if from_before_the_resolution:
        del watch.__dict__["answer_resolution"]
    restored: ServedWatch = pickle.loads(pickle.dumps(watch))
    found = restored.update_many(_confident(1_000, 1_000, 2, (5e-6, 8e-6, 1e-5)))
    prediction_drift = [f for f in found if f.kind is DriftKind.PREDICTION]
    # The same raw windows kept (a checkpoint claiming rounded windows) do look like drift:
    # what the migration prevents.
    assert bool(prediction_drift) is not from_before_the_resolution
