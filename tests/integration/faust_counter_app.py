"""A tiny faust worker that counts records per key, for the worker integration test.

Run it as its own process (the test kills it with SIGKILL, so it must not share the
test's interpreter)::

    python -m tests.integration.faust_counter_app worker -l info

It reads everything from ``EDDY_*`` variables through :meth:`Settings.from_env`, and
derives its app id (also its consumer group) and topic names from the topic prefix,
so every test gets a worker, group and changelog of its own.

>>> names = counter_names("eddy-test-ab12.")
>>> names.app_id, names.source, names.sink
('eddy-test-ab12.counter', 'eddy-test-ab12.counter-in', 'eddy-test-ab12.counter-out')
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faust

from eddy.services.config.settings import Settings
from eddy.services.workers.faust_app import make_app

TABLE_NAME = "counts"
# Touched in the app's datadir each time a rebalance, table recovery included, ends.
READY_MARKER = "rebalance-done"


@dataclass(frozen=True)
class CounterNames:
    """Where the counter worker lives: its faust app id and its two topics."""

    app_id: str
    source: str
    sink: str


def counter_names(prefix: str) -> CounterNames:
    """The app id and topic names for a topic prefix (the test needs them too)."""
    return CounterNames(
        app_id=f"{prefix}counter", source=f"{prefix}counter-in", sink=f"{prefix}counter-out"
    )


class ReadyMarker(faust.Sensor):
    """Tells the test when the worker is really consuming, via a file.

    faust calls ``on_rebalance_end`` after table recovery, once stream partitions are
    resumed and the fetcher runs: the one moment a record sent is sure to be seen.
    """

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path

    def on_rebalance_end(self, app: Any, state: Any) -> None:
        self.path.touch()


def build_app(settings: Settings) -> faust.App:
    """The counter app: source records in, ``{"key", "count"}`` JSON out, same key.

    Built by a function, not at import time, so importing this module (doctests, the
    test's use of :func:`counter_names`) reads no environment and declares nothing.
    Keys are UTF-8 text and values are ignored raw bytes; the ``counts`` table keeps
    its state in a changelog topic co-partitioned with the source topic.
    """
    names = counter_names(settings.topic_prefix)
    app = make_app(settings, names.app_id)
    app.sensors.add(ReadyMarker(Path(app.conf.datadir) / READY_MARKER))
    source = app.topic(names.source, key_type=str, value_type=bytes)
    sink = app.topic(names.sink, key_type=str, value_serializer="json")
    counts = app.Table(TABLE_NAME, default=int, key_type=str, value_type=int)

    @app.agent(source, concurrency=1)
    async def count(stream: Any) -> None:
        async for key, _value in stream.items():
            counts[key] += 1
            await sink.send(key=key, value={"key": key, "count": counts[key]})

    return app


def main() -> None:
    settings = Settings.from_env()
    # faust creates its datadir without parents, so the shared "faust" folder must exist.
    (settings.data_dir / "faust").mkdir(parents=True, exist_ok=True)
    build_app(settings).main()


if __name__ == "__main__":
    main()
