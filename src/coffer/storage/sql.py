"""``Store`` on SQLAlchemy Core, one code path for SQLite and PostgreSQL; writes: ``sql_writes``."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import and_, func, or_, select, text
from sqlalchemy.engine import Connection, Engine, Row
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from coffer.domain.keys import Key, KeyFilter, KeyStatus
from coffer.domain.paging import EVERYTHING, Paged, PageRequest
from coffer.domain.permissions import RoleBinding
from coffer.domain.seal import Installation, RootGeneration, RootWrappedRow, Wrapped
from coffer.domain.tenants import Organisation, Project
from coffer.errors import Conflict
from coffer.storage import schema, sql_root, verified
from coffer.storage.outages import reached, unavailable
from coffer.storage.paging import cut, paged
from coffer.storage.repositories import Integrity, TokenRecord, WrappingKeyRecord
from coffer.storage.rows import (
    identity_first,
    keys_of,
    project_of,
    utc,
    utc_or_none,
    versions_of,
)
from coffer.storage.sql_writes import SqlTransaction, project_column

T = TypeVar("T")
log = logging.getLogger(__name__)


class SqlStore:
    """The SQL implementation of ``Store``.

    ``read_engine``, given on SQLite, serves the reads of a key's cold path (``find_key``,
    ``wrapped_version``): one thread hop for the whole read instead of aiosqlite's hop per
    cursor call (about twenty for a key and its versions, ~3 ms on an idle machine; 0.1 ms of
    SQL). docs/benchmarks.md has the measurement.
    """

    def __init__(
        self, engine: AsyncEngine, integrity: Integrity, read_engine: Engine | None = None
    ) -> None:
        self._engine = engine
        self._integrity = integrity
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
            raise unavailable(exc) from exc
        reached()

    @asynccontextmanager
    async def reading(self) -> AsyncIterator[AsyncConnection]:
        try:
            async with self._engine.connect() as connection:
                yield connection
        except (DBAPIError, PoolTimeout) as exc:
            raise unavailable(exc) from exc
        reached()

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
            found = await asyncio.to_thread(run)
        except (DBAPIError, PoolTimeout) as exc:
            raise unavailable(exc) from exc
        reached()
        return found

    async def close(self) -> None:
        await self._engine.dispose()
        if self._read_engine is not None:
            self._read_engine.dispose()

    async def forget_deleted(self) -> None:
        """Let go of the old copies of deleted and replaced rows where the engine allows: on
        SQLite (``secure_delete`` zeroes a deleted row's bytes in the database file), fold the
        write-ahead log into the file and truncate it, since it still holds the pages as they
        were. PostgreSQL keeps dead row versions until their space is reused, and its WAL as the
        operator archives it: there a destroyed KEK is finished by a root rotation
        (docs/security.md)."""
        if self._engine.dialect.name != "sqlite":
            return
        async with self.reading() as conn:
            busy = (await conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")).first()
        if busy is not None and busy[0]:
            log.warning("the write-ahead log could not be truncated now (a reader holds it)")

    async def ping(self) -> None:
        async with self.reading() as conn:
            await conn.execute(text("SELECT 1"))

    async def find_organisation(self, ref: str) -> Organisation | None:
        table = schema.organisations
        query = select(table).where(or_(table.c.identity == ref, table.c.slug == ref))

        def read(conn: Connection) -> Organisation | None:
            rows = identity_first(conn.execute(query).all(), ref)
            found = verified.organisations(conn, self._integrity, rows, current=True)
            return found[0] if found else None

        return await self._read_sync(read)

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
            select(tokens, *(c.label(f"p_{c.name}") for c in principals.columns))
            .join(principals, principals.c.identity == tokens.c.principal_identity)
            .where(tokens.c.digest == digest)
        )

        def read(conn: Connection) -> TokenRecord | None:
            rows = verified.tokens(conn, self._integrity, conn.execute(query).all(), current=True)
            if not rows:
                return None
            owner = verified.principal(self._integrity, rows[0], "p_")
            if owner is None:
                return None
            return TokenRecord(
                identity=rows[0].identity,
                principal=owner,
                expires_at=utc_or_none(rows[0].expires_at),
                revoked_at=utc_or_none(rows[0].revoked_at),
            )

        return await self._read_sync(read)

    async def bindings(
        self, principal_identity: str, organisation_identity: str
    ) -> Sequence[RoleBinding]:
        table = schema.role_bindings
        query = select(table).where(
            table.c.principal_identity == principal_identity,
            table.c.organisation_identity == organisation_identity,
        )
        return await self._read_sync(
            lambda conn: verified.bindings(
                conn, self._integrity, conn.execute(query).all(), current=True
            )
        )

    async def _with_versions(self, conn: AsyncConnection, rows: Sequence[Row[Any]]) -> list[Key]:
        if not rows:
            return []
        return keys_of(rows, await conn.execute(versions_of(rows)))

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

        def read(conn: Connection) -> list[Key]:
            rows = verified.key_rows(conn, self._integrity, conn.execute(query).all(), current=True)
            rows = identity_first(rows, ref)[:1]
            return keys_of(rows, conn.execute(versions_of(rows))) if rows else []

        if self._read_engine is not None:
            found = await self._read_in_thread(read, snapshot=True)
        else:
            found = await self._read_sync(read)
        return found[0] if found else None

    async def list_keys(
        self,
        organisation_identity: str,
        region: str,
        project_identity: str | None,
        key_filter: KeyFilter,
        page: PageRequest = EVERYTHING,
    ) -> Paged[Key]:
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
        query = paged(select(table).where(and_(*conditions)), table.c.created_at,
                      table.c.identity, page)  # fmt: skip
        async with self.reading() as conn:
            rows, next_after = cut((await conn.execute(query)).all(), page)
            rows = await conn.run_sync(
                lambda c: verified.key_rows(c, self._integrity, rows, current=False)
            )
            if key_filter.labels:
                wanted = key_filter.labels.items()
                rows = [row for row in rows if wanted <= dict(row.labels).items()]
            return Paged(await self._with_versions(conn, rows), next_after)

    async def reserve_encryptions(
        self, key_identity: str, version: int, wanted: int, budget: int
    ) -> int:
        return (await self.reserve_encryptions_of([(key_identity, version)], wanted, budget))[0]

    async def reserve_encryptions_of(
        self, versions: Sequence[tuple[str, int]], wanted: int, budget: int
    ) -> list[int]:
        table = schema.key_versions
        grants = []
        async with self.transaction() as tx:
            for key_identity, version in versions:
                this = (table.c.key_identity == key_identity) & (table.c.version == version)
                # One statement each, atomic on both engines: a whole block if it fits, else one.
                for grant in dict.fromkeys((wanted, 1)):
                    query = (
                        table.update()
                        .where(this, table.c.encryptions + grant <= budget)
                        .values(encryptions=table.c.encryptions + grant)
                    )
                    if (await tx.connection.execute(query)).rowcount == 1:
                        grants.append(grant)
                        break
                else:
                    grants.append(0)
        return grants

    async def encryption_counts(self, key_identity: str) -> Mapping[int, int]:
        table = schema.key_versions
        query = select(table.c.version, table.c.encryptions).where(
            table.c.key_identity == key_identity
        )
        async with self.reading() as conn:
            return {int(v): int(n) for v, n in (await conn.execute(query)).all()}

    async def count_organisation_keys(self, organisation_identity: str) -> int:
        table = schema.keys
        query = select(func.count()).where(table.c.organisation_identity == organisation_identity)
        async with self.reading() as conn:
            return int(await conn.scalar(query) or 0)

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

    async def _keys_where(
        self, *conditions: Any, limit: int, after: str
    ) -> tuple[list[Key], str | None]:
        table = schema.keys
        query = (
            select(table)
            .where(*conditions, table.c.identity > after)
            .order_by(table.c.identity)
            .limit(limit)
        )
        async with self.reading() as conn:
            rows = (await conn.execute(query)).all()
            last = str(rows[-1].identity) if rows else None
            # The scheduler acts on these: a forged or rolled-back row (one that would have a
            # key purged) is left out.
            rows = await conn.run_sync(
                lambda c: verified.key_rows(c, self._integrity, rows, current=True)
            )
            return await self._with_versions(conn, rows), last

    async def keys_due_for_rotation(
        self, now: datetime, limit: int, after: str = ""
    ) -> tuple[Sequence[Key], str | None]:
        table = schema.keys
        return await self._keys_where(
            table.c.next_rotation_at <= now,
            table.c.status == KeyStatus.ACTIVE.value,
            limit=limit,
            after=after,
        )

    async def keys_due_for_purge(
        self, now: datetime, limit: int, after: str = ""
    ) -> tuple[Sequence[Key], str | None]:
        table = schema.keys
        return await self._keys_where(
            table.c.deletion_scheduled_at <= now,
            table.c.status == KeyStatus.PENDING_DELETION.value,
            limit=limit,
            after=after,
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

    async def wrapping_keys(
        self, organisation_identity: str, region: str, limit: int
    ) -> Sequence[WrappingKeyRecord]:
        table = schema.byok_wrapping_keys
        query = (
            select(table)
            .where(table.c.organisation_identity == organisation_identity, table.c.region == region)
            .order_by(table.c.number.desc())
            .limit(limit)
        )
        async with self.reading() as conn:
            rows = (await conn.execute(query)).all()
        return [
            WrappingKeyRecord(
                identity=row.identity,
                organisation_identity=row.organisation_identity,
                region=row.region,
                number=row.number,
                wrapped_private=bytes(row.wrapped_private),
                created_at=utc(row.created_at),
                expires_at=utc(row.expires_at),
            )
            for row in rows
        ]

    # --- the root of trust (sql_root) ---------------------------------------------------------

    async def _read_sync(self, work: Callable[[Connection], T]) -> T:
        async with self.reading() as conn:
            return await conn.run_sync(work)

    async def read_verified(self, work: Callable[[Connection, Integrity], T]) -> T:
        """``work`` on a synchronous connection, with what checks authenticated rows
        (``coffer.storage.verified``)."""
        return await self._read_sync(lambda conn: work(conn, self._integrity))

    async def _write_sync(self, work: Callable[[Connection], T]) -> T:
        async with self.transaction() as tx:
            return await tx.connection.run_sync(work)

    async def installation(self) -> Installation | None:
        return await self._read_sync(sql_root.read_installation)

    async def root_state(self) -> tuple[Installation | None, Sequence[RootGeneration]]:
        if self._read_engine is not None:  # SQLite: statements share a snapshot only in a BEGIN
            return await self._read_in_thread(sql_root.read_state, snapshot=True)
        return await self._read_sync(sql_root.read_state)  # one transaction (autobegin)

    async def all_root_wrapped(self) -> Sequence[RootWrappedRow]:
        return await self._read_sync(sql_root.all_wrapped)

    async def root_generations(self) -> Sequence[RootGeneration]:
        return await self._read_sync(sql_root.read_generations)

    async def wrapped_by_root_below(self, generation: int, limit: int) -> Sequence[RootWrappedRow]:
        return await self._read_sync(lambda conn: sql_root.wrapped_below(conn, generation, limit))

    async def rewrap_root(self, rewrapped: Sequence[tuple[RootWrappedRow, Wrapped]]) -> None:
        def work(conn: Connection) -> None:
            sql_root.rewrap(conn, rewrapped)
            for generation in {wrapped.generation for _, wrapped in rewrapped}:
                sql_root.guard_generation(conn, generation)

        await self._write_sync(work)

    async def count_wrapped_by_root_below(self, generation: int) -> int:
        return await self._read_sync(lambda conn: sql_root.count_wrapped_below(conn, generation))

    async def purpose_keys(self) -> Mapping[str, Wrapped]:
        return await self._read_sync(sql_root.read_purpose_keys)

    async def add_purpose_key(self, purpose: str, wrapped: Wrapped, now: datetime) -> None:
        await self._write_sync(
            lambda conn: sql_root.insert_purpose_key(conn, purpose, wrapped, now)
        )
