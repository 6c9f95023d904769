"""Properties of eddy.streams.drift.estimate (CBPE), checked from the outside.

The isotonic map is the weighted least-squares monotone fit; a calibration takes the
model at its word until labels say otherwise, then learns what they say, round-trips
through its table and stays bounded. On calibrated answers the estimates of accuracy,
log loss and ROC AUC are unbiased and their standard errors are honest (neither too
narrow nor inflated). The watch is silent on a stationary stream, fires once per
covariate shift with hysteresis, tolerates drops under ``min_drop``, judges labels only
once the calibration holds ``min_calibrated`` of them and then calls out labels that
disagree (concept shift) once, evicts the least recently used version and
continues identically after a pickle round trip. Randomness comes from seeded
``numpy.random.Generator`` instances only.
"""

from __future__ import annotations

import math
import pickle
import random
from collections.abc import Sequence
from itertools import pairwise

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sklearn.isotonic import IsotonicRegression
from sklearn.metrics import log_loss, roc_auc_score

from eddy.streams.drift.estimate import (
    BINS,
    ESTIMATE_DISAGREES,
    ESTIMATED_DEGRADATION,
    PRIOR_WEIGHT,
    Calibration,
    EstimateConfig,
    EstimateFinding,
    EstimateWatch,
    bin_of,
    estimate,
    expected_auc,
    isotonic,
)

PROPERTY = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
CENTRES = [(b + 0.5) / BINS for b in range(BINS)]
CONFIDENT = (0.7, 0.7)  # Beta parameters of a model sure of most answers (accuracy ~0.78)
HESITANT = (4.0, 4.0)  # inputs where the same model hesitates (accuracy ~0.6)
WATCHED = EstimateConfig(window=500, check_every=50)
HOLDOUT = 5_000


# --- helpers ---------------------------------------------------------------------------


def _answers(
    rng: np.random.Generator, size: int, shape: tuple[float, float] = CONFIDENT
) -> tuple[list[float], list[bool]]:
    """A calibrated model's scores and the labels they stand for: P(positive) = score."""
    scores = rng.beta(*shape, size)
    return scores.tolist(), (rng.random(size) < scores).tolist()


def _holdout(rng: np.random.Generator) -> Calibration:
    """The version's holdout at training time, as the watch is seeded with it."""
    scores, labels = _answers(rng, HOLDOUT)
    return Calibration.from_pairs(zip(scores, labels, strict=True))


def _run(
    watch: EstimateWatch,
    version: str,
    scores: Sequence[float],
    labels: Sequence[bool],
    label_every: int = 4,
    chunk: int = 100,
) -> list[EstimateFinding]:
    """Serve ``scores`` in chunks; after each chunk, label every ``label_every``-th
    answer of it. Every finding, in order."""
    findings: list[EstimateFinding] = []
    for start in range(0, len(scores), chunk):
        findings += watch.served(version, scores[start : start + chunk])
        for i in range(start, min(start + chunk, len(scores)), label_every):
            finding = watch.labelled(version, scores[i], labels[i])
            if finding is not None:
                findings.append(finding)
    return findings


def _kinds(findings: Sequence[EstimateFinding]) -> list[tuple[str, int]]:
    return [(f.kind, f.answers_seen) for f in findings]


# --- isotonic --------------------------------------------------------------------------

SEQUENCES = st.integers(1, 40).flatmap(
    lambda n: st.tuples(
        st.lists(st.floats(-100, 100), min_size=n, max_size=n),
        st.lists(st.floats(0.01, 1_000), min_size=n, max_size=n),
    )
)


@PROPERTY
@given(SEQUENCES)
def test_isotonic_is_the_weighted_least_squares_monotone_fit(
    sequence: tuple[list[float], list[float]],
) -> None:
    values, weights = sequence
    fitted = isotonic(values, weights)
    assert len(fitted) == len(values)
    assert all(a <= b for a, b in pairwise(fitted))
    assert math.fsum(f * w for f, w in zip(fitted, weights, strict=True)) == pytest.approx(
        math.fsum(v * w for v, w in zip(values, weights, strict=True)), rel=1e-9, abs=1e-6
    )
    reference = IsotonicRegression().fit_transform(
        np.arange(len(values)), np.array(values), sample_weight=np.array(weights)
    )
    assert fitted == pytest.approx(reference.tolist(), rel=1e-9, abs=1e-9)


@PROPERTY
@given(SEQUENCES)
def test_isotonic_leaves_a_non_decreasing_sequence_as_it_is(
    sequence: tuple[list[float], list[float]],
) -> None:
    values, weights = sequence
    ordered = sorted(values)
    assert isotonic(ordered, weights) == ordered


# --- calibration -----------------------------------------------------------------------


def test_an_unlabelled_calibration_takes_the_model_at_its_word() -> None:
    calibration = Calibration()
    assert calibration.labelled == 0
    for score in np.linspace(0.0, 1.0, 1001).tolist():
        assert abs(calibration.calibrated(score) - score) <= 0.5 / BINS + 1e-12
    assert [calibration.calibrated(c) for c in CENTRES] == pytest.approx(CENTRES, abs=1e-12)


def test_calibration_learns_a_miscalibrated_model_and_corrects_its_estimate() -> None:
    """Truth P(positive) = score**2: the model is overconfident on its positives."""
    rng = np.random.default_rng(5)
    held = rng.random(200_000)
    calibration = Calibration.from_pairs(
        zip(held.tolist(), (rng.random(held.size) < held**2).tolist(), strict=True)
    )
    assert sum(calibration.counts) == held.size
    truth = [c * c + (0.5 / BINS) ** 2 / 3 for c in CENTRES]  # mean of s**2 over each bin
    errors = [abs(calibration.calibrated(c) - t) for c, t in zip(CENTRES, truth, strict=True)]
    assert max(errors) < 0.03
    assert sum(errors) / BINS < 0.008
    # A fresh window of mostly high scores: at its word the model promises ~0.75
    # accuracy, the truth is ~0.69, and the learned calibration says so.
    scores = rng.beta(2.0, 1.0, 2_000)
    labels = rng.random(scores.size) < scores**2
    realized = float(np.mean((scores >= 0.5) == labels))
    learned = estimate(scores.tolist(), calibration)
    at_its_word = estimate(scores.tolist(), Calibration())
    assert abs(realized - learned.accuracy) <= 3 * learned.accuracy_se
    assert abs(log_loss(labels, scores) - learned.log_loss) <= 3 * learned.log_loss_se
    assert learned.roc_auc is not None
    assert learned.roc_auc_se is not None
    assert abs(roc_auc_score(labels, scores) - learned.roc_auc) <= 3 * learned.roc_auc_se
    assert at_its_word.accuracy - realized > 4 * at_its_word.accuracy_se


def test_a_calibration_table_round_trips_and_malformed_tables_are_refused() -> None:
    rng = np.random.default_rng(7)
    scores, labels = _answers(rng, 3_000)
    original = Calibration.from_pairs(zip(scores, labels, strict=True))
    table = original.as_table()
    restored = Calibration.from_table(table)
    assert restored.as_table() == table
    assert [restored.calibrated(c) for c in CENTRES] == [original.calibrated(c) for c in CENTRES]
    table["counts"][0] += 100.0  # the written table is a copy, not the live one
    assert original.as_table() != table
    good = original.as_table()
    for bad in (
        {"counts": good["counts"][:-1], "positives": good["positives"][:-1]},
        {"counts": good["counts"], "positives": good["positives"] + [0.0]},
        {"counts": good["counts"], "positives": [c + 1.0 for c in good["counts"]]},
        {"counts": [-1.0] * BINS, "positives": [-1.0] * BINS},
        {"counts": good["counts"], "positives": [math.nan] * BINS},
    ):
        with pytest.raises(ValueError, match="calibration"):
            Calibration.from_table(bad)


def test_labelled_is_the_number_of_labels_the_table_holds() -> None:
    fresh = Calibration()
    fresh.add(0.3, True)
    restored = Calibration.from_table(fresh.as_table())
    restored.add(0.7, False)
    merged = Calibration()
    merged.merge(restored)
    merged.add(0.5, True)
    assert [sum(t.counts) for t in (fresh, restored, merged)] == [1, 2, 3]
    assert [t.labelled for t in (fresh, restored, merged)] == [1, 2, 3]


def test_calibration_memory_keeps_the_table_bounded_and_following_the_labels() -> None:
    calibration = Calibration()
    for _ in range(2_000):  # answers scored 0.3 used to be positive a fifth of the time
        calibration.add(0.3, False, memory=500)
        calibration.add(0.3, False, memory=500)
        calibration.add(0.3, False, memory=500)
        calibration.add(0.3, False, memory=500)
        calibration.add(0.3, True, memory=500)
        assert calibration.labelled <= 500
    assert calibration.calibrated(0.3) == pytest.approx(0.2, abs=0.02)
    for _ in range(2_000):  # ... and now always are: the old labels fade
        calibration.add(0.3, True, memory=500)
        assert calibration.labelled <= 500
    assert calibration.calibrated(0.3) > 0.9  # pooled with the prior of the bins above
    assert calibration.labelled > 250  # halving forgets slowly, it does not empty the table


# --- estimate --------------------------------------------------------------------------


def test_estimate_bands_cover_the_realized_metrics_of_calibrated_answers() -> None:
    """200 windows of 1,000 answers from a calibrated model. The realized metric lies
    within 3 standard errors of its estimate in nearly all windows, within 1 in about
    two thirds of them (the bands are not inflated), and the estimates are unbiased."""
    z: dict[str, list[float]] = {"accuracy": [], "log_loss": [], "roc_auc": []}
    error: dict[str, list[float]] = {"accuracy": [], "log_loss": [], "roc_auc": []}
    for seed in range(200):
        scores, labels = _answers(np.random.default_rng(seed), 1_000)
        guess = estimate(scores, Calibration())
        assert guess.answers == 1_000
        assert guess.roc_auc is not None
        assert guess.roc_auc_se is not None
        realized = {
            "accuracy": float(np.mean((np.array(scores) >= 0.5) == np.array(labels))),
            "log_loss": log_loss(labels, scores, labels=[False, True]),
            "roc_auc": roc_auc_score(labels, scores),
        }
        for name, value, se in (
            ("accuracy", guess.accuracy, guess.accuracy_se),
            ("log_loss", guess.log_loss, guess.log_loss_se),
            ("roc_auc", guess.roc_auc, guess.roc_auc_se),
        ):
            assert se > 0
            z[name].append((realized[name] - value) / se)
            error[name].append(realized[name] - value)
    for name in z:
        deviations = np.abs(np.array(z[name]))
        assert np.mean(deviations > 3) <= 0.02, name
        assert abs(float(np.mean(error[name]))) < 0.005, name
    # Accuracy and log loss bands are the exact spread; Hanley-McNeil's for the AUC
    # also counts the scores' sampling, so it is wider: not checked from below.
    for name in ("accuracy", "log_loss"):
        assert 0.55 <= np.mean(np.abs(np.array(z[name])) < 1) <= 0.80, name


TIED_SCORES = st.sampled_from([0.05, 0.2, 0.5, 0.51, 0.8, 0.99]) | st.floats(0, 1)


@PROPERTY
@given(
    st.lists(
        st.tuples(TIED_SCORES, st.booleans()),
        min_size=2,
        max_size=60,
    ).filter(lambda pairs: len({label for _, label in pairs}) == 2)
)
def test_expected_auc_is_the_roc_auc_when_the_labels_are_certain(
    pairs: list[tuple[float, bool]],
) -> None:
    scores = [score for score, _ in pairs]
    labels = [label for _, label in pairs]
    auc, se = expected_auc(scores, [float(label) for label in labels])
    assert auc == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert se is not None
    assert se >= 0


def test_auc_is_left_out_when_a_class_is_expected_absent_and_no_answers_are_refused() -> None:
    assert expected_auc([0.1, 0.2, 0.3], [0.3, 0.3, 0.3]) == (None, None)  # 0.9 positives
    assert expected_auc([0.7, 0.8, 0.9], [0.7, 0.7, 0.7]) == (None, None)  # 0.9 negatives
    sure = estimate([0.01] * 40, Calibration())  # 0.4 positives expected
    assert sure.roc_auc is None
    assert sure.roc_auc_se is None
    assert sure.accuracy == pytest.approx(0.99, abs=1 / BINS)  # the bin's centre
    figures = sure.as_dict(3.0)
    assert "roc_auc" not in figures
    assert figures["answers"] == 40
    assert figures["accuracy_lower"] == pytest.approx(sure.accuracy - 3 * sure.accuracy_se)
    assert figures["accuracy_upper"] == pytest.approx(sure.accuracy + 3 * sure.accuracy_se)
    with pytest.raises(ValueError, match="at least one answer"):
        estimate([], Calibration())


# --- the watch -------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_stationary_calibrated_stream_raises_nothing(seed: int) -> None:
    rng = np.random.default_rng(seed)
    watch = EstimateWatch(WATCHED)
    watch.seed("m@1", _holdout(rng))
    assert watch.reference("m@1") is None
    scores, labels = _answers(rng, 6_000)
    assert _run(watch, "m@1", scores, labels) == []
    reference, latest = watch.reference("m@1"), watch.latest("m@1")
    assert reference is not None
    assert latest is not None
    assert latest.answers == WATCHED.window
    assert abs(latest.accuracy - reference) < WATCHED.min_drop / 2


def test_the_reference_is_the_estimate_of_the_first_full_window() -> None:
    rng = np.random.default_rng(3)
    calibration = _holdout(rng)
    watch = EstimateWatch(WATCHED)
    watch.seed("m@1", calibration)
    scores, _ = _answers(rng, WATCHED.window)
    assert watch.served("m@1", scores[:-1]) == []
    assert watch.reference("m@1") is None
    assert watch.latest("m@1") is None
    assert watch.served("m@1", scores[-1:]) == []
    first = estimate(scores, calibration)
    assert watch.latest("m@1") == first
    assert watch.reference("m@1") == pytest.approx(first.accuracy, abs=1e-12)
    later, _ = _answers(rng, 2 * WATCHED.window)
    assert watch.served("m@1", later) == []
    assert watch.latest("m@1") == estimate(later[-WATCHED.window :], calibration)
    # the first window's, for good (with an unchanged calibration, the same estimate)
    assert watch.reference("m@1") == pytest.approx(first.accuracy, abs=1e-12)


def test_a_covariate_shift_fires_once_and_again_only_after_a_recovery() -> None:
    """Inputs move to where the model hesitates, back, and there again; the relation
    between score and label never changes, so the labels agree with the estimate."""
    rng = np.random.default_rng(11)
    watch = EstimateWatch(WATCHED)
    watch.seed("m@1", _holdout(rng))
    stretches = [_answers(rng, 2_000, shape) for shape in (CONFIDENT, HESITANT) * 2]
    scores = [s for stretch, _ in stretches for s in stretch]
    labels = [y for _, stretch in stretches for y in stretch]
    findings = _run(watch, "m@1", scores, labels)
    assert [f.kind for f in findings] == [ESTIMATED_DEGRADATION] * 2
    first, second = findings
    assert 2_000 < first.answers_seen <= 2_000 + WATCHED.window
    assert 6_000 < second.answers_seen <= 6_000 + WATCHED.window
    for finding in findings:
        assert finding.version == "m@1"
        # The reference is the first window re-estimated with the calibration of the
        # moment: labels landing since move it a little, never by a drop.
        assert finding.reference == pytest.approx(watch.reference("m@1"), abs=WATCHED.min_drop / 5)
        assert finding.estimate.accuracy < finding.threshold
        assert finding.threshold <= finding.reference - WATCHED.min_drop
    latest = watch.latest("m@1")
    assert latest is not None
    assert latest.accuracy < first.threshold  # it still reads the hesitant inputs


def test_degradation_rearms_only_within_half_the_drop_and_ignores_smaller_drops() -> None:
    """Deterministic windows of one confidence each (no labels: the model at its word,
    so the estimated accuracy is the bin centre): reference 0.95, min_drop 0.05."""
    config = EstimateConfig(window=200, check_every=100)
    watch = EstimateWatch(config)

    def serve(confidence: float) -> list[tuple[str, int]]:
        return _kinds(watch.served("m@1", [confidence, 1 - confidence] * 200))

    assert serve(0.95) == []
    assert watch.reference("m@1") == pytest.approx(0.95)
    assert serve(0.915) == []  # 0.91: a drop of 0.04 is within min_drop
    assert serve(0.6) == [(ESTIMATED_DEGRADATION, 900)]  # half the window moved
    assert serve(0.6) == []  # still degraded: once
    assert serve(0.915) == []  # 0.04 below: not within half the drop, not rearmed
    assert serve(0.6) == []
    assert serve(0.935) == []  # 0.93: 0.02 below, within half the drop: rearmed
    assert serve(0.6) == [(ESTIMATED_DEGRADATION, 2_900)]


def test_labels_disagree_once_when_the_concept_flips() -> None:
    """The scores keep their distribution but the labels turn against them: no
    estimate from scores can see it, the comparison with the labels does, at once."""
    config = EstimateConfig()
    rng = np.random.default_rng(13)
    holdout = _holdout(rng)
    watch = EstimateWatch(config)
    watch.seed("m@1", holdout)
    # What the estimate expected of each answer before its own label was known.
    shadow = Calibration.from_table(holdout.as_table())
    expected: list[float] = []
    right: list[bool] = []
    fired: list[tuple[int, EstimateFinding]] = []
    scores, labels = _answers(rng, 3_500)
    for i, (score, label) in enumerate(zip(scores, labels, strict=True)):
        positive = not label if i >= 2_000 else label
        p = shadow.calibrated(score)
        expected.append(p if score >= 0.5 else 1 - p)
        right.append((score >= 0.5) == positive)
        shadow.add(score, positive, config.calibration_memory)
        finding = watch.labelled("m@1", score, positive)
        if finding is not None:
            fired.append((i, finding))
    assert len(fired) == 1
    at, finding = fired[0]
    assert 2_000 <= at < 2_000 + 200
    assert finding.kind == ESTIMATE_DISAGREES
    assert finding.version == "m@1"
    assert finding.answers_seen == at + 1  # labels judged (the holdout calibrated it)
    n = config.agreement_window
    last = slice(at + 1 - n, at + 1)
    se = math.sqrt(math.fsum(r * (1 - r) for r in expected[last])) / n
    assert finding.estimate.answers == n
    assert finding.estimate.accuracy == pytest.approx(math.fsum(expected[last]) / n)
    assert finding.reference == pytest.approx(sum(right[last]) / n)
    assert finding.threshold == pytest.approx(config.band_z * se + config.agreement_tolerance)
    assert finding.estimate.accuracy - finding.reference > finding.threshold  # realized lower


def test_labels_are_not_judged_until_the_calibration_holds_min_calibrated() -> None:
    """An unseeded version whose model is wrong at 0.95: its first labels only calibrate
    (miscalibration is no concept drift); the labels judged after them are counted."""
    config = EstimateConfig(agreement_window=100, agreement_min=100, min_calibrated=300)
    watch = EstimateWatch(config)
    assert [watch.labelled("m@1", 0.95, False) for _ in range(300)] == [None] * 300
    findings = [watch.labelled("m@1", 0.95, True) for _ in range(100)]
    assert findings[:-1] == [None] * 99
    finding = findings[-1]
    assert finding is not None
    assert finding.kind == ESTIMATE_DISAGREES
    assert finding.answers_seen == 100
    assert finding.reference == 1.0  # every judged answer was right ...
    assert finding.estimate.accuracy < 0.5  # ... where the 300 calibrating labels said not


def test_disagreement_rearms_only_when_the_labels_agree_within_half_the_band() -> None:
    """A calibration held fixed (a large seeded table, unbounded memory) saying answers
    scored 0.95 are right 95 % of the time; labels in blocks of 100 right ``k`` times."""
    config = EstimateConfig(agreement_window=100, agreement_min=100, calibration_memory=1e12)
    watch = EstimateWatch(config)
    table = Calibration()
    table.counts[bin_of(0.95)], table.positives[bin_of(0.95)] = 1e9, 0.95e9
    watch.seed("m@1", table)

    def label(right: int) -> list[str]:
        wrong = 100 - right  # spread evenly: any 100 labels across two blocks lie between
        block = [(i * wrong) // 100 == ((i + 1) * wrong) // 100 for i in range(100)]
        findings = [watch.labelled("m@1", 0.95, positive) for positive in block]
        return [f.kind for f in findings if f is not None]

    # 100 answers at 0.95: se 0.022, band 3 * 0.022 + 0.02 = 0.085, rearm within 0.043.
    assert label(95) == []
    assert label(95) == []
    assert label(88) == []  # 0.07 off: within the band only thanks to the tolerance
    assert label(80) == [ESTIMATE_DISAGREES]
    assert label(80) == []
    assert label(88) == []  # 0.07 off: not within half the band, not rearmed
    assert label(80) == []
    assert label(95) == []  # rearmed
    assert label(80) == [ESTIMATE_DISAGREES]


def test_seeding_a_version_adds_its_holdout_to_the_labels_it_already_has() -> None:
    rng = np.random.default_rng(19)
    holdout = _holdout(rng)
    scores, labels = _answers(rng, 300)
    watch = EstimateWatch(EstimateConfig())
    for score, label in zip(scores, labels, strict=True):
        watch.labelled("m@1", score, label)
    labelled = watch.versions["m@1"].calibration.as_table()
    watch.seed("m@1", holdout)
    calibration = watch.versions["m@1"].calibration
    for name, kept in calibration.as_table().items():
        added = [a + b for a, b in zip(labelled[name], holdout.as_table()[name], strict=True)]
        assert kept == pytest.approx(added)
    assert calibration.labelled == pytest.approx(300 + HOLDOUT)


def test_the_least_recently_used_version_makes_room() -> None:
    watch = EstimateWatch(EstimateConfig(window=10, check_every=10), max_versions=2)
    watch.served("m@1", [0.9] * 10)
    watch.served("m@2", [0.9] * 10)
    watch.labelled("m@1", 0.9, True)  # m@1 is used again: m@2 is now the oldest
    watch.served("m@3", [0.9] * 10)
    assert [watch.knows(v) for v in ("m@1", "m@2", "m@3")] == [True, False, True]
    assert watch.latest("m@2") is None
    assert watch.reference("m@2") is None
    watch.seed("m@2", Calibration())  # m@2 comes back fresh; m@1 is the oldest now
    assert [watch.knows(v) for v in ("m@1", "m@2", "m@3")] == [False, True, True]
    assert watch.latest("m@2") is None


def test_a_pickled_watch_continues_exactly_as_the_original() -> None:
    """Snapshot in the middle of a degradation (disarmed), with labels in the agreement
    window; the continuation brings a recovery, a second shift and a concept flip."""
    rng = np.random.default_rng(17)
    original = EstimateWatch(WATCHED)
    original.seed("m@1", _holdout(rng))
    before = [_answers(rng, 2_000, shape) for shape in (CONFIDENT, HESITANT)]
    after = [_answers(rng, 2_000, shape) for shape in (CONFIDENT, HESITANT, CONFIDENT)]
    after[-1] = (after[-1][0], [not label for label in after[-1][1]])
    extra = _answers(rng, 600)
    history = _run(original, "m@1", before[0][0] + before[1][0], before[0][1] + before[1][1])
    assert [f.kind for f in history] == [ESTIMATED_DEGRADATION]
    assert _run(original, "m@2", *_answers(rng, 600)) == []
    restored = pickle.loads(pickle.dumps(original))
    continued: list[EstimateFinding] = []
    for version, (scores, labels) in [("m@1", stretch) for stretch in after] + [("m@2", extra)]:
        expected = _run(original, version, scores, labels)
        assert repr(_run(restored, version, scores, labels)) == repr(expected)
        assert restored.latest(version) == original.latest(version)
        assert restored.reference(version) == original.reference(version)
        continued += expected
    assert {f.kind for f in continued} == {ESTIMATED_DEGRADATION, ESTIMATE_DISAGREES}
    assert sorted(restored.versions) == sorted(original.versions)


@pytest.mark.parametrize(
    "bad",
    [
        {"check_every": 0},
        {"window": 100, "check_every": 101},
        {"agreement_min": 0},
        {"agreement_window": 100, "agreement_min": 101},
        {"min_drop": 0.0},
        {"min_drop": 1.0},
        {"min_drop": math.nan},
        {"band_z": 0.0},
        {"band_z": math.nan},
        {"agreement_tolerance": -0.01},
        {"calibration_memory": BINS * PRIOR_WEIGHT - 1},
        {"calibration_memory": math.nan},
    ],
)
def test_config_refuses_nonsense(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="estimate:"):
        EstimateConfig(**bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("memory", [math.inf, 7.0, 50.0, 333.5])
def test_adding_many_answers_makes_the_table_adding_each_makes(memory: float) -> None:
    """The learner adds a batch at once: every count, through every halving, is the
    same float as adding the answers one at a time (a replay cut into other batches
    must not judge differently)."""
    rng = random.Random(int(memory) if math.isfinite(memory) else 1)
    one, many = Calibration(), Calibration()
    for _ in range(40):
        batch = [
            (rng.choice([0.0, 1.0, 0.5, 0.005, 0.995, rng.random()]), rng.random() < 0.3)
            for _ in range(rng.randint(0, 60))
        ]
        for score, positive in batch:
            one.add(score, positive, memory)
        many.add_many(batch, memory)
        assert (many.counts, many.positives, many.labelled) == (
            one.counts,
            one.positives,
            one.labelled,
        )
    assert many.calibrated(0.7) == one.calibrated(0.7)


@pytest.mark.parametrize("memory", [2.5, 10.0])
def test_a_score_that_cannot_be_binned_stops_adding_many_where_adding_each_stops(
    memory: float,
) -> None:
    """A NaN score raises in both; the answers before it stay added, with their count,
    and a halving leaves no stale map."""
    one, many = Calibration(), Calibration()
    first, second = [(0.2, True), (0.4, False)], [(0.6, True), (math.nan, True), (0.8, False)]
    for score, positive in first + second[:1]:
        one.add(score, positive, memory)
    with pytest.raises(ValueError, match="NaN"):
        one.add(math.nan, True, memory)
    many.add_many(first, memory)
    with pytest.raises(ValueError, match="NaN"):
        many.add_many(second, memory)
    assert (many.counts, many.positives, many.labelled) == (
        one.counts,
        one.positives,
        one.labelled,
    )
    many.calibrated(0.5)
    assert many._map is not None
    many.add_many([(0.9, True)] * 20, memory)
    assert many._map is None
