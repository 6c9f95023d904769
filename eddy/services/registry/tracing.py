"""``eddy trace``: from one request id to the data a model learned from.

request log entry → the answer's model version → its registry lineage (offsets trained
on, feature set, parameters, trigger: the drift alert that caused the retrain) → when
and why that version became champion.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import orjson

from eddy.services.config.settings import Settings
from eddy.services.registry.store import CHAMPION, Registry, RegistryError
from eddy.streams.store import keys
from eddy.streams.transport.clients import make_redis


def trace_request(settings: Settings, registry: Registry, request_id: str) -> dict[str, Any] | None:
    client = make_redis(settings)
    try:
        raw = client.get(keys.request_log(settings.topic_prefix, request_id))
    finally:
        client.close()
    if raw is None:
        return None
    entry: dict[str, Any] = orjson.loads(raw)
    output = entry.get("output") or {}
    trace: dict[str, Any] = {"request": entry}
    model, version = output.get("model"), output.get("model_version")
    if not model or not version:
        return trace  # an error answer: no model produced it
    try:
        record = registry.get(model, int(version))
    except RegistryError as exc:
        trace["model"] = {"error": str(exc)}
        return trace
    trace["model"] = {
        "name": record.name,
        "flavor": record.flavor,
        "metrics": record.metrics,
        "created_at": record.created_at,
    }
    trace["lineage"] = asdict(record.lineage)
    trace["caused_by"] = record.lineage.trigger
    promoted = [
        asdict(d)
        for d in registry.history(model)
        if d.alias == CHAMPION and d.version == record.version and d.at <= entry["at"]
    ]
    trace["champion_since"] = promoted[-1] if promoted else None
    return trace
