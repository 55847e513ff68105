"""The storage barrier's upgrade of an installation made before it (``storage_version`` 0 → 1).

Rows written before carry no MAC, and tokens' digests are plain SHA-256. The upgrade, run once by
the first server whose root of trust is open (under the installation row's lock, so that several
starting at once do it once), turns each stored digest into its keyed form (``rekey``: the keyed
digest is computed from the SHA-256, the tokens themselves are never known) and writes the MAC of
every authenticated row. Until it has run no row would pass a MAC check: nothing is served before.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import select, update
from sqlalchemy.engine import Connection

from coffer.domain import integrity
from coffer.storage import schema
from coffer.storage.repositories import Macs
from coffer.storage.rows import binding_of, organisation_of, principal_of
from coffer.storage.sql_root import INSTALLATION_ROW, STORAGE_VERSION
from coffer.storage.verified import key_values, token_values


def upgrade(conn: Connection, macs: Macs, rekey: Callable[[bytes], bytes]) -> bool:
    """Upgrade the rows in ``conn``'s transaction if they are older than the storage barrier;
    whether there was anything to do."""
    installation = schema.installation
    # A write first: it takes the database's (SQLite) or the row's (PostgreSQL) lock, so that a
    # second server starting now waits, then finds the work done.
    conn.execute(
        update(installation)
        .where(installation.c.id == INSTALLATION_ROW)
        .values(storage_version=installation.c.storage_version)
    )
    version = conn.execute(
        select(installation.c.storage_version).where(installation.c.id == INSTALLATION_ROW)
    ).scalar_one_or_none()
    if version is None or version >= STORAGE_VERSION:
        return False
    tokens = schema.tokens
    for row in conn.execute(select(tokens)).all():
        conn.execute(
            update(tokens)
            .where(tokens.c.identity == row.identity)
            .values(digest=rekey(bytes(row.digest)))
        )
    fields_of: dict[str, Callable[..., tuple[object, ...]]] = {
        "organisations": lambda row: integrity.organisation_fields(organisation_of(row)),
        "principals": lambda row: integrity.principal_fields(principal_of(row)),
        "tokens": token_values,
        "role_bindings": lambda row: integrity.binding_fields(binding_of(row)),
        "keys": key_values,
    }
    for name, fields in fields_of.items():
        table = schema.metadata.tables[name]
        for row in conn.execute(select(table)).all():
            conn.execute(
                update(table)
                .where(table.c.identity == row.identity)
                .values(mac=macs.of(name, fields(row)))
            )
    conn.execute(
        update(installation)
        .where(installation.c.id == INSTALLATION_ROW)
        .values(storage_version=STORAGE_VERSION)
    )
    return True
