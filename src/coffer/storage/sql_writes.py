"""``Transaction`` on SQLAlchemy Core: every write, inside one database transaction."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.expression import Executable

from coffer.domain.keys import Key, KeyStatus
from coffer.domain.permissions import RoleBinding
from coffer.domain.seal import Wrapped
from coffer.domain.tenants import Organisation, Principal, Project
from coffer.errors import Conflict, NotFound, OrganisationShredded
from coffer.storage import schema
from coffer.storage.repositories import KeyWrite
from coffer.storage.rows import keys_of, versions_of
from coffer.storage.sql_root import guard_generation

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
    def __init__(self, connection: AsyncConnection) -> None:
        self._conn = connection

    @property
    def connection(self) -> AsyncConnection:
        return self._conn

    async def add_organisation(self, organisation: Organisation, wrapped_kek: Wrapped) -> None:
        await self._conn.execute(
            schema.organisations.insert().values(
                identity=organisation.identity,
                slug=organisation.slug,
                name=organisation.name,
                kms_enabled=organisation.kms_enabled,
                created_at=organisation.created_at,
                object_version=organisation.object_version,
            )
        )
        await self._conn.execute(
            schema.organisation_keks.insert().values(
                organisation_identity=organisation.identity,
                wrapped_kek=wrapped_kek.blob,
                root_generation=wrapped_kek.generation,
                created_at=organisation.created_at,
            )
        )
        await self._conn.run_sync(guard_generation, wrapped_kek.generation)

    async def add_project(self, project: Project) -> None:
        await self._conn.execute(
            schema.projects.insert().values(
                identity=project.identity,
                organisation_identity=project.organisation_identity,
                slug=project.slug,
                name=project.name,
                created_at=project.created_at,
            )
        )

    async def add_principal(self, principal: Principal) -> None:
        await self._conn.execute(
            schema.principals.insert().values(
                identity=principal.identity,
                kind=principal.kind.value,
                name=principal.name,
                platform_admin=principal.platform_admin,
                created_at=principal.created_at,
                organisation_identity=principal.organisation_identity,
            )
        )

    async def add_token(
        self,
        identity: str,
        principal_identity: str,
        digest: bytes,
        created_at: datetime,
        expires_at: datetime | None,
    ) -> None:
        await self._conn.execute(
            schema.tokens.insert().values(
                identity=identity,
                principal_identity=principal_identity,
                digest=digest,
                created_at=created_at,
                expires_at=expires_at,
            )
        )

    async def add_binding(self, binding: RoleBinding, created_at: datetime) -> None:
        await self._conn.execute(
            schema.role_bindings.insert().values(
                identity=binding.identity,
                principal_identity=binding.principal_identity,
                organisation_identity=binding.organisation_identity,
                policy=binding.policy,
                scope_kind=binding.scope_kind.value,
                scope_identity=binding.scope_identity,
                created_at=created_at,
            )
        )

    async def revoke_token(self, identity: str, at: datetime) -> None:
        table = schema.tokens
        await self._conn.execute(
            table.update()
            .where(table.c.identity == identity, table.c.revoked_at.is_(None))
            .values(revoked_at=at)
        )

    async def remove_binding(self, identity: str) -> None:
        table = schema.role_bindings
        await self._conn.execute(table.delete().where(table.c.identity == identity))

    async def set_kms_enabled(self, organisation: Organisation) -> None:
        """Store ``organisation``'s feature gate; ``Conflict`` if it changed since it was read."""
        table = schema.organisations
        result = await self._conn.execute(
            table.update()
            .where(
                table.c.identity == organisation.identity,
                table.c.object_version == organisation.object_version - 1,
            )
            .values(
                kms_enabled=organisation.kms_enabled, object_version=organisation.object_version
            )
        )
        if result.rowcount != 1:
            raise Conflict("the organisation was changed by another request; retry")

    async def add_wrapping_key(self, region: str, wrapped: Wrapped, created_at: datetime) -> None:
        await self._conn.execute(
            schema.wrapping_keys.insert().values(
                region=region,
                wrapped_private=wrapped.blob,
                root_generation=wrapped.generation,
                created_at=created_at,
            )
        )
        await self._conn.run_sync(guard_generation, wrapped.generation)

    async def shred_organisation(self, identity: str, at: datetime) -> Sequence[Key]:
        organisations, keys, versions = schema.organisations, schema.keys, schema.key_versions
        # The organisation row first: its lock orders this against key creations (add_key).
        marked = await self._conn.execute(
            organisations.update()
            .where(organisations.c.identity == identity, organisations.c.shredded_at.is_(None))
            .values(shredded_at=at)
        )
        if marked.rowcount != 1:
            exists = await self._conn.scalar(
                select(organisations.c.identity).where(organisations.c.identity == identity)
            )
            if exists is None:
                raise NotFound("organisation not found")
            raise Conflict("this organisation was shredded already")
        rows = (
            await self._conn.execute(select(keys).where(keys.c.organisation_identity == identity))
        ).all()
        destroyed = await self._conn.run_sync(
            lambda conn: keys_of(rows, conn.execute(versions_of(rows))) if rows else []
        )
        owned = select(keys.c.identity).where(keys.c.organisation_identity == identity)
        await self._conn.execute(versions.delete().where(versions.c.key_identity.in_(owned)))
        await self._conn.execute(keys.delete().where(keys.c.organisation_identity == identity))
        await self._conn.execute(
            schema.organisation_keks.delete().where(
                schema.organisation_keks.c.organisation_identity == identity
            )
        )
        return destroyed

    async def add_key(self, key: Key, wrapped_versions: Mapping[int, bytes]) -> None:
        organisations = schema.organisations
        # Held until commit: a shredding of the organisation waits for this key, or this key
        # sees the organisation shredded (sql_root explains the pattern).
        shredded = await self._conn.execute(
            select(organisations.c.shredded_at)
            .where(organisations.c.identity == key.organisation_identity)
            .with_for_update(read=True)
        )
        if shredded.scalar() is not None:
            raise OrganisationShredded()
        await self._conn.execute(
            schema.keys.insert().values(
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
                **_mutable_columns(key),
            )
        )
        for version, blob in wrapped_versions.items():
            await self.add_version(key, version, blob)

    async def add_version(self, key: Key, version: int, wrapped: bytes) -> None:
        await self._conn.execute(add_version_statement(key, version, wrapped))


# --- statements shared with the audit writer, which applies lifecycle changes in the same
# --- transaction as their audit records (storage/sql_audit.py)

UPDATED_ELSEWHERE = "the key was changed by another request; retry"
CHANGED_SINCE_READ = "the key changed since it was read"


def _expect_one(result: Any, message: str) -> None:
    if result.rowcount != 1:
        raise Conflict(message)


def add_version_statement(key: Key, version: int, wrapped: bytes) -> Executable:
    created = next(v.created_at for v in key.versions if v.version == version)
    return schema.key_versions.insert().values(
        key_identity=key.identity, version=version, wrapped_material=wrapped, created_at=created
    )


def update_key_statement(key: Key) -> Executable:
    """The key's lifecycle fields, if the row is still at ``key.object_version - 1``."""
    table = schema.keys
    return (
        table.update()
        .where(table.c.identity == key.identity, table.c.object_version == key.object_version - 1)
        .values(**_mutable_columns(key))
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


def apply_key_write(conn: Connection, write: KeyWrite) -> None:
    """``write`` on a synchronous connection; ``Conflict`` if the key moved since it was read."""
    if write.update is not None:
        _expect_one(conn.execute(update_key_statement(write.update)), UPDATED_ELSEWHERE)
        if write.new_version is not None:
            version, wrapped = write.new_version
            conn.execute(add_version_statement(write.update, version, wrapped))
    if write.delete is not None:
        conn.execute(delete_versions_statement(write.delete))
        _expect_one(conn.execute(delete_key_statement(write.delete)), CHANGED_SINCE_READ)
