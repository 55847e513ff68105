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
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from coffer.bootstrap import build_app, open_data_dir, verify_audit
from coffer.config import ConfigError, Settings
from coffer.storage.database import schema_revision

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
