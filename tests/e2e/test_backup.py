"""``coffer backup`` / ``coffer restore``: what was acknowledged before a backup began is in its
restore, under a mixed write load, on both engines; a changed byte, a foreign root key, a wrong
passphrase or an occupied target are refused and leave nothing behind."""

from __future__ import annotations

import base64
import http.client
import json
import os
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import SUITE_SECRETS
from tests.e2e.processes import (
    COFFER,
    clean_env,
    database_env,
    free_port,
    run_coffer,
    start_serve,
    stop,
    wait_until_healthy,
)

pytestmark = pytest.mark.slow

KEYS = "/v1/kms/nl-01/keys"


def call(port: int, method: str, path: str, token: str, org: str | None,
         body: Any = None) -> tuple[int, Any]:  # fmt: skip
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    if org is not None:
        headers["X-Organisation-Identity"] = org
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request(method, path, body=None if body is None else json.dumps(body),
                           headers=headers)  # fmt: skip
        response = connection.getresponse()
        raw = response.read()
        return response.status, json.loads(raw) if raw else None
    finally:
        connection.close()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@dataclass
class Acknowledged:
    """What the server acknowledged, each with the moment the answer arrived."""

    keys: list[tuple[float, str]] = field(default_factory=list)
    ciphertexts: list[tuple[float, str, str, bytes]] = field(default_factory=list)  # key, ct, pt
    tokens: list[tuple[float, str]] = field(default_factory=list)
    revoked: list[tuple[float, str]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def mixed_load(port: int, token: str, org: str, account: str, stop_at: threading.Event,
               done: Acknowledged) -> None:  # fmt: skip
    """Creates, rotations, encrypts, token creates and revocations until ``stop_at``."""
    n = 0
    while not stop_at.is_set():
        n += 1
        status, key = call(port, "POST", KEYS, token, org,
                           {"name": f"load-{n}", "keyType": "aes256-gcm96"})  # fmt: skip
        if status != 201:
            done.errors.append(f"create {status} {key}")
            continue
        done.keys.append((time.monotonic(), f"load-{n}"))
        target = "base" if n % 2 else f"load-{n}"
        if n % 3 == 0:
            status, body = call(port, "POST", f"{KEYS}/base/rotate", token, org, {})
            if status != 200:
                done.errors.append(f"rotate {status} {body}")
        plaintext = f"secret {n}".encode()
        status, body = call(port, "POST", f"{KEYS}/{target}/encrypt", token, org,
                            {"plaintext": b64(plaintext)})  # fmt: skip
        if status == 200:
            done.ciphertexts.append((time.monotonic(), target, body["ciphertext"], plaintext))
        else:
            done.errors.append(f"encrypt {status} {body}")
        if n % 4 == 0:
            status, made = call(port, "POST", "/v1/iam/tokens", token, org,
                                {"serviceAccount": account})  # fmt: skip
            if status != 201:
                done.errors.append(f"token {status} {made}")
                continue
            SUITE_SECRETS.add(made["token"])
            if n % 8 == 0:
                status, _ = call(port, "DELETE", f"/v1/iam/tokens/{made['identity']}", token, org)
                if status in (200, 204):
                    done.revoked.append((time.monotonic(), made["token"]))
            else:
                done.tokens.append((time.monotonic(), made["token"]))


def coffer_with_input(*args: str | Path, stdin: str, env: dict[str, str] | None = None
                      ) -> subprocess.CompletedProcess[str]:  # fmt: skip
    env = env if env is not None else clean_env()
    env = {**env, **database_env(args, env)}
    return subprocess.run([str(COFFER), *map(str, args)], input=stdin, capture_output=True,
                          text=True, env=env, timeout=120, check=False)  # fmt: skip


def init(data_dir: Path) -> dict[str, Any]:
    done = run_coffer("init", "--data-dir", data_dir, "--output", "json")
    assert done.returncode == 0, done.stderr
    boot: dict[str, Any] = json.loads(done.stdout)
    SUITE_SECRETS.add(boot["token"])
    return boot


def test_a_backup_under_a_mixed_write_load_restores_everything_acknowledged_before_it(
    tmp_path: Path,
) -> None:
    data_dir, restored = tmp_path / "data", tmp_path / "restored"
    boot = init(data_dir)
    token, org = boot["token"], boot["organisation"]
    port = free_port()
    process = start_serve("--data-dir", data_dir, "--port", str(port), log=tmp_path / "a.log")
    load = Acknowledged()
    stop_at = threading.Event()
    try:
        wait_until_healthy(process, port, tmp_path / "a.log")
        assert call(port, "POST", KEYS, token, org, {"name": "base",
                                                     "keyType": "aes256-gcm96"})[0] == 201  # fmt: skip
        status, account = call(port, "POST", "/v1/iam/service-accounts", token, org,
                               {"name": "loader"})  # fmt: skip
        assert status == 201, account
        worker = threading.Thread(target=mixed_load, args=(port, token, org,
                                  account["identity"], stop_at, load))  # fmt: skip
        worker.start()
        time.sleep(1.5)
        began = time.monotonic()
        backup = run_coffer("backup", tmp_path / "coffer.backup", "--data-dir", data_dir,
                            "-o", "json", timeout=120)  # fmt: skip
        assert backup.returncode == 0, backup.stderr
        finished = time.monotonic()
        time.sleep(1.0)  # the load goes on after the backup too
        stop_at.set()
        worker.join()
    finally:
        stop_at.set()
        stop(process)
    assert not load.errors, load.errors[:5]
    manifest = json.loads(backup.stdout)
    before = [name for at, name in load.keys if at < began]
    after = [name for at, name in load.keys if at > finished]
    assert len(before) >= 5, "the load had not begun before the backup"
    assert after, "the load had stopped before the backup ended"
    assert manifest["counts"]["keys"] >= len(before) + 1
    assert manifest["installation"] == boot["installation"]

    done = run_coffer("restore", tmp_path / "coffer.backup", "--data-dir", restored,
                      "--root-key", data_dir / "root.key", timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "the audit chain verifies" in done.stdout
    assert "tokens revoked and role bindings removed since are valid again" in done.stdout

    port = free_port()
    process = start_serve("--data-dir", restored, "--port", str(port), log=tmp_path / "b.log")
    try:
        wait_until_healthy(process, port, tmp_path / "b.log")
        for name in before:
            status, key = call(port, "GET", f"{KEYS}/{name}", token, org)
            assert status == 200, (name, key)
        old = [(key, ct, pt) for at, key, ct, pt in load.ciphertexts if at < began]
        rotated = {ct.split(":")[1] for key, ct, _ in old if key == "base"}
        assert len(rotated) >= 2, "no ciphertext under a rotated version before the backup"
        for key, ciphertext, plaintext in old:
            status, body = call(port, "POST", f"{KEYS}/{key}/decrypt", token, org,
                                {"ciphertext": ciphertext})  # fmt: skip
            assert status == 200, (key, ciphertext, body)
            assert base64.b64decode(body["plaintext"]) == plaintext
        for at, made in load.tokens:
            if at < began:
                assert call(port, "GET", f"{KEYS}/base", made, org)[0] != 401
        for at, made in load.revoked:
            if at < began:
                assert call(port, "GET", f"{KEYS}/base", made, org)[0] == 401
        assert all(call(port, "GET", f"{KEYS}/{n}", token, org)[0] == 404 for n in after)
    finally:
        stop(process)
    verified = run_coffer("audit", "verify", "--data-dir", restored)
    assert verified.returncode == 0, verified.stdout + verified.stderr

    # A changed byte anywhere is refused before anything is written.
    raw = bytearray((tmp_path / "coffer.backup").read_bytes())
    for offset in (40, len(raw) // 2, len(raw) - 1):
        damaged = tmp_path / f"damaged-{offset}.backup"
        copy = bytearray(raw)
        copy[offset] ^= 0x01
        damaged.write_bytes(bytes(copy))
        refused = run_coffer("restore", damaged, "--data-dir", tmp_path / "never",
                             "--root-key", data_dir / "root.key")  # fmt: skip
        assert refused.returncode == 1
        assert "damaged" in refused.stderr, refused.stderr
        assert not (tmp_path / "never").exists()
        assert run_coffer("restore", "--check", damaged).returncode == 1


@pytest.mark.one_engine  # the file's encryption: one engine shows it
def test_a_backup_with_the_root_key_is_encrypted_under_a_passphrase(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    boot = init(data_dir)
    passphrase = "correct horse battery staple\n"
    made = coffer_with_input("backup", tmp_path / "b", "--data-dir", data_dir,
                             "--include-root-key", stdin=passphrase)  # fmt: skip
    assert made.returncode == 0, made.stderr
    raw = (tmp_path / "b").read_bytes()
    key = (data_dir / "root.key").read_bytes()
    assert key not in raw
    assert base64.b64encode(key) not in raw
    assert b"SQLite format 3" not in raw  # the database is encrypted too

    short = coffer_with_input("backup", tmp_path / "c", "--data-dir", data_dir,
                              "--include-root-key", stdin="short\n")  # fmt: skip
    assert short.returncode == 1
    assert "at least 12 characters" in short.stderr
    assert not (tmp_path / "c").exists()

    wrong = coffer_with_input("restore", tmp_path / "b", "--data-dir", tmp_path / "w",
                              stdin="not the passphrase\n")  # fmt: skip
    assert wrong.returncode == 1
    assert "passphrase does not open" in wrong.stderr
    assert not (tmp_path / "w").exists()

    checked = coffer_with_input("restore", "--check", tmp_path / "b", "-o", "json",
                                stdin=passphrase)  # fmt: skip
    assert checked.returncode == 0, checked.stderr
    assert json.loads(checked.stdout)["rootKeyIncluded"] is True

    done = coffer_with_input("restore", tmp_path / "b", "--data-dir", tmp_path / "r",
                             stdin=passphrase)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "r" / "root.key").read_bytes() == key
    assert os.stat(tmp_path / "r" / "root.key").st_mode & 0o777 == 0o600
    assert boot["installation"] in done.stdout


def test_restore_refuses_a_foreign_root_key_and_an_occupied_target(tmp_path: Path) -> None:
    data_dir, other = tmp_path / "data", tmp_path / "other"
    init(data_dir)
    init(other)
    assert run_coffer("backup", tmp_path / "b", "--data-dir", data_dir).returncode == 0

    foreign = run_coffer("restore", tmp_path / "b", "--data-dir", tmp_path / "r",
                         "--root-key", other / "root.key")  # fmt: skip
    assert foreign.returncode == 1
    assert "root key" in foreign.stderr, foreign.stderr
    assert not (tmp_path / "r").exists()

    missing = run_coffer("restore", tmp_path / "b", "--data-dir", tmp_path / "r")
    assert missing.returncode == 1
    assert "--root-key" in missing.stderr

    occupied = run_coffer("restore", tmp_path / "b", "--data-dir", other,
                          "--root-key", data_dir / "root.key")  # fmt: skip
    assert occupied.returncode == 1
    assert "already holds" in occupied.stderr
    assert run_coffer("audit", "verify", "--data-dir", other).returncode == 0


def test_restore_lists_what_an_audit_copy_shows_it_undoes(tmp_path: Path) -> None:
    """A token revoked and a key rotated after the backup: the restore names both."""
    data_dir = tmp_path / "data"
    boot = init(data_dir)
    token, org = boot["token"], boot["organisation"]
    port = free_port()
    process = start_serve("--data-dir", data_dir, "--port", str(port), log=tmp_path / "a.log")
    try:
        wait_until_healthy(process, port, tmp_path / "a.log")
        key = call(port, "POST", KEYS, token, org, {"name": "k", "keyType": "aes256-gcm96"})[1]
        account = call(port, "POST", "/v1/iam/service-accounts", token, org, {"name": "sa"})[1]
        made = call(port, "POST", "/v1/iam/tokens", token, org,
                    {"serviceAccount": account["identity"]})[1]  # fmt: skip
        SUITE_SECRETS.add(made["token"])
        assert run_coffer("backup", tmp_path / "b", "--data-dir", data_dir).returncode == 0
        assert call(port, "DELETE", f"/v1/iam/tokens/{made['identity']}", token, org)[0] in (
            200, 204)  # fmt: skip
        assert call(port, "POST", f"{KEYS}/k/rotate", token, org, {})[0] == 200
    finally:
        stop(process)
    with (tmp_path / "copy.jsonl").open("w") as out:
        exported = subprocess.run([str(COFFER), "audit", "export", "--data-dir", data_dir],
                                  stdout=out, stderr=subprocess.PIPE, text=True, check=False,
                                  env={**clean_env(), **database_env(("--data-dir", data_dir))})  # fmt: skip
    assert exported.returncode == 0, exported.stderr
    done = run_coffer("restore", tmp_path / "b", "--data-dir", tmp_path / "r", "--root-key",
                      data_dir / "root.key", "--audit-copy", tmp_path / "copy.jsonl",
                      "-o", "json")  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert [c["action"] for c in report["undone"]] == ["iam.token.revoke"]
    assert report["undone"][0]["resource"] == made["identity"]
    assert [(c["action"], c["resource"]) for c in report["lost"]] == [
        ("kms.rotate", key["identity"])
    ]


@pytest.mark.one_engine  # documentation
def test_the_docs_name_coffer_backup_and_warn_against_copying_a_live_database() -> None:
    root = Path(__file__).resolve().parents[2]
    operations = (root / "docs" / "operations.md").read_text()
    assert "coffer backup" in operations
    assert "coffer restore" in operations
    assert "never copy" in operations.lower() or "do not copy" in operations.lower()
    for name in ("README.md", "docs/security.md", "docs/operations.md"):
        text = (root / name).read_text()
        assert "cp -p data" not in text, name
        assert "cp data/coffer.db" not in text, name
