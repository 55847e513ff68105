"""``AuditStore`` on SQLAlchemy Core."""

from __future__ import annotations

import asyncio
import fcntl
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.engine import Connection, Engine, Row
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.sql.expression import Executable

from coffer.domain.audit import AuditFilter, ChainRow, ChainTip, Checkpoint, PruneMark
from coffer.errors import CofferError, Conflict
from coffer.storage import schema
from coffer.storage.outages import reached, unavailable
from coffer.storage.repositories import BuildRows, Change, Macs
from coffer.storage.rows import utc
from coffer.storage.sql import SqlStore

_HEAD_ID = 1


def _checkpoint_insert(checkpoint: Checkpoint) -> Executable:
    c = checkpoint
    return schema.audit_checkpoints.insert().values(
        seq=c.seq, hash=c.hash, created_at=c.created_at, signature=c.signature, prev=c.prev,
        keyed_from=c.keyed_from, anchor=c.anchor,
    )  # fmt: skip


def _checkpoint(row: Row[Any]) -> Checkpoint:
    return Checkpoint(
        seq=row.seq, hash=bytes(row.hash), created_at=utc(row.created_at),
        signature=bytes(row.signature), prev=bytes(row.prev) if row.prev is not None else None,
        keyed_from=row.keyed_from, anchor=row.anchor,
    )  # fmt: skip


def _newest_checkpoint(conn: Connection) -> Checkpoint | None:
    table = schema.audit_checkpoints
    newest = conn.execute(select(table).order_by(table.c.seq.desc()).limit(1)).first()
    return _checkpoint(newest) if newest is not None else None


def _keyed_from(conn: Connection, seq: int) -> tuple[int, bool]:
    """The first record with a keyed link, and whether it was already committed; noted now
    (``seq + 1``) if no write since keyed links noted it yet: a new installation, or one made by
    a version before. The head is locked."""
    installation = schema.installation
    keyed_from = conn.execute(select(installation.c.audit_keyed_from)).scalar()
    if keyed_from is not None:
        return int(keyed_from), True
    conn.execute(update(installation).values(audit_keyed_from=seq + 1))
    return seq + 1, False


def _chain_row(row: Row[Any]) -> ChainRow:
    return ChainRow(
        seq=row.seq,
        event_id=row.event_id,
        created_at=utc(row.created_at),
        organisation_identity=row.organisation_identity,
        project_identity=row.project_identity,
        action=row.action,
        principal_identity=row.principal_identity,
        resource_identity=row.resource_identity,
        status=row.status,
        record=row.record,
        prev_hash=bytes(row.prev_hash),
        hash=bytes(row.hash),
    )


#: Beside a SQLite database: the file lock its audit writers take turns on.
AUDIT_LOCK_SUFFIX = ".audit-lock"


class SqlAuditStore:
    """The audit tables, on the same engine (and database) as the keys."""

    def __init__(self, store: SqlStore, writer: Engine, macs: Callable[[], Macs]) -> None:
        """``macs``: the row MACs the changes write with (called when a change is applied:
        the purpose key is loaded after the root of trust opens)."""
        self._store = store
        self._writer = writer
        self._macs = macs
        # SQLite has one writer at a time, and a writer that finds the database locked sleeps in
        # steps of 1, 2, 5, 10… ms before it tries again. The audit writers of several server
        # processes queue on a file lock instead, and the next one starts the moment the last
        # one committed.
        database = (writer.url.database or "") if writer.dialect.name == "sqlite" else ""
        on_disk = database not in ("", ":memory:") and not database.startswith("file:")
        self._turns = Path(f"{database}{AUDIT_LOCK_SUFFIX}") if on_disk else None
        # Once committed it never changes: read once per writer (and a change to it in the
        # database does not reach the links this writer makes).
        self._keyed_from: int | None = None

    def _tip(self, conn: Connection, seq: int, link: bytes) -> ChainTip:
        """The chain's end with the head at (``seq``, ``link``) locked by ``conn``."""
        keyed_from = self._keyed_from
        if keyed_from is None:
            keyed_from, committed = _keyed_from(conn, seq)
            if committed:
                self._keyed_from = keyed_from
        return ChainTip(seq, link, keyed_from, lambda: _newest_checkpoint(conn))

    async def close(self) -> None:
        await asyncio.to_thread(self._writer.dispose)

    async def probe_write(self) -> None:
        """A write transaction that changes nothing but still reaches the disk (the chain's
        head written back as it is): ``Unavailable`` when the database cannot be written (a
        full disk, read-only or immutable files, a lost connection)."""
        try:
            await asyncio.to_thread(self._with_turn, self._probe_locked)
        except (DBAPIError, PoolTimeout, OSError) as exc:
            raise unavailable(exc, "the database cannot be written") from exc
        reached()

    def _probe_locked(self) -> None:
        head = schema.audit_chain_head
        with self._writer.begin() as conn:
            conn.execute(head.update().where(head.c.id == _HEAD_ID).values(seq=head.c.seq))

    def _with_turn(self, write: Callable[[], None]) -> None:
        if self._turns is None:
            write()
            return
        with self._turns.open("a") as turn:
            fcntl.flock(turn, fcntl.LOCK_EX)
            try:
                write()
            finally:
                fcntl.flock(turn, fcntl.LOCK_UN)

    async def audit_head(self) -> tuple[int, bytes]:
        head = schema.audit_chain_head
        async with self._store.reading() as conn:
            row = (await conn.execute(select(head.c.seq, head.c.hash))).one()
        return int(row.seq), bytes(row.hash)

    async def append_audit(self, changes: Sequence[Change | None], build: BuildRows) -> None:
        # The whole batch goes to the database in one hop to a worker thread, on a plain
        # (synchronous) connection: through the async driver every statement was a round trip
        # through the busy event loop. The loop itself never waits on the disk or on a lock.
        try:
            await asyncio.to_thread(self._append_sync, changes, build)
        except IntegrityError:
            raise Conflict() from None
        except (DBAPIError, PoolTimeout) as exc:
            raise unavailable(exc) from exc
        reached()

    async def apply_change(self, change: Change) -> None:
        try:
            await asyncio.to_thread(self._apply_alone, change)
        except IntegrityError:
            raise Conflict() from None
        except (DBAPIError, PoolTimeout) as exc:
            raise unavailable(exc) from exc
        reached()

    def _apply_alone(self, change: Change) -> None:
        with self._writer.begin() as conn:
            change.apply(conn, self._macs())

    def _append_sync(self, changes: Sequence[Change | None], build: BuildRows) -> None:
        self._with_turn(lambda: self._append_locked(changes, build))

    def _append_locked(self, changes: Sequence[Change | None], build: BuildRows) -> None:
        head = schema.audit_chain_head
        with self._writer.begin() as conn:
            # The head is locked first, by every writer (SQLite's BEGIN IMMEDIATE has already
            # locked the whole database; PostgreSQL locks the row): writers take their turns in
            # one lock order, and each builds its records on the head as it really is.
            locked = conn.execute(
                select(head.c.seq, head.c.hash).where(head.c.id == _HEAD_ID).with_for_update()
            ).one()
            start = self._tip(conn, int(locked.seq), bytes(locked.hash))
            outcomes: list[CofferError | None] = []
            macs = self._macs() if any(changes) else None
            for change in changes:
                if change is None:
                    outcomes.append(None)
                    continue
                savepoint = conn.begin_nested()
                try:
                    assert macs is not None
                    change.apply(conn, macs)
                except CofferError as refused:  # this change only; the batch goes on
                    savepoint.rollback()
                    outcomes.append(refused)
                except IntegrityError:
                    savepoint.rollback()
                    outcomes.append(Conflict())
                else:
                    savepoint.commit()
                    outcomes.append(None)
            rows, checkpoint = build(outcomes, start)
            if not rows:
                return  # only refused changes that leave no record
            conn.execute(
                head.update()
                .where(head.c.id == _HEAD_ID)
                .values(seq=rows[-1].seq, hash=rows[-1].hash)
            )
            conn.execute(
                schema.audit_events.insert(),
                [
                    {
                        "seq": r.seq,
                        "event_id": r.event_id,
                        "created_at": r.created_at,
                        "organisation_identity": r.organisation_identity,
                        "project_identity": r.project_identity,
                        "action": r.action,
                        "principal_identity": r.principal_identity,
                        "resource_identity": r.resource_identity,
                        "status": r.status,
                        "record": r.record,
                        "prev_hash": r.prev_hash,
                        "hash": r.hash,
                    }
                    for r in rows
                ],
            )
            if checkpoint is not None:
                conn.execute(_checkpoint_insert(checkpoint))

    async def add_audit_checkpoint(
        self, build: Callable[[ChainTip], Checkpoint | None]
    ) -> Checkpoint | None:
        try:
            made = await asyncio.to_thread(self._checkpoint_sync, build)
        except (DBAPIError, PoolTimeout) as exc:
            raise unavailable(exc) from exc
        reached()
        return made

    def _checkpoint_sync(self, build: Callable[[ChainTip], Checkpoint | None]) -> Checkpoint | None:
        def locked() -> Checkpoint | None:
            head = schema.audit_chain_head
            with self._writer.begin() as conn:
                row = conn.execute(
                    select(head.c.seq, head.c.hash).where(head.c.id == _HEAD_ID).with_for_update()
                ).one()
                checkpoint = build(self._tip(conn, int(row.seq), bytes(row.hash)))
                if checkpoint is not None:
                    conn.execute(_checkpoint_insert(checkpoint))
                return checkpoint

        if self._turns is None:
            return locked()
        with self._turns.open("a") as turn:
            fcntl.flock(turn, fcntl.LOCK_EX)
            try:
                return locked()
            finally:
                fcntl.flock(turn, fcntl.LOCK_UN)

    async def audit_keyed_from(self) -> int | None:
        async with self._store.reading() as conn:
            found = (await conn.execute(select(schema.installation.c.audit_keyed_from))).scalar()
        return int(found) if found is not None else None

    async def audit_rows(self, after_seq: int, limit: int) -> Sequence[ChainRow]:
        table = schema.audit_events
        query = select(table).where(table.c.seq > after_seq).order_by(table.c.seq).limit(limit)
        async with self._store.reading() as conn:
            return [_chain_row(row) for row in await conn.execute(query)]

    async def audit_checkpoints(self) -> Sequence[Checkpoint]:
        table = schema.audit_checkpoints
        async with self._store.reading() as conn:
            rows = await conn.execute(select(table).order_by(table.c.seq))
            return [_checkpoint(r) for r in rows]

    async def audit_page(
        self, organisation_identity: str, audit_filter: AuditFilter, offset: int, limit: int
    ) -> tuple[Sequence[str], int]:
        table = schema.audit_events
        conditions: list[Any] = [table.c.organisation_identity == organisation_identity]
        f = audit_filter
        if f.action is not None:
            conditions.append(table.c.action == f.action)
        if f.action_prefix is not None:
            conditions.append(table.c.action.startswith(f.action_prefix, autoescape=True))
        if f.resource_identity is not None:
            conditions.append(table.c.resource_identity == f.resource_identity)
        for principal in (f.service_account, f.user_identity):
            if principal is not None:
                conditions.append(table.c.principal_identity == principal)
        if f.status is not None:
            conditions.append(table.c.status == f.status)
        if f.since is not None:
            conditions.append(table.c.created_at >= f.since)
        if f.until is not None:
            conditions.append(table.c.created_at < f.until)
        if f.after_seq is not None:
            conditions.append(table.c.seq > f.after_seq)
        if f.project_identity is not None:
            conditions.append(table.c.project_identity == f.project_identity)
        async with self._store.reading() as conn:
            total = await conn.scalar(select(func.count()).select_from(table).where(*conditions))
            records = await conn.scalars(
                select(table.c.record)
                .where(*conditions)
                .order_by(table.c.seq if f.oldest_first else table.c.seq.desc())
                .offset(offset)
                .limit(limit)
            )
            return list(records), int(total or 0)

    async def prune_audit(self, mark: PruneMark) -> int:
        table = schema.audit_events
        async with self._store.transaction() as tx:
            await tx.connection.execute(
                schema.audit_prunes.insert().values(
                    seq=mark.seq, created_at=mark.created_at, signature=mark.signature
                )
            )
            result = await tx.connection.execute(table.delete().where(table.c.seq <= mark.seq))
        return int(result.rowcount)

    async def audit_prune_marks(self) -> Sequence[PruneMark]:
        table = schema.audit_prunes
        async with self._store.reading() as conn:
            rows = await conn.execute(select(table).order_by(table.c.seq))
            return [PruneMark(r.seq, utc(r.created_at), bytes(r.signature)) for r in rows]
