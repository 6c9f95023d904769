"""``eddy alerts watch``'s text for the alerts of a served version's estimate: the
estimated degradation and the labels that disagree with the estimate."""

from __future__ import annotations

from typing import Any

from eddy.streams.drift.alert_text import describe_alert


def estimated(**changes: Any) -> dict[str, Any]:
    """An estimated degradation of m@3 as the learner raises it, with two drifted features."""
    alert = {
        "alert_id": "m:served:estimated_degradation:m@3:4000",
        "model": "m",
        "kind": "estimated_degradation",
        "detector": "cbpe",
        "stream": "served",
        "model_version": "m@3",
        "action": "warn",
        "detected_at": "2026-01-01T00:00:00Z",
        "feature": "estimated_accuracy",
        "statistic": 0.8123,
        "threshold": 0.9,
        "evidence": [
            {
                "feature": "estimated_accuracy",
                "test": "cbpe",
                "statistic": 0.8123,
                "threshold": 0.9,
            },
            {"feature": "amount", "test": "psi", "statistic": 0.9, "threshold": 0.2},
            {"feature": "country", "test": "ks", "statistic": 0.3, "threshold": 0.2},
        ],
        "metrics": {
            "estimated_accuracy": 0.8123,
            "estimated_accuracy_lower": 0.7912,
            "estimated_accuracy_upper": 0.8334,
            "reference_accuracy": 0.95,
            "estimated_roc_auc": 0.88,
            "estimated_log_loss": 0.41,
            "answers": 1000.0,
        },
    }
    return alert | changes


def test_an_estimated_degradation_reads_estimate_band_and_reference_then_the_features() -> None:
    lines = describe_alert(estimated(action="retrain")).splitlines()

    assert lines[0] == (
        "2026-01-01T00:00:00Z  ESTIMATED DEGRADATION of m (m@3) -> retrain  "
        "[m:served:estimated_degradation:m@3:4000]"
    )
    assert lines[1] == (
        "  estimated accuracy 0.8123 [0.7912, 0.8334] < 0.9000 (reference 0.9500), 1000 answers"
    )
    # The drifted features, most severe first; the estimate is not shown as a feature
    # whose statistic went "above" its threshold.
    assert [line.split()[0] for line in lines[2:4]] == ["amount", "country"]
    assert "cbpe=" not in "\n".join(lines)
    assert lines[4].startswith("  metrics: answers=1000.0, estimated_accuracy=0.8123")
    assert "estimated_roc_auc=0.88" in lines[4]


def test_an_estimated_degradation_without_drifted_features_or_a_band() -> None:
    text = describe_alert(
        estimated(
            evidence=estimated()["evidence"][:1],
            metrics={"estimated_accuracy": 0.8123},
        )
    )
    assert text.splitlines()[1:] == [
        "  estimated accuracy 0.8123 < 0.9000",  # no band, no reference: left out, not 0
        "  metrics: estimated_accuracy=0.8123",
    ]


def test_labels_that_disagree_with_the_estimate_are_said_to_be_concept_drift() -> None:
    alert = {
        "alert_id": "m:served:concept:m@3:700",
        "model": "m",
        "kind": "concept",
        "detector": "cbpe_disagreement",
        "stream": "served",
        "model_version": "m@3",
        "action": "warn",
        "detected_at": "2026-01-01T00:00:00Z",
        "statistic": 0.2,
        "threshold": 0.05,
        "evidence": [
            {
                "feature": "accuracy",
                "test": "cbpe_disagreement",
                "statistic": 0.2,
                "threshold": 0.05,
            }
        ],
        "metrics": {"estimated_accuracy": 0.9, "realized_accuracy": 0.7, "labelled": 500.0},
    }

    assert describe_alert(alert).splitlines() == [
        "2026-01-01T00:00:00Z  LABELS DISAGREE WITH THE ESTIMATE of m (m@3) -> warn  "
        "[m:served:concept:m@3:700]",
        "  realized accuracy 0.7000, estimated 0.9000, 500 labelled answers: "
        "off by 0.2000 > 0.0500",
        "  concept drift: the estimate is not valid for this change; only labels show it",
        "  metrics: estimated_accuracy=0.9, labelled=500.0, realized_accuracy=0.7",
    ]


def test_other_concept_alerts_read_as_before() -> None:
    alert = {
        "alert_id": "m:concept:5",
        "model": "m",
        "kind": "concept",
        "detector": "adwin",
        "model_version": "m@online",
        "action": "retrain",
        "detected_at": "2026-01-01T00:00:00Z",
        "evidence": [{"feature": "error", "test": "adwin", "statistic": 0.4, "threshold": 0.1}],
    }
    assert describe_alert(alert).splitlines() == [
        "2026-01-01T00:00:00Z  CONCEPT drift on m (m@online) -> retrain  [m:concept:5]",
        "  error            adwin=0.4000 > 0.1000  (4.0x)",
    ]
