"""``eddy score FILE``: the champion over a CSV or Parquet file (static inference).

Each row's columns are its raw features; with an ``entity_id`` column the entity's
online features are read (in one round trip) and the row's own values override them,
exactly as the prediction service merges a request. Results are written beside the
input as CSV: the original columns plus ``prediction``, ``model_version`` and one
``proba_<label>`` column per class.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pandas as pd

from eddy.services.config.settings import Settings
from eddy.services.registry.store import CHAMPION, Registry, RegistryError
from eddy.services.serving.scoring import Loaded, score_batch
from eddy.streams.features.compute import FeatureSet, feature_vector
from eddy.streams.store.online import OnlineStore
from eddy.streams.transport.clients import make_redis

ENTITY_COLUMN = "entity_id"


def read_table(path: Path) -> pd.DataFrame:
    if path.suffix.lower() in (".parquet", ".pq"):
        return pd.read_parquet(path)
    return pd.read_csv(path)


def score_file(
    settings: Settings, registry: Registry, features: FeatureSet, path: Path, output: Path | None
) -> tuple[Path, int, str]:
    """Score ``path``'s rows with the champion, each row's features merged over its
    entity's online ones through the deployment's ``features``; the output's path, the
    rows scored and the version that scored them."""
    champion = registry.alias(settings.model_name, CHAMPION)
    if champion is None:
        raise RegistryError(f"{settings.model_name!r} has no champion to score with")
    loaded = Loaded(
        champion.model,
        champion.version,
        champion.flavor,
        registry.load(champion.model, champion.version),
    )
    table = read_table(path)
    rows: list[dict[str, Any]] = [
        {k: _plain(v) for k, v in row.items() if k != ENTITY_COLUMN}
        for row in table.to_dict(orient="records")
    ]
    if ENTITY_COLUMN in table.columns:
        store = OnlineStore(
            make_redis(settings),
            settings.topic_prefix,
            settings.feature_ttl_s,
            states=features.state_fingerprint(),
        )
        entities = [str(e) for e in table[ENTITY_COLUMN]]
        states = store.load(entities)
        now = time.time()
        rows = [
            feature_vector(states[e].state, features, now, raw=row)
            for e, row in zip(entities, rows, strict=True)
        ]
    scored = score_batch(loaded, rows)
    result = table.copy()
    result["prediction"] = [s.prediction for s in scored]
    result["model_version"] = loaded.name
    labels = sorted({label for s in scored for label in s.proba})
    for label in labels:
        result[f"proba_{label}"] = [s.proba.get(label) for s in scored]
    target = output or path.with_name(f"{path.stem}.scored.csv")
    result.to_csv(target, index=False)
    return target, len(result), loaded.name


def _plain(value: Any) -> Any:
    """NaN cells are missing features; numpy scalars become Python values."""
    if value is None or (isinstance(value, float) and value != value):
        return None
    return value.item() if hasattr(value, "item") else value
