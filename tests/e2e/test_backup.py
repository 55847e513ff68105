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
    assert "is not empty" in occupied.stderr
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


def rewrite(path: Path, target: Path, edit: Any) -> None:
    """``path`` with its header changed by ``edit(header)`` and extra members' bytes appended by
    it, and a recomputed trailing digest: what someone who can write the backup can make."""
    import hashlib

    raw = path.read_bytes()[:-32]
    magic, rest = raw.split(b"\n", 1)
    line, body = rest.split(b"\n", 1)
    header = json.loads(line)
    body += edit(header) or b""
    data = magic + b"\n" + json.dumps(header).encode() + b"\n" + body
    target.write_bytes(data + hashlib.sha256(data).digest())


@pytest.mark.one_engine  # the file's format: one engine shows it
def test_a_crafted_backup_cannot_name_a_path_or_smuggle_in_a_root_key(tmp_path: Path) -> None:
    data_dir, other = tmp_path / "data", tmp_path / "other"
    init(data_dir)
    init(other)
    assert run_coffer("backup", tmp_path / "b", "--data-dir", data_dir).returncode == 0
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    key = (other / "root.key").read_bytes()
    import hashlib

    def renamed(name: str) -> Any:
        def edit(header: dict[str, Any]) -> None:
            header["members"][-1]["name"] = name

        return edit

    def smuggled(header: dict[str, Any]) -> bytes:
        header["members"].append({"name": "root.key", "size": len(key),
                                  "sha256": hashlib.sha256(key).hexdigest()})  # fmt: skip
        return key

    def doubled(header: dict[str, Any]) -> None:
        header["members"].append(dict(header["members"][0], size=0))

    cases = {"../victim.txt": renamed("../victim.txt"), "absolute": renamed(str(victim)),
             "root key": smuggled, "duplicate": doubled}  # fmt: skip
    for case, edit in cases.items():
        crafted = tmp_path / f"crafted-{len(case)}"
        rewrite(tmp_path / "b", crafted, edit)
        done = run_coffer("restore", crafted, "--data-dir", tmp_path / "r", "--root-key",
                          data_dir / "root.key")  # fmt: skip
        assert done.returncode == 1, case
        assert "Traceback" not in done.stderr, case
        assert len(done.stderr.strip().splitlines()) == 1, (case, done.stderr)
        assert victim.read_text() == "keep me", case
        assert not (tmp_path / "r").exists(), case
    smuggled_restore = run_coffer("restore", tmp_path / f"crafted-{len('root key')}",
                                  "--data-dir", tmp_path / "r")  # fmt: skip
    assert "holds a root key without encryption" in smuggled_restore.stderr


@pytest.mark.one_engine  # SQLite's file put back: the anchor's part is the same on both engines
def test_backup_refuses_a_database_rolled_back_behind_its_anchor(tmp_path: Path) -> None:
    """A database put back to an older copy: `audit verify` says so, and a backup — which would
    carry the rollback into a restore that verifies — is refused."""
    data_dir = tmp_path / "data"
    boot = init(data_dir)
    token, org = boot["token"], boot["organisation"]
    for round_ in range(2):  # each server's shutdown signs a checkpoint into the anchor
        port = free_port()
        process = start_serve("--data-dir", data_dir, "--port", str(port),
                              log=tmp_path / f"{round_}.log")  # fmt: skip
        try:
            wait_until_healthy(process, port, tmp_path / f"{round_}.log")
            for n in range(3):
                status, _ = call(port, "POST", KEYS, token, org,
                                 {"name": f"k{round_}-{n}", "keyType": "aes256-gcm96"})  # fmt: skip
                assert status == 201
        finally:
            stop(process)
        if round_ == 0:
            old = (data_dir / "coffer.db").read_bytes()  # the server is stopped: a whole copy
    (data_dir / "coffer.db").write_bytes(old)
    assert run_coffer("audit", "verify", "--data-dir", data_dir).returncode == 1
    refused = run_coffer("backup", tmp_path / "b", "--data-dir", data_dir)
    assert refused.returncode == 1
    assert "rolled back or edited" in refused.stderr
    assert not (tmp_path / "b").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


@pytest.mark.one_engine  # files and directories: one engine shows it
def test_backup_and_restore_leave_nothing_of_their_own_and_touch_nothing_else(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "data"
    init(data_dir)
    out = tmp_path / "b"
    victim = tmp_path / "victim"
    victim.write_text("keep me")
    out.symlink_to(victim)
    refused = run_coffer("backup", out, "--data-dir", data_dir)
    assert refused.returncode == 1
    assert "exists" in refused.stderr
    old = os.umask(0)
    try:
        forced = run_coffer("backup", out, "--data-dir", data_dir, "--force")
    finally:
        os.umask(old)
    assert forced.returncode == 0, forced.stderr
    assert not out.is_symlink()  # the link was replaced, not written through
    assert victim.read_text() == "keep me"
    assert os.stat(out).st_mode & 0o777 == 0o600

    empty = tmp_path / "empty"
    empty.mkdir()
    foreign = run_coffer("restore", out, "--data-dir", empty, "--root-key", victim)
    assert foreign.returncode == 1  # not a root key: refused before anything is written
    init(tmp_path / "other")
    wrong = run_coffer("restore", out, "--data-dir", empty, "--root-key",
                       tmp_path / "other" / "root.key")  # fmt: skip
    assert wrong.returncode == 1
    assert "root key" in wrong.stderr
    assert empty.is_dir()  # the directory that was there stays, empty again
    assert list(empty.iterdir()) == []
    done = run_coffer("restore", out, "--data-dir", empty, "--root-key", data_dir / "root.key")
    assert done.returncode == 0, done.stderr


@pytest.mark.one_engine  # the copy's check: one engine shows it
def test_restore_refuses_an_audit_copy_that_does_not_reach_past_the_backup(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "data"
    init(data_dir)
    assert run_coffer("backup", tmp_path / "b", "--data-dir", data_dir).returncode == 0
    env = {**clean_env(), **database_env(("--data-dir", data_dir))}
    with (tmp_path / "copy.jsonl").open("w") as out:
        subprocess.run([str(COFFER), "audit", "export", "--data-dir", data_dir], stdout=out,
                       env=env, check=True)  # fmt: skip
    stale = run_coffer("restore", tmp_path / "b", "--data-dir", tmp_path / "r", "--root-key",
                       data_dir / "root.key", "--audit-copy", tmp_path / "copy.jsonl")  # fmt: skip
    assert stale.returncode == 1
    assert "ends at the backup's newest record or before" in stale.stderr
    assert not (tmp_path / "r").exists()


@pytest.mark.one_engine  # starts a PostgreSQL of its own: both engines in one test
def test_a_backup_restores_across_engines_both_ways(tmp_path: Path) -> None:
    from tests.postgres import new_schema, private_cluster

    data_dir = tmp_path / "data"
    boot = init(data_dir)
    token, org = boot["token"], boot["organisation"]
    sealed: dict[str, str] = {}

    def serving(directory: Path, env: dict[str, str], work: Any) -> None:
        port = free_port()
        log = tmp_path / f"{directory.name}.log"
        process = start_serve("--data-dir", directory, "--port", str(port), log=log, env=env)
        try:
            wait_until_healthy(process, port, log)
            work(port)
        finally:
            stop(process)

    def write(port: int) -> None:
        assert call(port, "POST", KEYS, token, org, {"name": "k", "keyType": "aes256-gcm96"}
                    )[0] == 201  # fmt: skip
        sealed["v1"] = call(port, "POST", f"{KEYS}/k/encrypt", token, org,
                            {"plaintext": b64(b"one")})[1]["ciphertext"]  # fmt: skip
        assert call(port, "POST", f"{KEYS}/k/rotate", token, org, {})[0] == 200

    def read(port: int) -> None:
        status, body = call(port, "POST", f"{KEYS}/k/decrypt", token, org,
                            {"ciphertext": sealed["v1"]})  # fmt: skip
        assert status == 200, body
        assert base64.b64decode(body["plaintext"]) == b"one"

    serving(data_dir, {}, write)
    with private_cluster() as (cluster, _):
        url = new_schema(cluster)
        pg_env = {"COFFER_DATABASE_URL": url}
        assert run_coffer("backup", tmp_path / "from-sqlite", "--data-dir", data_dir
                          ).returncode == 0  # fmt: skip
        into_pg = run_coffer("restore", tmp_path / "from-sqlite", "--data-dir", tmp_path / "pg",
                             "--root-key", data_dir / "root.key",
                             env=clean_env(**pg_env))  # fmt: skip
        assert into_pg.returncode == 0, into_pg.stderr
        serving(tmp_path / "pg", pg_env, read)
        from_pg = run_coffer("backup", tmp_path / "from-pg", "--data-dir", tmp_path / "pg",
                             env=clean_env(**pg_env))  # fmt: skip
        assert from_pg.returncode == 0, from_pg.stderr
    back = run_coffer("restore", tmp_path / "from-pg", "--data-dir", tmp_path / "sqlite",
                      "--root-key", data_dir / "root.key", env=clean_env())  # fmt: skip
    assert back.returncode == 0, back.stderr
    serving(tmp_path / "sqlite", {}, read)


def test_a_backup_made_by_an_older_coffer_is_migrated_as_it_is_restored(tmp_path: Path) -> None:
    """A backup at the previous schema revision (its database taken back one migration, as the
    previous release wrote it) restores, is migrated, verifies and decrypts."""
    from alembic import command

    from coffer.crypto.backup_file import extract, read_header, write_backup
    from coffer.storage.database import _alembic_config, plain_engine

    data_dir = tmp_path / "data"
    boot = init(data_dir)
    token, org = boot["token"], boot["organisation"]
    port = free_port()
    process = start_serve("--data-dir", data_dir, "--port", str(port), log=tmp_path / "a.log")
    try:
        wait_until_healthy(process, port, tmp_path / "a.log")
        assert call(port, "POST", KEYS, token, org, {"name": "k", "keyType": "aes256-gcm96"}
                    )[0] == 201  # fmt: skip
        sealed = call(port, "POST", f"{KEYS}/k/encrypt", token, org,
                      {"plaintext": b64(b"older")})[1]["ciphertext"]  # fmt: skip
    finally:
        stop(process)
    assert run_coffer("backup", tmp_path / "b", "--data-dir", data_dir).returncode == 0
    header = read_header(tmp_path / "b")
    unpacked = tmp_path / "unpacked"
    unpacked.mkdir()
    extract(tmp_path / "b", header, lambda name: unpacked / name)
    previous = "0011"
    engine = plain_engine(f"sqlite:///{unpacked / 'coffer.db'}")
    try:
        command.downgrade(_alembic_config(engine), previous)
    finally:
        engine.dispose()
    manifest = dict(header.manifest, schemaRevision=previous)
    members = [(m.name, unpacked / m.name) for m in header.members]
    write_backup(tmp_path / "older", manifest, members)

    done = run_coffer("restore", tmp_path / "older", "--data-dir", tmp_path / "r",
                      "--root-key", data_dir / "root.key")  # fmt: skip
    assert done.returncode == 0, done.stderr
    port = free_port()
    process = start_serve("--data-dir", tmp_path / "r", "--port", str(port),
                          log=tmp_path / "r.log")  # fmt: skip
    try:
        wait_until_healthy(process, port, tmp_path / "r.log")
        status, body = call(port, "POST", f"{KEYS}/k/decrypt", token, org, {"ciphertext": sealed})
        assert status == 200, body
        assert base64.b64decode(body["plaintext"]) == b"older"
    finally:
        stop(process)
