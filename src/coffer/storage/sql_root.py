"""The root of trust's tables (``installation``, ``root_keys``, ``purpose_keys``) and the blobs
the root key wraps, on a synchronous connection.

Synchronous so that ``coffer serve`` can open the root of trust before any event loop runs; the
async store calls the same functions through ``AsyncConnection.run_sync``.

Writes that wrap with the root key take part in one protocol with root rotation, so that no blob
is ever written under a generation that a rotation retires: a writer inserts its blob, then reads
its generation's row ``FOR SHARE`` (``guard_generation``); a rotation completes by marking the
old generations retired first and counting what is still wrapped by them second
(``finish_rotation``). On PostgreSQL one of the two waits for the other's row lock, so either the
writer sees the generation retired (and wraps again) or the rotation sees the writer's blob (and
rewraps it); SQLite runs one writer at a time.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import bindparam, func, select, update
from sqlalchemy.engine import Connection, Row

from coffer.domain.seal import (
    Installation,
    RootGeneration,
    RootWrappedRow,
    SealConfig,
    SealType,
    StaleRootGeneration,
    Wrapped,
)
from coffer.errors import Conflict
from coffer.storage import schema

INSTALLATION_ROW = 1
#: The storage version this code writes (``installation.storage_version``; ``barrier``): 1 since
#: the storage barrier (row MACs, keyed token digests).
STORAGE_VERSION = 1

#: Every table whose rows hold a blob wrapped by the root key: (table, key column, blob column).
ROOT_WRAPPED = (
    (schema.organisation_keks, "organisation_identity", "wrapped_kek"),
    (schema.purpose_keys, "purpose", "wrapped"),
)


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _seal_config(seal_type: str, raw: dict[str, Any]) -> SealConfig:
    return SealConfig(
        type=SealType(seal_type),
        threshold=raw.get("threshold"),
        shares=raw.get("shares"),
        share_digests=tuple(raw.get("shareDigests", ())),
        pkcs11_token=raw.get("pkcs11Token"),
    )


def seal_config_json(seal: SealConfig) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "threshold": seal.threshold,
        "shares": seal.shares,
        "shareDigests": list(seal.share_digests),
        "pkcs11Token": seal.pkcs11_token,
    }
    return {name: value for name, value in raw.items() if value not in (None, [])}


def _installation(row: Row[Any]) -> Installation:
    return Installation(
        identity=row.identity,
        seal=_seal_config(row.seal_type, dict(row.seal_config)),
        active_generation=row.active_generation,
        created_at=_utc(row.created_at) or row.created_at,
    )


def _generation(row: Row[Any]) -> RootGeneration:
    return RootGeneration(
        generation=row.generation,
        seal_type=SealType(row.seal_type),
        check_value=bytes(row.check_value),
        sealed_key=bytes(row.sealed_key) if row.sealed_key is not None else None,
        created_at=_utc(row.created_at) or row.created_at,
        retired_at=_utc(row.retired_at),
        seal_ref=row.seal_ref,
    )


def read_installation(conn: Connection) -> Installation | None:
    table = schema.installation
    row = conn.execute(select(table).where(table.c.id == INSTALLATION_ROW)).first()
    return _installation(row) if row is not None else None


def read_generations(conn: Connection) -> list[RootGeneration]:
    table = schema.root_keys
    return [_generation(r) for r in conn.execute(select(table).order_by(table.c.generation))]


def read_state(conn: Connection) -> tuple[Installation | None, list[RootGeneration]]:
    """The installation and its generations (call inside one read transaction: a snapshot)."""
    return read_installation(conn), read_generations(conn)


def all_wrapped(conn: Connection) -> list[RootWrappedRow]:
    """Every blob the root key wraps (the generation as the column says; the blob's own header
    is what counts)."""
    found: list[RootWrappedRow] = []
    for table, key, blob in ROOT_WRAPPED:
        rows = conn.execute(select(table.c[key], table.c[blob], table.c.root_generation)).all()
        found += [RootWrappedRow(table.name, r[0], Wrapped(r[2], bytes(r[1]))) for r in rows]
    return found


def lock_installation(conn: Connection) -> Installation:
    """The installation row, locked until the transaction ends (a no-op update takes the row
    lock on PostgreSQL and the write lock on SQLite)."""
    table = schema.installation
    conn.execute(
        update(table).where(table.c.id == INSTALLATION_ROW).values(identity=table.c.identity)
    )
    found = read_installation(conn)
    if found is None:
        raise Conflict("this database holds no Coffer installation")
    return found


def insert_installation(
    conn: Connection, installation: Installation, *, storage_version: int = STORAGE_VERSION
) -> None:
    """``storage_version``: that of the rows already there (0: older than the storage barrier,
    upgraded when the root is first open)."""
    conn.execute(
        schema.installation.insert().values(
            id=INSTALLATION_ROW,
            identity=installation.identity,
            seal_type=installation.seal.type.value,
            seal_config=seal_config_json(installation.seal),
            active_generation=installation.active_generation,
            created_at=installation.created_at,
            storage_version=storage_version,
        )
    )


def insert_generation(conn: Connection, generation: RootGeneration) -> None:
    conn.execute(
        schema.root_keys.insert().values(
            generation=generation.generation,
            seal_type=generation.seal_type.value,
            check_value=generation.check_value,
            sealed_key=generation.sealed_key,
            created_at=generation.created_at,
            retired_at=generation.retired_at,
            seal_ref=generation.seal_ref,
        )
    )


def begin_rotation(conn: Connection, new: RootGeneration, seal: SealConfig) -> Installation:
    """Store generation ``new`` and make it the active one (with ``seal`` as the installation's
    seal from now on). ``Conflict`` if a rotation is under way or another began first."""
    installation = lock_installation(conn)
    live = [g.generation for g in read_generations(conn) if g.live]
    if live != [installation.active_generation]:
        raise Conflict("a root rotation is already under way")
    if new.generation != installation.active_generation + 1:
        raise Conflict("another root rotation began first")
    insert_generation(conn, new)
    table = schema.installation
    conn.execute(
        update(table)
        .where(table.c.id == INSTALLATION_ROW)
        .values(
            active_generation=new.generation,
            seal_type=seal.type.value,
            seal_config=seal_config_json(seal),
        )
    )
    return Installation(installation.identity, seal, new.generation, installation.created_at)


def guard_generation(conn: Connection, generation: int) -> None:
    """Raise ``StaleRootGeneration`` unless ``generation`` is live, holding its row (FOR SHARE
    on PostgreSQL) until the transaction ends. Call after writing a blob it wrapped."""
    table = schema.root_keys
    row = conn.execute(
        select(table.c.retired_at)
        .where(table.c.generation == generation)
        .with_for_update(read=True)
    ).first()
    if row is None or row.retired_at is not None:
        raise StaleRootGeneration()


def count_wrapped_below(conn: Connection, generation: int) -> int:
    total = 0
    for table, _, _ in ROOT_WRAPPED:
        total += (
            conn.scalar(
                select(func.count()).select_from(table).where(table.c.root_generation < generation)
            )
            or 0
        )
    return total


def wrapped_below(conn: Connection, generation: int, limit: int) -> list[RootWrappedRow]:
    """Up to ``limit`` blobs still wrapped by a generation before ``generation``."""
    found: list[RootWrappedRow] = []
    for table, key, blob in ROOT_WRAPPED:
        if len(found) >= limit:
            break
        rows = conn.execute(
            select(table.c[key], table.c[blob], table.c.root_generation)
            .where(table.c.root_generation < generation)
            .order_by(table.c[key])
            .limit(limit - len(found))
        ).all()
        found += [
            RootWrappedRow(table.name, row[0], Wrapped(row[2], bytes(row[1]))) for row in rows
        ]
    return found


def rewrap(conn: Connection, rewrapped: Sequence[tuple[RootWrappedRow, Wrapped]]) -> None:
    """Replace each row's blob by its new one, unless another node did already (one statement
    per table, run for every row: a batch costs a few round trips, not one per row)."""
    for table, key, blob in ROOT_WRAPPED:
        rows = [
            {"ref": row.ref, "old": row.wrapped.generation, "blob": new.blob,
             "new": new.generation}
            for row, new in rewrapped
            if row.table == table.name
        ]  # fmt: skip
        if rows:
            conn.execute(
                update(table)
                .where(
                    table.c[key] == bindparam("ref"),
                    table.c.root_generation == bindparam("old"),
                )
                .values({blob: bindparam("blob"), "root_generation": bindparam("new")}),
                rows,
            )


class RotationIncomplete(Conflict):
    """Blobs are still wrapped by an old generation: ``finish_rotation`` raised it so that its
    transaction rolls back, and the rotation goes on rewrapping."""

    code = "rotation_incomplete"
    default_message = "blobs are still wrapped by an old root key generation"


def finish_rotation(conn: Connection, now: datetime) -> list[int]:
    """Retire every generation before the active one, returning their numbers, or raise
    ``RotationIncomplete`` if blobs are still wrapped by them."""
    installation = lock_installation(conn)
    active = installation.active_generation
    table = schema.root_keys
    old = (
        conn.execute(
            update(table)
            .where(table.c.generation != active, table.c.retired_at.is_(None))
            .values(retired_at=now, sealed_key=None)
            .returning(table.c.generation)
        )
        .scalars()
        .all()
    )
    if count_wrapped_below(conn, active):
        raise RotationIncomplete()
    if installation.seal.type is SealType.FILE:
        # The transit copy of the file seal's new key (wrapped by a generation now retired).
        conn.execute(update(table).where(table.c.generation == active).values(sealed_key=None))
    return sorted(old)


def read_purpose_keys(conn: Connection) -> dict[str, Wrapped]:
    table = schema.purpose_keys
    rows = conn.execute(select(table.c.purpose, table.c.wrapped, table.c.root_generation)).all()
    return {row[0]: Wrapped(row[2], bytes(row[1])) for row in rows}


def insert_purpose_key(conn: Connection, purpose: str, wrapped: Wrapped, now: datetime) -> None:
    conn.execute(
        schema.purpose_keys.insert().values(
            purpose=purpose, wrapped=wrapped.blob, root_generation=wrapped.generation,
            created_at=now,
        )
    )  # fmt: skip
    guard_generation(conn, wrapped.generation)


def first_organisation_kek(conn: Connection) -> tuple[str, bytes] | None:
    """(organisation, wrapped KEK) of one organisation: a root key is checked against it where
    no check value exists yet (a data directory made before check values)."""
    table = schema.organisation_keks
    row = conn.execute(
        select(table.c.organisation_identity, table.c.wrapped_kek)
        .order_by(table.c.created_at)
        .limit(1)
    ).first()
    return (row[0], bytes(row[1])) if row is not None else None
