"""A data directory made by Coffer 0.1.0 (before the root of trust had rows of its own) upgrades
in place: its root key is checked first, then it gets an installation and generation 1, and
everything made before still works. ``tests/fixtures/legacy-0.1.0`` was made by that version:
``coffer init``, two keys, an encryption before and after a rotation, a signature, a second
organisation and the region's BYOK key, then a clean stop."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from coffer.bootstrap import build_app, open_data_dir, verify_audit
from coffer.config import ConfigError, Settings
from coffer.storage.database import create_sync_engine_for, schema_revision

pytestmark = pytest.mark.sqlite_only  # the fixture is a SQLite file
FIXTURE = Path(__file__).parents[1] / "fixtures" / "legacy-0.1.0"
KEYS = "/v1/kms/nl-01/keys"


def legacy_dir(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    for name in ("coffer.db", "root.key"):
        shutil.copyfile(FIXTURE / name, data / name)
        os.chmod(data / name, 0o600)
    return data


def test_a_legacy_data_directory_upgrades_and_keeps_working(tmp_path: Path) -> None:
    import asyncio

    settings = Settings(data_dir=legacy_dir(tmp_path))
    assert schema_revision(settings.url)[0] == "0006"
    root = open_data_dir(settings)
    root.close()
    current, head = schema_revision(settings.url)
    assert current == head
    assert root.seal_type.value == "file"
    assert root.identity.startswith("ins-")
    assert not root.sealed
    assert open_data_dir(settings).identity == root.identity, "upgraded once, not twice"

    boot = json.loads((FIXTURE / "boot.json").read_text())
    made: dict[str, Any] = json.loads((FIXTURE / "values.json").read_text())
    headers = {"Authorization": f"Bearer {boot['token']}", "X-Organisation-Identity": "default"}
    with TestClient(build_app(settings, run_scheduler=False)) as client:
        for name, plain in (("v1", "bGVnYWN5IHYx"), ("v2", "bGVnYWN5IHYy")):
            answer = client.post(f"{KEYS}/legacy-aes/decrypt", headers=headers,
                                 json={"ciphertext": made[name]["ciphertext"]})  # fmt: skip
            assert answer.status_code == 200, answer.text
            assert answer.json()["plaintext"] == plain
        verified = client.post(f"{KEYS}/legacy-ed/verify", headers=headers,
                               json={"input": "bGVnYWN5", "signature": made["sig"]["signature"]})  # fmt: skip
        assert verified.json()["valid"] is True
        assert client.get("/v1/kms/nl-01/wrapping-key", headers=headers).status_code == 200
        orgs = client.get("/v1/organisations", headers=headers).json()
        assert {o["slug"] for o in orgs} == {"default", "second-org"}
        # The checkpoint key it had (derived from the root key then) signs the new checkpoints.
        assert client.post(f"{KEYS}/legacy-aes/rotate", headers=headers).status_code == 200
    result = asyncio.run(verify_audit(settings))
    assert result.ok, result.problem
    assert result.checkpoints >= 2


def authentic_rows(services: Any) -> dict[str, tuple[int, int]]:
    """Per authenticated table: (rows stored, rows whose MAC is their own)."""
    from sqlalchemy import select

    from coffer.storage import schema, verified

    engine = create_sync_engine_for(services.settings.url)
    checker = services.integrity
    read = {
        "organisations": lambda c, r: verified.organisations(c, checker, r, current=False),
        "principals": lambda c, r: verified.principals(checker, r),
        "tokens": lambda c, r: verified.tokens(c, checker, r, current=False),
        "role_bindings": lambda c, r: verified.bindings(c, checker, r, current=False),
        "keys": lambda c, r: verified.key_rows(c, checker, r, current=False),
    }
    found = {}
    try:
        with engine.connect() as conn:
            for table, check in read.items():
                rows = conn.execute(select(schema.metadata.tables[table])).all()
                found[table] = (len(rows), len(check(conn, rows)))
    finally:
        engine.dispose()
    return found


def test_the_upgrade_gives_every_row_its_mac_and_every_token_a_keyed_digest(
    tmp_path: Path,
) -> None:
    """Rows written before the storage barrier have no MAC and tokens a plain SHA-256 digest:
    the first start with the root open moves them over, once, and the token made then still
    works without anyone knowing it."""
    settings = Settings(data_dir=legacy_dir(tmp_path))
    boot = json.loads((FIXTURE / "boot.json").read_text())
    plain = hashlib.sha256(boot["token"].encode()).digest()
    assert plain in (settings.data_dir / "coffer.db").read_bytes()  # as 0.1.0 stored it
    headers = {"Authorization": f"Bearer {boot['token']}", "X-Organisation-Identity": "default"}
    open_data_dir(settings).close()  # as `coffer serve` does first: the schema migrated
    with TestClient(build_app(settings, run_scheduler=False)) as client:
        services = client.app.state.services  # type: ignore[attr-defined]
        counts = authentic_rows(services)
        assert all(stored == good and stored > 0 for stored, good in counts.values()), counts
        assert client.get(KEYS, headers=headers).status_code == 200
        assert client.get("/v1/iam/tokens", headers=headers).status_code == 200
    engine = create_sync_engine_for(settings.url)
    try:
        with engine.connect() as conn:
            version = conn.exec_driver_sql("SELECT storage_version FROM installation").scalar()
    finally:
        engine.dispose()
    with closing(sqlite3.connect(settings.database_path)) as db:  # the log folded in, too
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    assert version == 1
    data = b"".join(p.read_bytes() for p in settings.data_dir.iterdir() if p.is_file())
    assert plain not in data
    # A second start finds nothing to do, and the token still works.
    with TestClient(build_app(settings, run_scheduler=False)) as client:
        assert client.get(KEYS, headers=headers).status_code == 200


def test_a_legacy_data_directory_with_a_wrong_root_key_is_refused_untouched(
    tmp_path: Path,
) -> None:
    data = legacy_dir(tmp_path)
    (data / "root.key").write_bytes(os.urandom(32))
    fingerprint = hashlib.sha256((data / "coffer.db").read_bytes()).hexdigest()
    settings = Settings(data_dir=data)
    with pytest.raises(ConfigError, match="does not belong to this database"):
        open_data_dir(settings)
    assert schema_revision(settings.url)[0] == "0006"
    assert hashlib.sha256((data / "coffer.db").read_bytes()).hexdigest() == fingerprint
    # Only SQLite's own coordination files may appear (a read opens them), empty of writes.
    assert {p.name for p in data.iterdir()} <= {"coffer.db", "coffer.db-wal", "coffer.db-shm",
                                                 "root.key"}  # fmt: skip
    wal = data / "coffer.db-wal"
    assert not wal.exists() or wal.stat().st_size == 0
