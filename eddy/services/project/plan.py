"""What ``eddy plan`` shows of a loaded project: its name and model, the raw fields it
declares, the features it computes (names and fingerprint), its two models, the types
its scikit-learn artifacts may hold beyond Eddy's allow-list, and its settings overrides.

The plan is what the project *is*. Comparing it with what is deployed (which features,
models and settings change) and ``eddy apply``, which would roll those changes out, are
not built yet: the running services take the project's settings, features, raw fields
and models when they start (:mod:`eddy.services.project.deployment`).
"""

from __future__ import annotations

from eddy.services.project.loading import Project
from eddy.streams.features.compute import TIME_SINCE_LAST, FeatureSet
from eddy.streams.messages.raw_schema import RawField, RawSchema


def plan_project(project: Project) -> list[str]:
    """The lines ``eddy plan`` prints for ``project``, in reading order."""
    names = feature_names(project.features, project.schema)
    lines = [
        f"project {project.name}: model {project.model!r} ({project.root})",
        f"fields ({len(project.schema.fields)}):",
        *(f"  {describe_field(field)}" for field in project.schema.fields),
        f"features ({len(names)}, fingerprint {project.fingerprint}):",
        *(f"  {name}" for name in names),
        f"online model: {project.online_model_class}",
        f"retrain estimator: {project.retrain_estimator_class}",
    ]
    if project.trusted:
        lines.append(f"trusted in artifacts, beyond Eddy's allow-list ({len(project.trusted)}):")
        lines += [f"  {prefix}" for prefix in project.trusted]
    if project.settings:
        lines.append(f"settings overridden ({len(project.settings)}):")
        lines += [f"  {key} = {value!r}" for key, value in sorted(project.settings.items())]
    else:
        lines.append("settings overridden: none (Eddy's defaults and EDDY_* variables)")
    return lines


def feature_names(features: FeatureSet, schema: RawSchema) -> list[str]:
    """Every feature a vector of ``features`` holds for events fitting ``schema``: the
    raw fields passed through (all declared fields when ``passthrough`` is None), then
    the aggregates, the ratios and the time since the last event.

    >>> from eddy.streams.features.compute import Aggregate, tumbling
    >>> fs = FeatureSet((Aggregate("amount", ("sum",), tumbling(3600)),), time_since_last=False)
    >>> feature_names(fs, RawSchema.from_table({"amount": {"type": "float"}}))
    ['amount', 'amount_sum_1h']
    """
    passed = schema.names if features.passthrough is None else features.passthrough
    names = [*passed, *(name for a in features.aggregates for name in a.op_names)]
    names += [ratio.name for ratio in features.ratios]
    names += [TIME_SINCE_LAST] if features.time_since_last else []
    return names


def describe_field(field: RawField) -> str:
    """One declared field in a line.

    >>> describe_field(RawField("size", "int", minimum=0, maximum=2))
    'size: int, required, in [0, 2]'
    """
    parts = [f"{field.name}: {field.type}", "required" if field.required else "optional"]
    if field.minimum is not None or field.maximum is not None:
        low = "-inf" if field.minimum is None else f"{field.minimum:g}"
        high = "inf" if field.maximum is None else f"{field.maximum:g}"
        parts.append(f"in [{low}, {high}]")
    if field.categories is not None:
        parts.append(f"one of {', '.join(field.categories)}")
    return ", ".join(parts)
