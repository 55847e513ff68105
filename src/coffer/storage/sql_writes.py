"""The statements of the writes to keys (``coffer.storage.changes`` applies them) and the
store's own transaction."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.expression import Executable

from coffer.domain.keys import Key, KeyStatus
from coffer.errors import Conflict
from coffer.storage import schema

ORG_SCOPE = ""


def project_column(project_identity: str | None) -> str:
    """A key's project as stored: ``""`` for organisation-scoped keys."""
    return project_identity if project_identity is not None else ORG_SCOPE


def _mutable_columns(key: Key) -> dict[str, Any]:
    """The columns of a key row that its lifecycle changes."""
    return {
        "status": key.status.value,
        "key_rotation_enabled": key.key_rotation_enabled,
        "rotation_period_days": key.rotation_period_days,
        "latest_version": key.latest_version,
        "min_decryption_version": key.min_decryption_version,
        "deletion_scheduled_at": key.deletion_scheduled_at,
        "next_rotation_at": key.rotation_due_at,
        "updated_at": key.updated_at,
        "object_version": key.object_version,
    }


class SqlTransaction:
    """One transaction of ``SqlStore`` (what the store's own maintenance writes run in)."""

    def __init__(self, connection: AsyncConnection) -> None:
        self._conn = connection

    @property
    def connection(self) -> AsyncConnection:
        return self._conn


# --- statements of the changes (storage/changes.py) ------------------------------------------

UPDATED_ELSEWHERE = "the key was changed by another request; retry"
CHANGED_SINCE_READ = "the key changed since it was read"


def expect_one(result: Any, message: str) -> None:
    if result.rowcount != 1:
        raise Conflict(message)


def key_insert_statement(key: Key, mac: bytes) -> Executable:
    return schema.keys.insert().values(
        identity=key.identity,
        organisation_identity=key.organisation_identity,
        region=key.region,
        project_identity=project_column(key.project_identity),
        name=key.name,
        slug=key.slug,
        description=key.description,
        labels=dict(key.labels),
        annotations=dict(key.annotations),
        key_type=key.key_type.value,
        imported=key.imported,
        export_allowed=key.export_allowed,
        allow_rotation=key.allow_rotation,
        created_at=key.created_at,
        mac=mac,
        **_mutable_columns(key),
    )


def add_version_statement(key: Key, version: int, wrapped: bytes) -> Executable:
    created = next(v.created_at for v in key.versions if v.version == version)
    return schema.key_versions.insert().values(
        key_identity=key.identity, version=version, wrapped_material=wrapped, created_at=created
    )


def update_key_statement(key: Key, mac: bytes) -> Executable:
    """The key's lifecycle fields and MAC, if the row is still at ``key.object_version - 1``."""
    table = schema.keys
    return (
        table.update()
        .where(table.c.identity == key.identity, table.c.object_version == key.object_version - 1)
        .values(mac=mac, **_mutable_columns(key))
    )


def delete_versions_statement(key: Key) -> Executable:
    return schema.key_versions.delete().where(schema.key_versions.c.key_identity == key.identity)


def delete_key_statement(key: Key) -> Executable:
    """Only the key as it was read, still pending deletion: for a key whose deletion was
    cancelled meanwhile, or that another node purged, the transaction rolls back whole."""
    keys = schema.keys
    return keys.delete().where(
        keys.c.identity == key.identity,
        keys.c.object_version == key.object_version,
        keys.c.status == KeyStatus.PENDING_DELETION.value,
    )
