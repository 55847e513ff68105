"""Many keys at once, written straight into a stopped server's SQLite database.

Creating a million keys through the API would take longer than the whole benchmark; this writes
them with one multi-row insert per batch, in one transaction, through Coffer's own key hierarchy:
the organisation's KEK is unwrapped with the root key, and each new key's version material is
wrapped by it under the associated data that binds it to that key's identity
(`coffer.crypto.wrapping.key_version_aad`), exactly as `KeyService.create_key` stores it, and each
row carries its MAC under the row MAC purpose key (`coffer.domain.integrity`). Every
row is a copy of a template key made through the API, with its own identity, name and slug; the
keys share the template's material (one generation, wrapped a million times), which changes
nothing for the server: it cannot tell, and each lookup still reads, unwraps and parses its row.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from coffer.config import DATABASE_FILE, ROOT_KEY_FILE
from coffer.crypto.integrity import RowMacs
from coffer.crypto.root import SoftwareCipher, open_blob, read_key_file
from coffer.crypto.wrapping import Wrapper, kek_aad, key_version_aad, purpose_key_aad
from coffer.domain.identity import KEY_PREFIX, new_identity
from coffer.service.purposes import ROW_MAC
from coffer.storage.verified import key_values

BOOLEANS = ("export_allowed", "imported", "allow_rotation", "key_rotation_enabled")


def _mac(macs: RowMacs, columns: list[str], row: list[Any]) -> bytes:
    """The row's MAC, over its values as the server reads them (SQLite's 0/1 as booleans)."""
    values = dict(zip(columns, row, strict=True))
    values.update({name: bool(values[name]) for name in BOOLEANS})
    return macs.of("keys", key_values(SimpleNamespace(**values)))  # type: ignore[arg-type]


BATCH = 20_000


def add_keys(data_dir: Path, template_slug: str, count: int, start: int, ids: Path) -> float:
    """Add ``count`` keys named ``bk-<start>`` … to the database of ``data_dir`` (the server must
    be stopped), copies of the key ``template_slug``; append their identities to ``ids``, one a
    line. Returns the seconds it took."""
    began = time.perf_counter()
    db = sqlite3.connect(data_dir / DATABASE_FILE, isolation_level=None)
    db.row_factory = sqlite3.Row
    try:
        db.execute("PRAGMA synchronous = OFF")  # one bulk load; the benchmark throws it away
        template = db.execute("SELECT * FROM keys WHERE slug = ?", (template_slug,)).fetchone()
        version = db.execute(
            "SELECT * FROM key_versions WHERE key_identity = ? AND version = 1",
            (template["identity"],),
        ).fetchone()
        org, key_type = template["organisation_identity"], template["key_type"]
        (wrapped_kek,) = db.execute(
            "SELECT wrapped_kek FROM organisation_keks WHERE organisation_identity = ?", (org,)
        ).fetchone()
        assert template["deletion_scheduled_at"] is None
        root = SoftwareCipher(read_key_file(data_dir / ROOT_KEY_FILE))  # the file seal's key
        kek = Wrapper(open_blob(root, wrapped_kek, kek_aad(org)))
        (wrapped_mac_key,) = db.execute(
            "SELECT wrapped FROM purpose_keys WHERE purpose = ?", (ROW_MAC,)
        ).fetchone()
        macs = RowMacs(open_blob(root, wrapped_mac_key, purpose_key_aad(ROW_MAC)))
        material = kek.unwrap(
            version["wrapped_material"], key_version_aad(org, template["identity"], 1, key_type)
        )
        key_columns = list(template.keys())
        key_sql = (
            f"INSERT INTO keys ({', '.join(key_columns)}) "
            f"VALUES ({', '.join('?' for _ in key_columns)})"
        )
        version_sql = (
            "INSERT INTO key_versions (key_identity, version, wrapped_material, created_at) "
            "VALUES (?, 1, ?, ?)"
        )
        at = {name: i for i, name in enumerate(key_columns)}
        base = list(template)
        db.execute("BEGIN")
        with ids.open("a") as listing:
            for first in range(start, start + count, BATCH):
                keys, versions = [], []
                for n in range(first, min(first + BATCH, start + count)):
                    identity = new_identity(KEY_PREFIX)
                    row = base.copy()
                    row[at["identity"]] = identity
                    row[at["name"]] = row[at["slug"]] = f"bk-{n}"
                    row[at["mac"]] = _mac(macs, key_columns, row)
                    keys.append(row)
                    aad = key_version_aad(org, identity, 1, key_type)
                    versions.append((identity, kek.wrap(material, aad), version["created_at"]))
                db.executemany(key_sql, keys)
                db.executemany(version_sql, versions)
                listing.write("".join(f"{v[0]}\n" for v in versions))
        db.execute("COMMIT")
    finally:
        db.close()
    return time.perf_counter() - began
