"""Where operators read a served version's live performance: one Redis hash per model.

The learner estimates each served version's performance from its answers
(:mod:`eddy.streams.drift.estimate`) and realizes it from the labels joined to them; after
each batch it writes what it has, version by version, here::

    <prefix>estimates:{<model>}   hash  <model>@<version> -> JSON PerformanceReport

``eddy models show`` and the status API read it back. The hash holds the versions the
learner watches (at most a handful); a version it stopped watching keeps its last report.

>>> report = PerformanceReport("m@2", {"accuracy": 0.91, "accuracy_lower": 0.88,
...     "accuracy_upper": 0.94, "answers": 1000.0}, 0.95, {"accuracy": 0.9}, 812.0, 1.0)
>>> PerformanceReport.from_json(report.to_json()) == report
True
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass

import orjson

from eddy.streams.store import keys
from eddy.streams.store.redis_commands import RedisClient


@dataclass(frozen=True)
class PerformanceReport:
    """A version's latest figures: ``estimated`` over its last window of answers (each
    metric with ``_lower``/``_upper`` bands and the window's ``answers``), the
    ``reference`` accuracy its alerts compare with, ``realized`` over its labelled answers,
    and how many labels its calibration holds (``calibrated_on``)."""

    version: str
    estimated: dict[str, float]
    reference_accuracy: float | None
    realized: dict[str, float]
    calibrated_on: float
    at: float  # epoch seconds

    def figures(self) -> Iterator[tuple[str, str, float]]:
        """(metric, figure, value) for each figure: ``estimate``, ``lower``, ``upper``
        or ``realized``.

        >>> list(PerformanceReport("m@2", {"accuracy": 0.9, "accuracy_lower": 0.8,
        ...     "answers": 10.0}, None, {"accuracy": 0.85}, 0.0, 0.0).figures())
        [('accuracy', 'estimate', 0.9), ('accuracy', 'lower', 0.8), ('accuracy', 'realized', 0.85)]
        """
        for name, value in self.estimated.items():
            metric, _, bound = name.rpartition("_")
            if bound in ("lower", "upper"):
                yield metric, bound, value
            elif name != "answers":
                yield name, "estimate", value
        for name, value in self.realized.items():
            yield name, "realized", value

    def to_json(self) -> bytes:
        return orjson.dumps(asdict(self))

    @classmethod
    def from_json(cls, raw: bytes | str) -> PerformanceReport:
        return cls(**orjson.loads(raw))


def save_reports(
    redis: RedisClient, prefix: str, model: str, reports: Sequence[PerformanceReport]
) -> None:
    """Write ``reports`` (one round trip; nothing when there are none)."""
    if reports:
        redis.hset(
            keys.performance_estimates(prefix, model),
            mapping={r.version: r.to_json() for r in reports},
        )


def read_reports(redis: RedisClient, prefix: str, model: str) -> dict[str, PerformanceReport]:
    """Every version's latest report, by version name (e.g. ``"fraud@3"``)."""
    stored = redis.hgetall(keys.performance_estimates(prefix, model))
    return {
        (name.decode() if isinstance(name, bytes) else name): PerformanceReport.from_json(raw)
        for name, raw in stored.items()
    }
