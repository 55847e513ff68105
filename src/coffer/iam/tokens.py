"""API tokens: 256 random bits, shown once, stored only as a keyed digest.

A token is looked up by its digest, ``HMAC(k_tokens, SHA-256(token))`` under a purpose key of
the root of trust (``coffer.crypto.integrity.TokenDigests``): the lookup is an index probe, no
comparison of secret bytes happens in Python, and a writer of the database cannot compute the
digest of a token of its choosing.
"""

from __future__ import annotations

import secrets

TOKEN_PREFIX = "coffer_"  # noqa: S105 (a prefix, not a secret)
TOKEN_BYTES = 32


def new_token() -> str:
    """A fresh bearer token, e.g. ``coffer_<43 url-safe base64 characters>``."""
    return TOKEN_PREFIX + secrets.token_urlsafe(TOKEN_BYTES)
