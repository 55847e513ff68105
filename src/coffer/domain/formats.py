"""The ``thalassa:v<N>:<base64>`` format of ciphertexts, signatures and MACs (spec §4).

Every output names the key version that made it, so that a key can rotate without re-encrypting.
Decoding is strict: only canonical base64 is accepted, so that no two strings decode to the same
body (a changed character is always a changed ciphertext).
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass

from coffer.errors import CofferError

PREFIX = "thalassa"
_FORMAT = re.compile(r"thalassa:v([1-9][0-9]{0,9}):([A-Za-z0-9+/]+={0,2})")


@dataclass(frozen=True, slots=True)
class Versioned:
    """A body made with key version ``version``."""

    version: int
    body: bytes

    def __repr__(self) -> str:
        return f"Versioned(version={self.version}, body=<{len(self.body)} bytes>)"


def encode(version: int, body: bytes) -> str:
    return f"{PREFIX}:v{version}:{base64.b64encode(body).decode('ascii')}"


def decode(text: str, error: type[CofferError]) -> Versioned:
    """Parse ``text``; anything malformed raises ``error()`` with its one default message."""
    match = _FORMAT.fullmatch(text)
    if match is None:
        raise error()
    b64 = match.group(2)
    try:
        body = base64.b64decode(b64, validate=True)
    except (binascii.Error, ValueError):
        raise error() from None
    # Only the last 4-character group can carry padding bits; it alone decides canonical form.
    last = b64[-4:]
    if base64.b64encode(base64.b64decode(last)).decode("ascii") != last:
        raise error()
    return Versioned(int(match.group(1)), body)
