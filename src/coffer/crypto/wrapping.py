"""Key wrapping for the key hierarchy (ARCHITECTURE §2).

Every stored key is wrapped with AES-256-GCM under the key one level up, with associated data
that names the row it belongs to. A wrapped blob copied to another row (another organisation,
key, version or type) fails its tag check and never unwraps.

Blob format: format byte (1) ‖ nonce (12) ‖ ciphertext ‖ tag (16).
"""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from coffer.errors import KeyIntegrityError

FORMAT_V1 = b"\x01"
WRAPPING_KEY_BYTES = 32
_NONCE_BYTES = 12


def _aad(*parts: str) -> bytes:
    # Identities and type names never contain NUL, so NUL-joining is unambiguous.
    return "\x00".join(parts).encode("utf-8")


def kek_aad(organisation_identity: str) -> bytes:
    """Associated data of an organisation KEK wrapped by the root key."""
    return _aad("coffer/organisation-kek/v1", organisation_identity)


def organisation_wrapping_key_aad(
    identity: str,
    organisation_identity: str,
    region_identity: str,
    number: int,
    created_at: str,
    expires_at: str,
) -> bytes:
    """Associated data of an organisation's BYOK wrapping key in one region, wrapped by the
    organisation's KEK: every column of its row (times as ISO 8601 UTC)."""
    return _aad(
        "coffer/byok-wrapping-key/v2", identity, organisation_identity, region_identity,
        str(number), created_at, expires_at,
    )  # fmt: skip


def purpose_key_aad(purpose: str) -> bytes:
    """Associated data of a purpose key (``coffer.service.purposes``) wrapped by the root key."""
    return _aad("coffer/purpose-key/v1", purpose)


def key_version_aad(
    organisation_identity: str, key_identity: str, version: int, key_type: str
) -> bytes:
    """Associated data of one key version's material wrapped by its organisation's KEK."""
    return _aad(
        "coffer/key-version/v1",
        organisation_identity,
        key_identity,
        str(version),
        key_type,
    )


class Wrapper:
    """Wraps and unwraps under one 256-bit key."""

    __slots__ = ("_aead",)

    def __init__(self, key: bytes) -> None:
        if len(key) != WRAPPING_KEY_BYTES:
            raise ValueError("a wrapping key is 32 bytes")
        self._aead = AESGCM(key)

    def __repr__(self) -> str:
        return "<Wrapper redacted>"

    def wrap(self, plaintext: bytes, aad: bytes) -> bytes:
        nonce = os.urandom(_NONCE_BYTES)
        return FORMAT_V1 + nonce + self._aead.encrypt(nonce, plaintext, FORMAT_V1 + aad)

    def unwrap(self, blob: bytes, aad: bytes) -> bytes:
        if len(blob) < 1 + _NONCE_BYTES + 16 or blob[:1] != FORMAT_V1:
            raise KeyIntegrityError()
        nonce = blob[1 : 1 + _NONCE_BYTES]
        try:
            return self._aead.decrypt(nonce, blob[1 + _NONCE_BYTES :], FORMAT_V1 + aad)
        except InvalidTag:
            raise KeyIntegrityError() from None
