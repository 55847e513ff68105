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
