"""API tokens: 256 random bits, shown once, stored only as a SHA-256 digest.

A token is looked up by its digest. The digest of a 256-bit random token reveals nothing useful,
and the lookup by digest is an index probe: no comparison of secret bytes happens in Python.
"""

from __future__ import annotations

import hashlib
import secrets

TOKEN_PREFIX = "coffer_"  # noqa: S105 (a prefix, not a secret)
TOKEN_BYTES = 32


def new_token() -> str:
    """A fresh bearer token, e.g. ``coffer_<43 url-safe base64 characters>``."""
    return TOKEN_PREFIX + secrets.token_urlsafe(TOKEN_BYTES)


def token_digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()
