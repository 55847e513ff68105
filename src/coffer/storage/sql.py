"""``Store`` on SQLAlchemy Core, one code path for SQLite and PostgreSQL; writes: ``sql_writes``."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy import Select, and_, func, or_, select, text
from sqlalchemy.engine import Connection, Engine, Row
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from coffer.domain.keys import Key, KeyFilter, KeyStatus, KeyVersion
from coffer.domain.keytypes import KeyType
from coffer.domain.permissions import RoleBinding, ScopeKind
from coffer.domain.tenants import Organisation, Principal, PrincipalKind, Project
from coffer.errors import Conflict, Unavailable
from coffer.storage import schema
from coffer.storage.repositories import TokenRecord
from coffer.storage.sql_writes import SqlTransaction, project_column

T = TypeVar("T")


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


def _key(row: Row[Any], versions: Sequence[KeyVersion]) -> Key:
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


def _versions_of(rows: Sequence[Row[Any]]) -> Select[Any]:
    """The query of the versions of the keys in ``rows``."""
    table = schema.key_versions
    return (
        select(table.c.key_identity, table.c.version, table.c.created_at)
        .where(table.c.key_identity.in_([row.identity for row in rows]))
        .order_by(table.c.key_identity, table.c.version)
    )


def _keys_of(rows: Sequence[Row[Any]], version_rows: Iterable[Row[Any]]) -> list[Key]:
    versions: dict[str, list[KeyVersion]] = defaultdict(list)
    for v in version_rows:
        versions[v.key_identity].append(KeyVersion(v.version, utc(v.created_at)))
    return [_key(row, versions[row.identity]) for row in rows]


class SqlStore:
    """The SQL implementation of ``Store``.

    ``read_engine``, given on SQLite, serves the reads of a key's cold path (``find_key``,
    ``wrapped_version``): one thread hop for the whole read instead of aiosqlite's hop per
    cursor call (about twenty for a key and its versions, ~3 ms on an idle machine; 0.1 ms of
    SQL). docs/benchmarks.md has the measurement.
    """

    def __init__(self, engine: AsyncEngine, read_engine: Engine | None = None) -> None:
        self._engine = engine
        self._read_engine = read_engine

    @property
    def engine(self) -> AsyncEngine:
        return self._engine

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[SqlTransaction]:
        try:
            async with self._engine.begin() as connection:
                yield SqlTransaction(connection)
        except IntegrityError:
            raise Conflict() from None
        except (DBAPIError, PoolTimeout) as exc:
            raise Unavailable() from exc

    @asynccontextmanager
    async def reading(self) -> AsyncIterator[AsyncConnection]:
        try:
            async with self._engine.connect() as connection:
                yield connection
        except (DBAPIError, PoolTimeout) as exc:
            raise Unavailable() from exc

    async def _read_in_thread(self, work: Callable[[Connection], T], *, snapshot: bool) -> T:
        """``work`` on a connection of ``read_engine``, in a thread; with ``snapshot``, its
        statements share one read transaction (a single statement is one by itself)."""
        assert self._read_engine is not None
        engine = self._read_engine

        def run() -> T:
            with engine.connect() as conn:
                if not snapshot:
                    return work(conn)
                conn.exec_driver_sql("BEGIN")
                try:
                    return work(conn)
                finally:
                    conn.exec_driver_sql("ROLLBACK")

        try:
            return await asyncio.to_thread(run)
        except (DBAPIError, PoolTimeout) as exc:
            raise Unavailable() from exc

    async def close(self) -> None:
        await self._engine.dispose()
        if self._read_engine is not None:
            self._read_engine.dispose()

    async def ping(self) -> None:
        async with self.reading() as conn:
            await conn.execute(text("SELECT 1"))

    async def find_organisation(self, ref: str) -> Organisation | None:
        table = schema.organisations
        async with self.reading() as conn:
            rows = (
                await conn.execute(
                    select(table).where(or_(table.c.identity == ref, table.c.slug == ref))
                )
            ).all()
        rows = identity_first(rows, ref)
        return organisation_of(rows[0]) if rows else None

    async def wrapped_kek(self, organisation_identity: str) -> bytes | None:
        table = schema.organisation_keks
        async with self.reading() as conn:
            blob = await conn.scalar(
                select(table.c.wrapped_kek).where(
                    table.c.organisation_identity == organisation_identity
                )
            )
        return bytes(blob) if blob is not None else None

    async def find_project(self, organisation_identity: str, ref: str) -> Project | None:
        table = schema.projects
        async with self.reading() as conn:
            rows = (
                await conn.execute(
                    select(table).where(
                        table.c.organisation_identity == organisation_identity,
                        or_(table.c.identity == ref, table.c.slug == ref),
                    )
                )
            ).all()
        rows = identity_first(rows, ref)
        return project_of(rows[0]) if rows else None

    async def find_token(self, digest: bytes) -> TokenRecord | None:
        tokens, principals = schema.tokens, schema.principals
        query = (
            select(
                tokens.c.identity.label("token_identity"),
                tokens.c.expires_at,
                tokens.c.revoked_at,
                principals,
            )
            .join(principals, principals.c.identity == tokens.c.principal_identity)
            .where(tokens.c.digest == digest)
        )
        async with self.reading() as conn:
            row = (await conn.execute(query)).first()
        if row is None:
            return None
        return TokenRecord(
            identity=row.token_identity,
            principal=principal_of(row),
            expires_at=utc_or_none(row.expires_at),
            revoked_at=utc_or_none(row.revoked_at),
        )

    async def bindings(
        self, principal_identity: str, organisation_identity: str
    ) -> Sequence[RoleBinding]:
        table = schema.role_bindings
        async with self.reading() as conn:
            rows = (
                await conn.execute(
                    select(table).where(
                        table.c.principal_identity == principal_identity,
                        table.c.organisation_identity == organisation_identity,
                    )
                )
            ).all()
        return [binding_of(row) for row in rows]

    async def _with_versions(self, conn: AsyncConnection, rows: Sequence[Row[Any]]) -> list[Key]:
        if not rows:
            return []
        return _keys_of(rows, await conn.execute(_versions_of(rows)))

    async def find_key(
        self,
        organisation_identity: str,
        region: str,
        project_identity: str | None,
        ref: str,
    ) -> Key | None:
        table = schema.keys
        query = select(table).where(
            table.c.organisation_identity == organisation_identity,
            table.c.region == region,
            table.c.project_identity == project_column(project_identity),
            or_(table.c.identity == ref, table.c.slug == ref),
        )
        if self._read_engine is not None:

            def read(conn: Connection) -> list[Key]:
                rows = identity_first(conn.execute(query).all(), ref)[:1]
                return _keys_of(rows, conn.execute(_versions_of(rows))) if rows else []

            found = await self._read_in_thread(read, snapshot=True)
        else:
            async with self.reading() as conn:
                rows = (await conn.execute(query)).all()
                found = await self._with_versions(conn, identity_first(rows, ref)[:1])
        return found[0] if found else None

    async def list_keys(
        self,
        organisation_identity: str,
        region: str,
        project_identity: str | None,
        key_filter: KeyFilter,
    ) -> Sequence[Key]:
        table = schema.keys
        conditions = [
            table.c.organisation_identity == organisation_identity,
            table.c.region == region,
            table.c.project_identity == project_column(project_identity),
        ]
        if key_filter.identity is not None:
            conditions.append(table.c.identity == key_filter.identity)
        if key_filter.name is not None:
            conditions.append(table.c.name == key_filter.name)
        if key_filter.slug is not None:
            conditions.append(table.c.slug == key_filter.slug)
        if key_filter.status is not None:
            conditions.append(table.c.status == key_filter.status.value)
        if key_filter.key_type is not None:
            conditions.append(table.c.key_type == key_filter.key_type.value)
        query = (
            select(table).where(and_(*conditions)).order_by(table.c.created_at, table.c.identity)
        )
        async with self.reading() as conn:
            rows = (await conn.execute(query)).all()
            if key_filter.labels:
                wanted = key_filter.labels.items()
                rows = [row for row in rows if wanted <= dict(row.labels).items()]
            return await self._with_versions(conn, rows)

    async def count_keys(
        self, organisation_identity: str, project_identity: str | None
    ) -> Mapping[tuple[str, KeyStatus], int]:
        table = schema.keys
        query = (
            select(table.c.region, table.c.status, func.count())
            .where(
                table.c.organisation_identity == organisation_identity,
                table.c.project_identity == project_column(project_identity),
            )
            .group_by(table.c.region, table.c.status)
        )
        async with self.reading() as conn:
            rows = (await conn.execute(query)).all()
        return {(region, KeyStatus(status)): count for region, status, count in rows}

    async def _keys_where(self, *conditions: Any, limit: int) -> list[Key]:
        table = schema.keys
        query = select(table).where(*conditions).order_by(table.c.identity).limit(limit)
        async with self.reading() as conn:
            rows = (await conn.execute(query)).all()
            return await self._with_versions(conn, rows)

    async def keys_due_for_rotation(self, now: datetime, limit: int) -> Sequence[Key]:
        table = schema.keys
        return await self._keys_where(
            table.c.next_rotation_at <= now,
            table.c.status == KeyStatus.ACTIVE.value,
            limit=limit,
        )

    async def keys_due_for_purge(self, now: datetime, limit: int) -> Sequence[Key]:
        table = schema.keys
        return await self._keys_where(
            table.c.deletion_scheduled_at <= now,
            table.c.status == KeyStatus.PENDING_DELETION.value,
            limit=limit,
        )

    async def wrapped_version(self, key_identity: str, version: int) -> bytes | None:
        table = schema.key_versions
        query = select(table.c.wrapped_material).where(
            table.c.key_identity == key_identity, table.c.version == version
        )
        if self._read_engine is not None:
            blob = await self._read_in_thread(lambda conn: conn.scalar(query), snapshot=False)
        else:
            async with self.reading() as conn:
                blob = await conn.scalar(query)
        return bytes(blob) if blob is not None else None

    async def wrapped_wrapping_key(self, region: str) -> bytes | None:
        table = schema.wrapping_keys
        async with self.reading() as conn:
            blob = await conn.scalar(
                select(table.c.wrapped_private).where(table.c.region == region)
            )
        return bytes(blob) if blob is not None else None
