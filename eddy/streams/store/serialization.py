"""Sealed artifacts: the one place Eddy pickles and unpickles.

Unpickling runs code, so a pickle is only ever loaded after its SHA-256 and its HMAC
(under the deployment's signing key) have been checked; a tampered, unsigned or wrongly
signed artifact raises :class:`IntegrityError` before a single byte is deserialised.

A sealed artifact is one JSON header line and the payload (a pickle for River objects,
skops bytes for scikit-learn models)::

    {"format": "eddy-sealed-v1", "codec": "pickle", "sha256": "...", "hmac": "..."}\\n<bytes>

>>> blob = seal({"weights": [1, 2]}, key=b"k")
>>> unseal(blob, key=b"k")
{'weights': [1, 2]}
>>> unseal(blob, key=b"other")
Traceback (most recent call last):
...
eddy.streams.store.serialization.IntegrityError: HMAC does not match: wrong key or tampered artifact
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import io
import os
import pickle
import secrets
from pathlib import Path
from typing import Any

import orjson

FORMAT = "eddy-sealed-v1"
PICKLE = "pickle"
SKOPS = "skops"
KEY_BYTES = 32
# Where the modules of the flat layout (``streams.<module>``, before eddy.streams) live now, so
# learner checkpoints and River models registered before the move still load.
MOVED_MODULES = {
    "streams.admin": "eddy.streams.transport.admin",
    "streams.alert_text": "eddy.streams.drift.alert_text",
    "streams.attribution": "eddy.streams.drift.attribution",
    "streams.backtest": "eddy.services.backtest.timeline",
    "streams.clients": "eddy.streams.transport.clients",
    "streams.concept_watch": "eddy.streams.drift.concept_watch",
    "streams.console": "eddy.services.ops.console",
    "streams.contracts": "eddy.streams.messages.contracts",
    "streams.dead_letter": "eddy.streams.dead_letters.letter",
    "streams.detectors": "eddy.streams.drift.detectors",
    "streams.dlq": "eddy.services.ops.dead_letters",
    "streams.drift": "eddy.streams.drift.data",
    "streams.error_policy": "eddy.streams.dead_letters.policy",
    "streams.evaluation": "eddy.streams.learning.evaluation",
    "streams.faust_app": "eddy.services.workers.faust_app",
    "streams.feature_definitions": "eddy.streams.features.definitions",
    "streams.feature_pipeline": "eddy.streams.features.pipeline",
    "streams.feature_worker": "eddy.services.workers.features",
    "streams.features": "eddy.streams.features.compute",
    "streams.groups": "eddy.streams.transport.groups",
    "streams.learner": "eddy.streams.learning.learner",
    "streams.learner_worker": "eddy.services.workers.learner",
    "streams.models": "eddy.streams.learning.models",
    "streams.online_store": "eddy.streams.store.online",
    "streams.recent_ids": "eddy.streams.store.recent_ids",
    "streams.record_signatures": "eddy.streams.messages.signatures",
    "streams.redis_commands": "eddy.streams.store.redis_commands",
    "streams.schema_files": "eddy.streams.messages.schema_files",
    "streams.serialization": "eddy.streams.store.serialization",
    "streams.served": "eddy.streams.drift.served",
    "streams.skew": "eddy.streams.features.skew",
    "streams.slices": "eddy.streams.learning.slices",
    "streams.snapshots": "eddy.streams.store.snapshots",
    "streams.topics": "eddy.streams.transport.topics",
    "streams.validation": "eddy.streams.messages.validation",
}

# Classes that moved out of their module: a learner checkpoint's state was defined by
# the learner process before it moved to the data plane.
MOVED_CLASSES = {
    ("streams.learner_worker", "LearnerState"): "eddy.streams.learning.checkpoints",
    ("eddy.services.workers.learner", "LearnerState"): "eddy.streams.learning.checkpoints",
}


class IntegrityError(ValueError):
    """An artifact failed verification and was not deserialised."""


def seal(obj: Any, key: bytes) -> bytes:
    """``obj`` pickled and signed (River models, learner checkpoints)."""
    return sign(pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL), key, PICKLE)


def sign(payload: bytes, key: bytes, codec: str) -> bytes:
    """``payload`` (already serialised with ``codec``) behind a signed header."""
    header = {
        "format": FORMAT,
        "codec": codec,
        "sha256": hashlib.sha256(payload).hexdigest(),
        "hmac": hmac.new(key, payload, hashlib.sha256).hexdigest(),
    }
    return orjson.dumps(header) + b"\n" + payload


def verify(blob: bytes, key: bytes) -> tuple[dict[str, str], bytes]:
    """The header and payload of ``blob`` once both checks pass."""
    head, newline, payload = blob.partition(b"\n")
    try:
        header = orjson.loads(head) if newline else None
    except orjson.JSONDecodeError:
        header = None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise IntegrityError("not a sealed Eddy artifact (unsigned or foreign format)")
    if not hmac.compare_digest(hashlib.sha256(payload).hexdigest(), str(header.get("sha256"))):
        raise IntegrityError("SHA-256 does not match: the artifact is corrupt or truncated")
    expected = hmac.new(key, payload, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, str(header.get("hmac"))):
        raise IntegrityError("HMAC does not match: wrong key or tampered artifact")
    return header, payload


def unseal(blob: bytes, key: bytes) -> Any:
    header, payload = verify(blob, key)
    if header.get("codec", PICKLE) != PICKLE:
        raise IntegrityError(f"expected a pickle artifact, got {header.get('codec')!r}")
    try:
        return _Unpickler(io.BytesIO(payload)).load()
    except (ModuleNotFoundError, AttributeError) as exc:
        # Written by code this version lacks (a newer Eddy, before a rollback): skipped
        # like any artifact that does not verify, never a crash of its reader.
        raise IntegrityError(f"artifact names code this version lacks: {exc}") from exc


def unpickle_nested(payload: bytes) -> Any:
    """Bytes an object pickled into its own state (its ``__getstate__``), unpickled by
    its ``__setstate__``: reached only while :func:`unseal` unpickles the artifact that
    holds them, after its checks passed, or later by the object holding them: bytes it
    made, or bytes that arrived inside a verified artifact. Examples: the model history's
    blocks of examples, and its copies of the model, unpickled to judge a detection
    (:class:`~eddy.streams.drift.attribution.ModelHistory`)."""
    return _Unpickler(io.BytesIO(payload)).load()


class _Unpickler(pickle.Unpickler):
    """An unpickler that finds classes pickled under the flat layout's module names."""

    def find_class(self, module: str, name: str) -> Any:
        moved = MOVED_CLASSES.get((module, name)) or MOVED_MODULES.get(module, module)
        return super().find_class(moved, name)


def write_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` so that ``path`` is either the old file or the complete new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    with temporary.open("wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    temporary.replace(path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def signing_key(configured: bytes | None, data_dir: Path) -> bytes:
    """The configured key, or this installation's own random key (created once, 0600)."""
    if configured:
        return configured
    path = data_dir / "signing.key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        candidate = path.with_name(f".signing.key.{secrets.token_hex(4)}")
        descriptor = os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(secrets.token_bytes(KEY_BYTES))
        # link() fails if another process got there first; then its key is the key.
        with contextlib.suppress(FileExistsError):
            os.link(candidate, path)
        candidate.unlink()
    return path.read_bytes()
