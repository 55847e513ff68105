"""Consistent copies of a live database, and their way back (``coffer backup`` / ``restore``).

A snapshot is always a SQLite database at the newest schema revision this code knows:

* from SQLite, ``VACUUM INTO`` inside one read transaction — the committed state at that instant,
  the write-ahead log included (a copy of the file alone misses what is still only in the log);
* from PostgreSQL, every table read in one ``REPEATABLE READ`` read-only transaction (one
  snapshot of the whole database) and written into a new SQLite file.

Restoring into PostgreSQL copies the rows of a snapshot into an empty database in one
transaction. Rows move as they are — row MACs, wrapped keys and the audit chain included; nothing
is decrypted. ``change_events`` (notifications between nodes, kept for minutes) is not copied.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, DateTime, Table, func, inspect, select, text
from sqlalchemy.exc import DBAPIError

from coffer.storage import schema
from coffer.storage.database import plain_engine, read_only_engine, schema_revision, upgrade

#: Tables a snapshot does not hold: short-lived notifications between nodes.
TRANSIENT = frozenset({schema.change_events.name})
BATCH_ROWS = 5000


class SnapshotError(Exception):
    """A snapshot cannot be made or restored (the message says why)."""


@dataclass(frozen=True, slots=True)
class SnapshotFacts:
    """What a snapshot holds, for its manifest."""

    revision: str
    installation: str | None
    seal_type: str | None
    #: The active root key generation, and its check value (which only its key opens).
    root_generation: int
    root_check_value: bytes
    audit_head: tuple[int, bytes]
    checkpoints: tuple[tuple[int, bytes], ...]  # (seq, link), oldest first
    newest_checkpoint_at: datetime | None
    counts: dict[str, int]


def _tables() -> list[Table]:
    return [t for t in schema.metadata.sorted_tables if t.name not in TRANSIENT]


def _current_revision(url: str) -> str:
    current, head = schema_revision(url)
    if current is None:
        raise SnapshotError("the database holds no Coffer schema")
    if current != head:
        raise SnapshotError(
            f"the database's schema is at revision {current} and this Coffer's at {head}: use "
            "the Coffer version that serves the database (or start its server once, which "
            "migrates it)"
        )
    return current


def snapshot_sqlite(database: Path, target: Path) -> None:
    """``target`` (new): a consistent copy of the live SQLite database ``database``."""
    url = f"sqlite:///{database}"
    _current_revision(url)
    connection = sqlite3.connect(database, isolation_level=None)
    try:
        connection.execute("PRAGMA busy_timeout=10000")
        connection.execute("VACUUM INTO ?", (str(target),))
    except sqlite3.Error as exc:
        raise SnapshotError(f"the database cannot be copied ({exc})") from None
    finally:
        connection.close()


def _utc(value: Any) -> Any:
    """Times as aware UTC datetimes whichever engine they come from (SQLite keeps them naive)."""
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return value


def _rows(connection: Connection, table: Table) -> Iterator[list[dict[str, Any]]]:
    times = [c.name for c in table.columns if isinstance(c.type, DateTime)]
    query = select(table).order_by(*table.primary_key.columns)
    result = connection.execution_options(stream_results=True, yield_per=BATCH_ROWS).execute(query)
    for partition in result.mappings().partitions(BATCH_ROWS):
        rows = [dict(row) for row in partition]
        for row in rows:
            for name in times:
                row[name] = _utc(row[name])
        yield rows


def _copy(source: Connection, target: Connection, tables: list[Table]) -> None:
    """The rows of ``tables`` from ``source`` into ``target``, whose schema was just made: the
    rows its migrations seed (the chain's empty head) give way to the copied ones."""
    for table in reversed(tables):
        target.execute(table.delete())
    for table in tables:
        for rows in _rows(source, table):
            target.execute(table.insert(), rows)


def snapshot_postgres(url: str, target: Path) -> None:
    """``target`` (new): the PostgreSQL database ``url`` as one snapshot, in a SQLite file."""
    revision = _current_revision(url)
    upgrade(f"sqlite:///{target}")
    source_engine = plain_engine(url)
    target_engine = plain_engine(f"sqlite:///{target}")
    try:
        with source_engine.connect() as source, target_engine.begin() as copy:
            source = source.execution_options(isolation_level="REPEATABLE READ",
                                              postgresql_readonly=True)  # fmt: skip
            with source.begin():  # one snapshot for every table, and the schema's revision
                current = source.execute(text("SELECT version_num FROM alembic_version")).scalar()
                if current != revision:
                    raise SnapshotError(
                        f"the database's schema moved from revision {revision} to {current} "
                        "while the backup began (an upgrade): run the backup again"
                    )
                _copy(source, copy, _tables())
    finally:
        source_engine.dispose()
        target_engine.dispose()


def describe(snapshot: Path) -> SnapshotFacts:
    """What the SQLite snapshot ``snapshot`` holds."""
    engine = read_only_engine(f"sqlite:///{snapshot}")
    try:
        with engine.connect() as conn:
            revision = conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one()
            row = conn.execute(select(schema.installation)).mappings().first()
            generation = int(row["active_generation"]) if row else 0
            check_value = conn.execute(
                select(schema.root_keys.c.check_value).where(
                    schema.root_keys.c.generation == generation
                )
            ).scalar()
            head = conn.execute(select(schema.audit_chain_head)).mappings().first()
            checkpoints = conn.execute(
                select(schema.audit_checkpoints.c.seq, schema.audit_checkpoints.c.hash,
                       schema.audit_checkpoints.c.created_at)
                .order_by(schema.audit_checkpoints.c.seq)
            ).all()  # fmt: skip
            counted = {"organisations": schema.organisations, "keys": schema.keys,
                       "keyVersions": schema.key_versions, "tokens": schema.tokens,
                       "roleBindings": schema.role_bindings,
                       "auditRecords": schema.audit_events}  # fmt: skip
            counts = {name: int(conn.execute(select(func.count()).select_from(t)).scalar_one())
                      for name, t in counted.items()}  # fmt: skip
    finally:
        engine.dispose()
    return SnapshotFacts(
        revision=str(revision),
        installation=row["identity"] if row else None,
        seal_type=row["seal_type"] if row else None,
        root_generation=generation,
        root_check_value=bytes(check_value or b""),
        audit_head=(int(head["seq"]), bytes(head["hash"])) if head else (0, b""),
        checkpoints=tuple((int(seq), bytes(link)) for seq, link, _ in checkpoints),
        newest_checkpoint_at=_utc(checkpoints[-1][2]) if checkpoints else None,
        counts=counts,
    )


def snapshot_revision(snapshot: Path) -> str | None:
    """The schema revision of a snapshot, read before anything else of it (an older Coffer's
    snapshot has older tables: it is migrated before they are read)."""
    engine = read_only_engine(f"sqlite:///{snapshot}")
    try:
        with engine.connect() as conn:
            revision = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
    except DBAPIError:
        return None
    finally:
        engine.dispose()
    return None if revision is None else str(revision)


def check_empty(url: str) -> None:
    """``SnapshotError`` unless the PostgreSQL database ``url`` holds no Coffer table."""
    engine = plain_engine(url)
    try:
        with engine.connect() as conn:
            names = set(inspect(conn).get_table_names())
    finally:
        engine.dispose()
    ours = {t.name for t in schema.metadata.sorted_tables} | {"alembic_version"}
    if names & ours:
        raise SnapshotError(
            "the database already holds a Coffer schema: restore into an empty database "
            "(CREATE DATABASE …), never over a live one"
        )


def restore_postgres(snapshot: Path, url: str) -> None:
    """Copy the SQLite snapshot ``snapshot`` (at the newest revision) into the empty PostgreSQL
    database ``url``, in one transaction; on failure the schema made for it is removed again."""
    check_empty(url)
    upgrade(url)
    source_engine = read_only_engine(f"sqlite:///{snapshot}")
    target_engine = plain_engine(url)
    try:
        with source_engine.connect() as source, target_engine.begin() as target:
            _copy(source, target, _tables())
    except BaseException:
        with target_engine.begin() as target:
            schema.metadata.drop_all(target)
            target.exec_driver_sql("DROP TABLE IF EXISTS alembic_version")
        raise
    finally:
        source_engine.dispose()
        target_engine.dispose()


def upgrade_snapshot(snapshot: Path) -> None:
    """Bring a snapshot made by an older Coffer to this one's schema."""
    upgrade(f"sqlite:///{snapshot}")
