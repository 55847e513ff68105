"""Identities: a type prefix and 20 lowercase base32 characters (100 random bits)."""

from __future__ import annotations

import base64
import hashlib
import re
import secrets

KEY_PREFIX = "kms"
ORGANISATION_PREFIX = "org"
PROJECT_PREFIX = "prj"
USER_PREFIX = "usr"
SERVICE_ACCOUNT_PREFIX = "sa"
TOKEN_PREFIX = "tok"  # noqa: S105 (an identity prefix, not a secret)
BINDING_PREFIX = "rb"
INSTALLATION_PREFIX = "ins"

_SUFFIX = re.compile(r"[a-z2-7]{20}")


def new_identity(prefix: str) -> str:
    """A fresh identity such as ``kms-3fz6q2mz7vb4kcdsl5xa``; identities are never reused."""
    suffix = base64.b32encode(secrets.token_bytes(13)).decode("ascii")[:20].lower()
    return f"{prefix}-{suffix}"


def looks_like_identity(value: str, prefix: str) -> bool:
    head, sep, suffix = value.partition("-")
    return sep == "-" and head == prefix and _SUFFIX.fullmatch(suffix) is not None


def user_identity(issuer: str, subject: str) -> str:
    """The stable identity of the user an OpenID Connect issuer calls ``subject``: the same on
    every node and every login, so that role bindings can name users before they first sign in."""
    digest = hashlib.sha256(f"{issuer}\x00{subject}".encode()).digest()
    return f"{USER_PREFIX}-{base64.b32encode(digest).decode('ascii')[:20].lower()}"
