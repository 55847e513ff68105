"""Organisations, projects and principals: who owns keys and who uses them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum


@dataclass(frozen=True, slots=True)
class Organisation:
    identity: str
    slug: str
    name: str
    kms_enabled: bool
    created_at: datetime
    object_version: int
    #: When the organisation was crypto-shredded (its KEK destroyed); it holds no keys since.
    shredded_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Project:
    identity: str
    organisation_identity: str
    slug: str
    name: str
    created_at: datetime


class PrincipalKind(StrEnum):
    USER = "user"
    SERVICE_ACCOUNT = "service_account"


@dataclass(frozen=True, slots=True)
class Principal:
    identity: str
    kind: PrincipalKind
    name: str
    platform_admin: bool
    created_at: datetime
    #: A service account's organisation; ``None`` for users.
    organisation_identity: str | None = None


@dataclass(frozen=True, slots=True)
class TokenInfo:
    """What is known of a token: never the token itself, which is shown once at creation."""

    identity: str
    principal_identity: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    #: 1 when made, 2 once revoked (the storage barrier: docs/security.md).
    object_version: int = 1
    #: A platform administrator's token (not a service account's).
    platform: bool = False

    def usable(self, now: datetime) -> bool:
        return self.revoked_at is None and (self.expires_at is None or now < self.expires_at)
