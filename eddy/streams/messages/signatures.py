"""Signed records: who may tell Eddy to act.

A record on the ``control`` topic makes the retrainer train and register a model. Topic
ACLs are the broker's first line; this is Eddy's own: every control command carries an
HMAC-SHA256 of its value, under the deployment's signing key (the key that signs model
artifacts), in the :data:`SIGNATURE_HEADER` header. The retrainer refuses, and
dead-letters, a command that is unsigned or signed with another key, so a client that
can write to the topic but does not hold the key cannot trigger anything.

>>> headers = [(SIGNATURE_HEADER, signature(b"k", b'{"a": 1}'))]
>>> signature_refusal(b"k", b'{"a": 1}', headers) is None
True
>>> signature_refusal(b"k", b'{"a": 2}', headers)
('bad_signature', "the eddy-hmac header does not match the value under this deployment's key")
>>> signature_refusal(b"k", b'{"a": 1}', [])
('unsigned', "no eddy-hmac header: control records must be signed with the deployment's key")
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence

SIGNATURE_HEADER = "eddy-hmac"
UNSIGNED = "unsigned"
BAD_SIGNATURE = "bad_signature"


def signature(key: bytes, value: bytes) -> bytes:
    """The header value that signs ``value``: a hex HMAC-SHA256, ASCII."""
    return hmac.new(key, value, hashlib.sha256).hexdigest().encode()


def signature_refusal(
    key: bytes, value: bytes | None, headers: Sequence[tuple[str, bytes | None]]
) -> tuple[str, str] | None:
    """Why a record's signature is not accepted (error class, reason), or None."""
    given = [v for k, v in headers if k == SIGNATURE_HEADER]
    if not given:
        return (
            UNSIGNED,
            f"no {SIGNATURE_HEADER} header: control records must be signed with the "
            "deployment's key",
        )
    if len(given) > 1 or not hmac.compare_digest(given[0] or b"", signature(key, value or b"")):
        return (
            BAD_SIGNATURE,
            f"the {SIGNATURE_HEADER} header does not match the value under this deployment's key",
        )
    return None
