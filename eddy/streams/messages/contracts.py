"""The messages Eddy exchanges over Kafka (design brief §2), as validated models.

Each model is the single source of truth for its topic's JSON contract: the files in
``eddy/streams/messages/schemas/`` are generated from these classes (``eddy schemas --write``) and a
test keeps them in step. Every message carries ``schema_version`` and a stable id that
makes its effect idempotent. Floats must be finite: NaN and infinities are rejected at
the edge instead of poisoning features and models downstream.

>>> event = Event.model_validate_json(
...     b'{"event_id": "e1", "entity_id": "u7", "event_time": "2026-01-01T00:00:00Z",'
...     b' "features": {"amount": 12.5}}'
... )
>>> event.features["amount"], event.schema_version
(12.5, 1)
>>> Event.model_validate_json(b'{"event_id": "e1"}')
Traceback (most recent call last):
...
pydantic_core._pydantic_core.ValidationError: 3 validation errors for Event
...
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

SCHEMA_VERSION: Literal[1] = 1
MAX_ID_LENGTH = 256
MAX_FEATURES = 512

# Features and labels are numbers a model can square: within ±2⁶⁴, like the integers
# (eddy.streams.messages.validation). Past about 1e154 River's trees overflow on (x - mean)².
MAX_MAGNITUDE = 2.0**64

FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]
ModelFloat = Annotated[float, Field(allow_inf_nan=False, ge=-MAX_MAGNITUDE, le=MAX_MAGNITUDE)]
Identifier = Annotated[str, Field(min_length=1, max_length=MAX_ID_LENGTH)]
Probability = Annotated[float, Field(ge=0.0, le=1.0)]
MAX_SERVED = 100_000  # answers in one ServedAnswers record: more than any batch
FeatureName = Annotated[str, Field(min_length=1, max_length=MAX_ID_LENGTH)]
# Order matters: pydantic's smart union keeps bools as bools and ints as ints.
FeatureValue = bool | int | ModelFloat | Annotated[str, Field(max_length=4096)] | None
LabelValue = bool | int | ModelFloat | Identifier
Features = Annotated[dict[FeatureName, FeatureValue], Field(max_length=MAX_FEATURES)]


class Contract(BaseModel):
    """Base of every message: strict about unknown fields, versioned."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: Literal[1] = SCHEMA_VERSION


class Event(Contract):
    """An observation about one entity, optionally with its label (topic ``events``)."""

    event_id: Identifier
    entity_id: Identifier
    event_time: AwareDatetime
    features: Features
    label: LabelValue | None = None


class Label(Contract):
    """Ground truth for an earlier event or prediction request (topic ``labels``)."""

    event_id: Identifier | None = None
    request_id: Identifier | None = None
    entity_id: Identifier | None = None
    label: LabelValue
    event_time: AwareDatetime

    @model_validator(mode="after")
    def _names_what_it_labels(self) -> Label:
        if (self.event_id is None) == (self.request_id is None):
            raise ValueError("a label names exactly one of event_id or request_id")
        return self


class SourceOffset(BaseModel):
    """Where a record came from: the lineage of everything derived from it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    topic: str
    partition: int
    offset: int


class TrainingExample(Contract):
    """Point-in-time features and a label (topic ``training-examples``).

    ``features`` are the entity's features as they were before the labelled event
    updated them, plus the event's own raw features: exactly what a prediction served
    at that moment would have seen. ``example_id`` is the event id, so consumers can
    drop the duplicates that at-least-once delivery may produce.
    """

    example_id: Identifier
    entity_id: Identifier
    event_time: AwareDatetime
    label: LabelValue
    features: dict[str, FeatureValue]
    feature_set: str
    source: SourceOffset


class PredictionRequest(Contract):
    """An application asks for a prediction (topic ``prediction-requests``)."""

    request_id: Identifier
    entity_id: Identifier
    features: Features = Field(default_factory=dict)
    reply_topic: Annotated[str, Field(pattern=r"^[A-Za-z0-9._-]{1,249}$")] | None = None


class PredictionError(BaseModel):
    """Why a request got no prediction."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    code: Identifier
    message: str


class Prediction(Contract):
    """The answer to one request (topic ``predictions``): a prediction or an error."""

    request_id: Identifier
    entity_id: Identifier | None = None
    prediction: LabelValue | None = None
    proba: dict[str, FiniteFloat] = Field(default_factory=dict)
    model: str | None = None
    model_version: str | None = None
    latency_ms: FiniteFloat | None = None
    freshness_s: FiniteFloat | None = None
    # The fingerprint of the feature definitions the answer's features were computed
    # with: after `eddy apply` changes them, answers say which definitions they saw.
    feature_set: Identifier | None = None
    cached: bool = False
    error: PredictionError | None = None

    @model_validator(mode="after")
    def _answer_or_error(self) -> Prediction:
        if (self.prediction is None) == (self.error is None):
            raise ValueError("a prediction carries exactly one of prediction or error")
        return self


class ServedAnswers(Contract):
    """What one version served, as a predictor gathered it over about a second of
    batches (topic ``served-answers``), each answer computed afresh, in the order served: a binary
    classifier's P(positive class) (``positives``), or a regressor's answers (``values``)
    with the features each was computed from (``inputs``). Repeats of logged answers
    are not in it. The learner estimates the version's performance from these before
    any label arrives (:mod:`eddy.streams.drift.estimate`)."""

    batch_id: Identifier  # "<requests topic>[<partition>]@<first batch's offset>:<version>"
    model: Identifier
    model_version: Identifier  # e.g. "fraud@3"
    positives: Annotated[list[Probability], Field(max_length=MAX_SERVED)] = Field(
        default_factory=list
    )
    values: Annotated[list[ModelFloat], Field(max_length=MAX_SERVED)] = Field(default_factory=list)
    inputs: Annotated[list[Features], Field(max_length=MAX_SERVED)] = Field(default_factory=list)
    served_at: AwareDatetime

    @model_validator(mode="after")
    def _one_kind_of_answers(self) -> ServedAnswers:
        if bool(self.positives) == bool(self.values):
            raise ValueError("served answers carry either positives or values, not both")
        if len(self.inputs) != len(self.values):
            raise ValueError("a regressor's served answers carry one inputs per value")
        return self


class DriftKind(StrEnum):
    DATA = "data"
    CONCEPT = "concept"
    PREDICTION = "prediction"
    SKEW = "skew"
    # The served version's performance, estimated from its answers before any label,
    # fell below its reference (:mod:`eddy.streams.drift.estimate`).
    ESTIMATED = "estimated_degradation"


class AlertStream(StrEnum):
    """Which stream a drift alert watched."""

    SERVED = "served"
    ONLINE = "online"
    FEATURES = "features"


class DriftWindow(BaseModel):
    """Where the evidence came from: offsets per partition and the time span."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    offsets: dict[str, tuple[int, int]] = Field(default_factory=dict)
    times: tuple[AwareDatetime, AwareDatetime] | None = None


class DriftEvidence(BaseModel):
    """One drifted feature (or the error stream): its test's statistic vs threshold."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    feature: str
    test: str
    statistic: FiniteFloat
    threshold: FiniteFloat


class AlertExample(BaseModel):
    """One concrete case behind an alert: a request, a feature, two values that differ."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    request_id: Identifier
    feature: str
    served: FeatureValue = None  # None: the feature was missing on that side
    recomputed: FeatureValue = None


# What an alert asks for: a retrain, a warning, an investigation (training-serving skew),
# or nothing. Anything else is refused: the long fuzz found alerts with actions of any
# text accepted, then ignored without a dead letter.
AlertAction = Literal["retrain", "warn", "investigate", "none"]


class DriftAlert(Contract):
    """A drift detector fired (topic ``drift-alerts``).

    ``feature``/``statistic``/``threshold`` repeat the most severe item of ``evidence``,
    which ranks every drifted feature, most severe first. ``metrics`` are the model's
    prequential metrics when it fired. ``alert_id`` is derived from the model and its
    example count, so a learner replaying from a checkpoint re-sends the same ids.

    ``stream`` says which stream fired: ``served`` (the answers a deployed version gave,
    joined to their labels; ``model_version`` names it), ``online`` (the online
    learner's own prequential stream) or ``features`` (the examples' inputs).
    ``change_at`` is the event time where a concept detector estimates the change
    began: a retrain learns from the examples after it. ``action`` is ``retrain`` or
    ``warn`` (a warning: nothing is retrained for it).
    """

    alert_id: Identifier
    model: Identifier
    kind: DriftKind
    detector: Identifier
    feature: str | None = None
    statistic: FiniteFloat
    threshold: FiniteFloat
    window: DriftWindow = Field(default_factory=DriftWindow)
    model_version: str | None = None
    action: AlertAction = "none"
    detected_at: AwareDatetime | None = None
    evidence: list[DriftEvidence] = Field(default_factory=list)
    metrics: dict[str, FiniteFloat] = Field(default_factory=dict)
    examples: list[AlertExample] = Field(default_factory=list)  # skew: served vs recomputed
    stream: AlertStream | None = None
    change_at: AwareDatetime | None = None


class ModelUpdate(Contract):
    """A registry change (compacted topic ``model-updates``, keyed by model name)."""

    update_id: Identifier
    model: Identifier
    version: Identifier
    stage: str | None = None
    alias: str | None = None
    metrics: dict[str, FiniteFloat] = Field(default_factory=dict)
    lineage_ref: str | None = None
    changed_at: AwareDatetime


class ControlAction(StrEnum):
    RETRAIN = "retrain"


class ControlCommand(Contract):
    """An operator or system asks Eddy to act (topic ``control``).

    ``command_id`` makes the command idempotent: a command delivered twice is carried
    out once. ``requested_by`` and ``reason`` go to the registry's audit log.
    """

    command_id: Identifier
    action: ControlAction
    model: Identifier
    requested_by: Identifier
    reason: Annotated[str, Field(max_length=1024)] = ""
    requested_at: AwareDatetime


def json_schema(model: type[Contract]) -> dict[str, Any]:
    """The JSON Schema of ``model``, as written to ``eddy/streams/messages/schemas/``."""
    schema = model.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = f"eddy/{model.__name__}.v{SCHEMA_VERSION}.json"
    return schema
