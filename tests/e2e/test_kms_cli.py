"""``coffer keys``, ``coffer encrypt`` and friends through real processes: the getting-started
guide done with ``coffer`` commands only, binary data on stdin and in files, exit codes, and
settings from a profile file."""

from __future__ import annotations

import base64
import json
import os
import secrets
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import RunningCoffer
from tests.e2e.processes import COFFER

pytestmark = pytest.mark.slow


def coffer(env: dict[str, str], *args: str | Path, stdin: bytes | None = None
           ) -> subprocess.CompletedProcess[bytes]:  # fmt: skip
    return subprocess.run([COFFER, *map(str, args)], input=stdin, capture_output=True, env=env,
                          timeout=30, check=False)  # fmt: skip


def ok(env: dict[str, str], *args: str | Path, stdin: bytes | None = None) -> bytes:
    done = coffer(env, *args, stdin=stdin)
    assert done.returncode == 0, done.stderr.decode()
    return done.stdout


def as_json(env: dict[str, str], *args: str | Path) -> Any:
    lines = ok(env, *args, "--output", "json").decode().strip().splitlines()
    assert len(lines) == 1, lines  # one JSON object
    return json.loads(lines[0])


def test_the_getting_started_guide_with_coffer_commands(coffer_server: RunningCoffer) -> None:
    env = coffer_server.env()
    # Step 1: availability.
    summary = as_json(env, "summary")
    assert summary["featureEnabled"] is True
    assert [r["kmsAvailable"] for r in summary["regions"] if r["slug"] == "nl-01"] == [True]
    assert b"KMS enabled: yes" in ok(env, "summary")
    # Step 2: a key.
    key = as_json(env, "keys", "create", "app-encryption", "--type", "aes256-gcm96",
                  "--description", "Envelope encryption for application secrets")  # fmt: skip
    assert (key["slug"], key["keyType"], key["status"]) == ("app-encryption", "aes256-gcm96",
                                                             "active")  # fmt: skip
    # Step 3: encrypt; the text output is the ciphertext alone, for $(...).
    ciphertext = ok(env, "encrypt", "app-encryption", "hello, kms").decode().strip()
    assert ciphertext.startswith("thalassa:v1:")
    # Step 4: decrypt; the text output is the plaintext bytes.
    assert ok(env, "decrypt", "app-encryption", ciphertext) == b"hello, kms"
    opened = as_json(env, "decrypt", "app-encryption", ciphertext)
    assert (base64.b64decode(opened["plaintext"]), opened["keyVersion"]) == (b"hello, kms", "1")


def test_key_life_cycle_commands(coffer_server: RunningCoffer, tmp_path: Path) -> None:
    env = coffer_server.env()
    name = f"cli-{secrets.token_hex(4)}"
    created = as_json(env, "keys", "create", name, "--type", "aes256-gcm96", "--label",
                      "team=payments", "--export-allowed", "--rotation-period", "90d")  # fmt: skip
    assert created["labels"] == {"team": "payments"}
    assert (created["keyRotationEnabled"], created["rotationPeriodInDays"]) == (True, 90)
    listed = as_json(env, "keys", "list", "--label", "team=payments")["items"]
    assert [k["identity"] for k in listed] == [created["identity"]]
    assert name.encode() in ok(env, "keys", "list")  # the table for people
    assert as_json(env, "keys", "get", created["identity"])["slug"] == name
    assert as_json(env, "keys", "rotate", name)["latestVersion"] == 2
    assert as_json(env, "keys", "disable", name)["status"] == "disabled"
    assert as_json(env, "keys", "enable", name)["status"] == "active"
    assert as_json(env, "keys", "delete", name)["status"] == "pending_deletion"
    assert as_json(env, "keys", "cancel-deletion", name)["status"] == "active"

    material = tmp_path / "key.bin"
    material.write_bytes(b"an older, world-readable file")
    material.chmod(0o644)
    ok(env, "keys", "export", name, "--key-version", "1", "--out", material)
    assert len(material.read_bytes()) == 32
    assert material.stat().st_mode & 0o777 == 0o600
    exported = as_json(env, "keys", "export", name)
    assert exported["keyVersion"] == "2"


def test_binary_data_from_stdin_and_files(coffer_server: RunningCoffer, tmp_path: Path) -> None:
    env = coffer_server.env()
    name = f"bin-{secrets.token_hex(4)}"
    ok(env, "keys", "create", name, "--type", "aes256-gcm96")
    data = bytes(range(256)) + b"\x00\r\n\xff"
    source = tmp_path / "data.bin"
    source.write_bytes(data)

    from_file = ok(env, "encrypt", name, "--in", source).strip()
    from_stdin = ok(env, "encrypt", name, stdin=data).strip()
    for ciphertext in (from_file, from_stdin):
        assert ok(env, "decrypt", name, stdin=ciphertext) == data
    out = tmp_path / "out.bin"
    ok(env, "decrypt", name, from_file.decode(), "--out", out)
    assert out.read_bytes() == data


def test_signatures_and_macs_with_exit_codes(coffer_server: RunningCoffer, tmp_path: Path) -> None:
    env = coffer_server.env()
    run = secrets.token_hex(4)
    ok(env, "keys", "create", f"rsa-{run}", "--type", "rsa-2048")
    ok(env, "keys", "create", f"mac-{run}", "--type", "hmac-sha256")
    message = tmp_path / "message"
    message.write_bytes(b"\x00release v1.2.3\xff")

    signature = ok(env, "sign", f"rsa-{run}", "--in", message, "--signature-algorithm",
                   "pkcs1v15", "--hash-algorithm", "sha2-512").decode().strip()  # fmt: skip
    verify = ("verify", f"rsa-{run}", signature, "--signature-algorithm", "pkcs1v15",
              "--hash-algorithm", "sha2-512")  # fmt: skip
    assert ok(env, *verify, "--in", message) == b"valid\n"
    bad = coffer(env, *verify, "tampered")
    assert (bad.returncode, bad.stdout, bad.stderr) == (
        1,
        b"",
        b"coffer: the signature is not valid\n",
    )
    assert json.loads(coffer(env, *verify, "tampered", "-o", "json").stdout) == {"valid": False}

    pem = ok(env, "keys", "public-key", f"rsa-{run}").decode()
    assert pem.startswith("-----BEGIN PUBLIC KEY-----")

    mac = ok(env, "hmac", f"mac-{run}", stdin=message.read_bytes()).decode().strip()
    assert ok(env, "verify-hmac", f"mac-{run}", mac, "--in", message) == b"valid\n"
    assert coffer(env, "verify-hmac", f"mac-{run}", mac, "other").returncode == 1


def test_errors_are_one_line_and_usage_errors_exit_2(coffer_server: RunningCoffer) -> None:
    env = coffer_server.env()
    missing = coffer(env, "encrypt", "no-such-key", "x")
    assert missing.returncode == 1
    line = missing.stderr.decode()
    assert line.startswith("coffer: key 'no-such-key' not found in region nl-01 (key_not_found, ")
    assert line.count("\n") == 1
    assert coffer(env, "encrypt", "k", "data", "--in", "f").returncode == 2  # both given
    assert coffer(env, "keys", "create", "k").returncode == 2  # --type missing
    assert coffer(env, "keys", "create", "k", "--type", "x", "--label", "novalue").returncode == 2
    missing_file = coffer(env, "encrypt", "k", "--in", "/nonexistent/data")
    assert missing_file.returncode == 1
    assert missing_file.stderr.decode().count("\n") == 1  # one line, no traceback
    assert b"No such file" in missing_file.stderr
    unreachable = coffer(env | {"COFFER_URL": "http://127.0.0.1:9"}, "summary")
    assert unreachable.returncode == 1
    assert unreachable.stderr.decode().startswith("coffer: cannot reach Coffer at")


def test_settings_from_a_profile_file(coffer_server: RunningCoffer, tmp_path: Path) -> None:
    profiles = tmp_path / "profiles.toml"
    profiles.write_text(f"""
[local]
url = "{coffer_server.url}"
token = "{coffer_server.token}"
organisation = "{coffer_server.organisation}"
region = "nl-01"
""")
    os.chmod(profiles, 0o600)
    env = coffer_server.env()
    for name in ("COFFER_URL", "COFFER_TOKEN", "COFFER_ORG"):
        del env[name]
    env["COFFER_PROFILE_FILE"] = str(profiles)
    assert as_json(env, "summary", "--profile", "local")["featureEnabled"] is True
    assert as_json(env | {"COFFER_PROFILE": "local"}, "summary")["featureEnabled"] is True
    os.chmod(profiles, 0o644)
    refused = coffer(env, "summary", "--profile", "local")
    assert refused.returncode == 1
    assert b"readable by others" in refused.stderr
