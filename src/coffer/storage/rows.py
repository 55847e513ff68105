"""Mapping stored rows to domain objects, shared by the reads (``sql``) and the writes."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.engine import Row

from coffer.domain.keys import Key, KeyStatus, KeyVersion
from coffer.domain.keytypes import KeyType
from coffer.domain.permissions import RoleBinding, ScopeKind
from coffer.domain.tenants import Organisation, Principal, PrincipalKind, Project
from coffer.storage import schema


def utc(value: datetime) -> datetime:
    # SQLite hands back naive datetimes; every stored time is UTC.
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def utc_or_none(value: datetime | None) -> datetime | None:
    return None if value is None else utc(value)


def identity_first(rows: Sequence[Row[Any]], ref: str) -> list[Row[Any]]:
    """Rows matched by identity or slug, the identity match first (it wins over a slug)."""
    return sorted(rows, key=lambda row: row.identity != ref)


def organisation_of(row: Row[Any]) -> Organisation:
    return Organisation(
        identity=row.identity,
        slug=row.slug,
        name=row.name,
        kms_enabled=row.kms_enabled,
        created_at=utc(row.created_at),
        object_version=row.object_version,
        shredded_at=utc_or_none(row.shredded_at),
    )


def project_of(row: Row[Any]) -> Project:
    return Project(
        identity=row.identity,
        organisation_identity=row.organisation_identity,
        slug=row.slug,
        name=row.name,
        created_at=utc(row.created_at),
    )


def binding_of(row: Row[Any]) -> RoleBinding:
    return RoleBinding(
        identity=row.identity,
        principal_identity=row.principal_identity,
        organisation_identity=row.organisation_identity,
        policy=row.policy,
        scope_kind=ScopeKind(row.scope_kind),
        scope_identity=row.scope_identity,
    )


def principal_of(row: Row[Any]) -> Principal:
    return Principal(
        identity=row.identity,
        kind=PrincipalKind(row.kind),
        name=row.name,
        platform_admin=row.platform_admin,
        created_at=utc(row.created_at),
        organisation_identity=row.organisation_identity,
    )


def key_of(row: Row[Any], versions: Sequence[KeyVersion]) -> Key:
    return Key(
        identity=row.identity,
        organisation_identity=row.organisation_identity,
        region=row.region,
        project_identity=row.project_identity or None,
        name=row.name,
        slug=row.slug,
        description=row.description,
        key_type=KeyType(row.key_type),
        status=KeyStatus(row.status),
        export_allowed=row.export_allowed,
        imported=row.imported,
        allow_rotation=row.allow_rotation,
        key_rotation_enabled=row.key_rotation_enabled,
        rotation_period_days=row.rotation_period_days,
        latest_version=row.latest_version,
        min_decryption_version=row.min_decryption_version,
        versions=tuple(versions),
        created_at=utc(row.created_at),
        updated_at=utc(row.updated_at),
        object_version=row.object_version,
        deletion_scheduled_at=utc_or_none(row.deletion_scheduled_at),
        labels=dict(row.labels),
        annotations=dict(row.annotations),
    )


def versions_of(rows: Sequence[Row[Any]]) -> Select[Any]:
    """The query of the versions of the keys in ``rows``."""
    table = schema.key_versions
    return (
        select(table.c.key_identity, table.c.version, table.c.created_at)
        .where(table.c.key_identity.in_([row.identity for row in rows]))
        .order_by(table.c.key_identity, table.c.version)
    )


def keys_of(rows: Sequence[Row[Any]], version_rows: Iterable[Row[Any]]) -> list[Key]:
    versions: dict[str, list[KeyVersion]] = defaultdict(list)
    for v in version_rows:
        versions[v.key_identity].append(KeyVersion(v.version, utc(v.created_at)))
    return [key_of(row, versions[row.identity]) for row in rows]
