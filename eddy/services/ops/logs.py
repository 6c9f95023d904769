"""Structured logs: one JSON object per line, with context fields a log search can filter.

Callers pass context with ``extra``: ``log.info("scored", extra={"request_id": r,
"model_version": v})``; every such field lands as a top-level key of the line.

>>> import logging
>>> record = logging.LogRecord("eddy", logging.INFO, "", 0, "hello", None, None)
>>> record.event_id = "e1"
>>> line = JsonLineFormatter().format(record)
>>> sorted(orjson.loads(line))
['event_id', 'level', 'logger', 'message', 'ts']
"""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime
from typing import Any

import orjson

# Attributes every LogRecord has; anything else on a record came from ``extra``.
_STANDARD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
}


# Client libraries that log every connection at INFO; their warnings still come through.
NOISY_LIBRARIES = ("kafka", "aiokafka", "faust", "mode")


class JsonLineFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRS:
                line[key] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(line, default=str).decode()


def configure(level: str) -> None:
    """Send every log record to stderr as JSON lines at ``level``."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLineFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for chatty in NOISY_LIBRARIES:
        logging.getLogger(chatty).setLevel(max(logging.WARNING, root.level))
