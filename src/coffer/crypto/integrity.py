"""Row MACs, keyed token digests and audit links: HMAC-SHA-256 (RFC 2104) under purpose keys.

A row MAC covers the canonical form of a row's covered fields (``coffer.domain.integrity``); a
token's stored digest is ``HMAC(k_tokens, SHA-256(token))`` — keyed, so that a copy of the
database gives no way to test guesses of a token offline, and a writer of the database cannot
compute the digest of a token of its choosing. (The SHA-256 inside lets installations made before
keyed digests move their stored SHA-256 digests over without knowing the tokens.)
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

from coffer.domain.integrity import canonical


def token_sha256(token: str) -> bytes:
    """A token's plain SHA-256: what the server's token caches are keyed by, in memory only (it
    is never stored), so that a warm request computes no HMAC."""
    return hashlib.sha256(token.encode()).digest()


class RowMacs:
    __slots__ = ("_key",)

    def __init__(self, key: bytes) -> None:
        self._key = key

    def __repr__(self) -> str:
        return "<RowMacs redacted>"

    def of(self, table: str, values: tuple[Any, ...]) -> bytes:
        return hmac.digest(self._key, canonical(table, values), "sha256")

    def verify(self, table: str, values: tuple[Any, ...], mac: bytes | None) -> bool:
        return mac is not None and hmac.compare_digest(self.of(table, values), mac)


class TokenDigests:
    __slots__ = ("_key",)

    def __init__(self, key: bytes) -> None:
        self._key = key

    def __repr__(self) -> str:
        return "<TokenDigests redacted>"

    def of(self, token: str) -> bytes:
        return self.of_unkeyed(token_sha256(token))

    def of_unkeyed(self, sha256_digest: bytes) -> bytes:
        """The keyed digest of a token whose plain SHA-256 is known (a stored digest of before)."""
        return hmac.digest(self._key, sha256_digest, "sha256")


class AuditLinks:
    """The audit chain's keyed links: ``link_n = HMAC(k_audit, link_{n-1} ‖ canonical_n)``. A
    writer of the database, without the key, cannot link an edited or forged record."""

    __slots__ = ("_key",)

    def __init__(self, key: bytes) -> None:
        self._key = key

    def __repr__(self) -> str:
        return "<AuditLinks redacted>"

    def link(self, prev: bytes, record: bytes) -> bytes:
        return hmac.digest(self._key, prev + record, "sha256")
