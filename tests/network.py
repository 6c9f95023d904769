"""Local ports and HTTP for tests that talk to a service they started.

Used by several test modules (the monitor, control, liveness and graceful-shutdown
tests), so it lives here rather than in one of them: a test module imports no other.
"""

from __future__ import annotations

import socket
import urllib.request

from tests.waiting import wait_until

GET_TIMEOUT_S = 30.0
GET_EVERY_S = 0.3


def free_port() -> int:
    """A port nothing listens on now, for a service the test is about to start."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def get(url: str) -> bytes:
    """The body at ``url``, asked again while nothing answers there yet (a server starting)."""
    bodies: list[bytes] = []
    errors: list[OSError] = []

    def answered() -> bool:
        try:
            bodies.append(bytes(urllib.request.urlopen(url, timeout=5).read()))
        except OSError as exc:  # refused, reset, an HTTP error status: ask again
            errors.append(exc)
            return False
        return True

    wait_until(
        answered,
        f"an answer from {url}",
        timeout_s=GET_TIMEOUT_S,
        every_s=GET_EVERY_S,
        logs=lambda: f"the last error: {errors[-1]!r}",
    )
    return bodies[0]
