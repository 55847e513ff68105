"""A command line without surprises: large files signed, durations with units, help that names
its environment variables at 80 columns, connection options before the command, settings
missing or wrong said before anything is sent, errors in one line that name what was given,
and TLS mistakes that fail at once."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import secrets
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from typer.testing import CliRunner

from coffer.cli.connect import plain_usage
from coffer.cli.main import app
from coffer.domain.keytypes import KeyType
from tests.conftest import SUITE_SECRETS
from tests.e2e.conftest import RunningCoffer
from tests.e2e.processes import (
    COFFER,
    STARTUP_DEADLINE_SECONDS,
    clean_env,
    free_port,
    run_coffer,
    start_serve,
    stop,
)
from tests.e2e.test_tls import https_get, self_signed

pytestmark = pytest.mark.slow

ENGINE_FREE = pytest.mark.one_engine  # nothing here depends on the storage engine beneath


def coffer(env: dict[str, str], *args: str | Path, stdin: bytes | None = None
           ) -> subprocess.CompletedProcess[bytes]:  # fmt: skip
    return subprocess.run([COFFER, *map(str, args)], input=stdin, capture_output=True, env=env,
                          timeout=30, check=False)  # fmt: skip


def ok(env: dict[str, str], *args: str | Path, stdin: bytes | None = None) -> bytes:
    done = coffer(env, *args, stdin=stdin)
    assert done.returncode == 0, done.stderr.decode()
    return done.stdout


def as_json(env: dict[str, str], *args: str | Path) -> Any:
    return json.loads(ok(env, *args, "--output", "json"))


def one_line(done: subprocess.CompletedProcess[bytes]) -> str:
    """The error of a failed command: exactly one line on stderr, nothing on stdout."""
    text = done.stderr.decode()
    assert text.count("\n") == 1, text
    assert text.endswith("\n"), text
    assert done.stdout == b""
    assert text.startswith("coffer: "), text
    return text.strip()


# --- 1: sign and verify files larger than one request takes --------------------------------


@pytest.mark.parametrize(
    ("key_type", "options"),
    [("ecdsa-p256", ()), ("rsa-2048", ("--hash-algorithm", "sha2-512"))],
)
def test_a_200_kib_file_is_signed_and_verified_through_its_digest(
    coffer_server: RunningCoffer, tmp_path: Path, key_type: str, options: tuple[str, ...]
) -> None:
    env = coffer_server.env()
    name = f"big-{secrets.token_hex(4)}"
    ok(env, "keys", "create", name, "--type", key_type)
    document = tmp_path / "release.tar"
    document.write_bytes(os.urandom(200 * 1024))

    signature = ok(env, "sign", name, "--in", document, *options).decode().strip()
    assert ok(env, "verify", name, signature, "--in", document, *options) == b"valid\n"
    tampered = tmp_path / "tampered.tar"
    tampered.write_bytes(document.read_bytes()[:-1] + b"!")
    assert coffer(env, "verify", name, signature, "--in", tampered, *options).returncode == 1

    # The signature is one of the whole file, as any verifier checks it.
    public = serialization.load_pem_public_key(ok(env, "keys", "public-key", name))
    raw = base64.b64decode(signature.removeprefix("thalassa:v1:"))
    if isinstance(public, ec.EllipticCurvePublicKey):
        public.verify(raw, document.read_bytes(), ec.ECDSA(hashes.SHA256()))
    else:
        assert isinstance(public, rsa.RSAPublicKey)
        pss = padding.PSS(mgf=padding.MGF1(hashes.SHA512()), salt_length=64)
        public.verify(raw, document.read_bytes(), pss, hashes.SHA512())


def test_a_large_file_and_an_ed25519_key_say_what_to_do(
    coffer_server: RunningCoffer, tmp_path: Path
) -> None:
    env = coffer_server.env()
    name = f"ed-{secrets.token_hex(4)}"
    ok(env, "keys", "create", name, "--type", "ed25519")
    document = tmp_path / "big"
    document.write_bytes(b"x" * 70_000)
    line = one_line(coffer(env, "sign", name, "--in", document))
    assert "ed25519" in line
    assert f"openssl dgst -sha256 -binary FILE | coffer sign {name}" in line
    # What fits in one request is signed as before.
    signature = ok(env, "sign", name, stdin=b"x" * 65_535).decode().strip()
    assert ok(env, "verify", name, signature, stdin=b"x" * 65_535) == b"valid\n"


# --- 2: durations need a unit --------------------------------------------------------------


@ENGINE_FREE
@pytest.mark.parametrize(
    "args",
    [
        ("token", "create", "--admin", "--expires-in", "90"),
        ("operator", "generate-admin-token", "--data-dir", "/nonexistent", "--expires-in", "90"),
        ("init", "--data-dir", "/nonexistent", "--admin-token-ttl", "90"),
        ("keys", "create", "k", "--type", "aes256-gcm96", "--rotation-period", "90"),
        ("keys", "create", "k", "--type", "aes256-gcm96", "--rotation-period", "36h"),
        ("token", "create", "--admin", "--expires-in", "soon"),
    ],
)
def test_a_duration_without_a_unit_is_a_usage_error(args: tuple[str, ...]) -> None:
    done = coffer(clean_env(COFFER_URL="http://127.0.0.1:9", COFFER_TOKEN="t"), *args)
    assert done.returncode == 2
    line = one_line(done)
    assert "d (days)" in line or "whole number of days" in line, line
    assert line.endswith("--help)"), line  # where to read more


def test_durations_with_units_mean_what_they_say(coffer_server: RunningCoffer) -> None:
    env = coffer_server.env()
    issued = as_json(env, "token", "create", "--admin", "--expires-in", "90d")
    SUITE_SECRETS.add(issued["token"])
    expires = datetime.fromisoformat(issued["expiresAt"])
    assert abs(expires - (datetime.now(UTC) + timedelta(days=90))) < timedelta(minutes=5)
    key = as_json(env, "keys", "create", f"r-{secrets.token_hex(4)}", "--type", "aes256-gcm96",
                  "--rotation-period", "2160h")  # fmt: skip
    assert (key["keyRotationEnabled"], key["rotationPeriodInDays"]) == (True, 90)


# --- 3: help ----------------------------------------------------------------------------------


def _command_paths() -> Iterator[tuple[str, ...]]:
    import typer.main

    def walk(command: Any, path: tuple[str, ...]) -> Iterator[tuple[str, ...]]:
        yield path
        for name, sub in getattr(command, "commands", {}).items():
            yield from walk(sub, (*path, name))

    plain_usage(app)
    yield from walk(typer.main.get_command(app), ())


@ENGINE_FREE
def test_every_help_fits_80_columns_and_names_its_environment_variables() -> None:
    import typer.main

    plain_usage(app)
    root = typer.main.get_command(app)
    runner = CliRunner()
    paths = list(_command_paths())
    assert ("encrypt",) in paths
    assert ("envelope", "encrypt") in paths
    for path in paths:
        shown = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "80"}, terminal_width=80)
        assert shown.exit_code == 0, (path, shown.output)
        text = shown.output
        assert "<bool>" not in text, (path, text)
        assert "{" not in text.splitlines()[0], (path, text)
        assert all(len(line) <= 80 for line in text.splitlines()), (path, text)
        command = root
        for name in path:
            command = command.commands[name]  # type: ignore[attr-defined]
        flat = " ".join(text.split())
        for param in command.params:
            if param.param_type_name != "option" or getattr(param, "hidden", False):
                continue
            assert param.help, (path, param.name)  # every option says what it is
            if param.envvar:
                assert f"[env var: {param.envvar}" in flat, (path, param.name)


@ENGINE_FREE
def test_the_help_of_the_real_command_names_the_variables() -> None:
    env = clean_env(COLUMNS="80")
    for args in (("--help",), ("encrypt", "--help"), ("envelope", "encrypt", "--help")):
        text = ok(env, *args).decode()
        for variable in ("COFFER_URL", "COFFER_TOKEN", "COFFER_ORG", "COFFER_CA_CERT"):
            assert variable in text, (args, variable)
        assert "<bool>" not in text
    usage = ok(env, "encrypt", "--help").decode().splitlines()[0]
    assert usage == "Usage: coffer encrypt [OPTIONS] KEY [DATA]"


# --- 4: -o is the output format; files are --out ----------------------------------------------


def test_envelope_writes_to_out_and_still_takes_the_old_o(
    coffer_server: RunningCoffer, tmp_path: Path
) -> None:
    env = coffer_server.env()
    name = f"env-{secrets.token_hex(4)}"
    ok(env, "keys", "create", name, "--type", "aes256-gcm96")
    original = tmp_path / "data"
    original.write_bytes(os.urandom(100_000))
    ok(env, "envelope", "encrypt", "--key", name, original, "--out", tmp_path / "data.cfev")
    ok(env, "envelope", "decrypt", tmp_path / "data.cfev", "-o", tmp_path / "back")
    assert (tmp_path / "back").read_bytes() == original.read_bytes()
    assert ok(env, "envelope", "decrypt", tmp_path / "data.cfev", "--out", "-") == (
        original.read_bytes()
    )
    missing = coffer(env, "envelope", "decrypt", tmp_path / "data.cfev")
    assert missing.returncode == 2
    assert "--out" in one_line(missing)
    assert "-o, --output" in ok(env, "keys", "list", "--help").decode()


# --- 5: missing settings are said before anything is sent --------------------------------------


@ENGINE_FREE
def test_a_missing_token_or_organisation_is_said_before_sending() -> None:
    # A port nobody listens on: had anything been sent, the error would say so.
    nowhere = clean_env(COFFER_URL=f"http://127.0.0.1:{free_port()}")
    no_token = coffer(nowhere, "encrypt", "k", "x")
    assert no_token.returncode == 2
    assert one_line(no_token) == (
        "coffer: no token: pass --token or set COFFER_TOKEN (or use a profile)"
    )
    no_org = coffer(nowhere | {"COFFER_TOKEN": "t"}, "keys", "list")
    assert no_org.returncode == 2
    assert one_line(no_org) == (
        "coffer: no organisation: pass --org or set COFFER_ORG (or use a profile)"
    )
    assert "no organisation" in one_line(coffer(nowhere, "project", "list", "--token", "t"))
    # Platform-wide commands need no organisation, and seal-status not even a token.
    assert "cannot reach" in one_line(coffer(nowhere | {"COFFER_TOKEN": "t"}, "org", "list"))
    assert "cannot reach" in one_line(coffer(nowhere, "operator", "seal-status"))


# --- 6 and 8: slugs, and errors that name what was given -------------------------------------


def test_role_bind_takes_a_key_slug(coffer_server: RunningCoffer) -> None:
    env = coffer_server.env()
    slug = f"cards-{secrets.token_hex(4)}"
    key = as_json(env, "keys", "create", slug, "--type", "aes256-gcm96")
    account = as_json(env, "service-account", "create", f"sa-{secrets.token_hex(4)}")
    binding = as_json(env, "role", "bind", "--principal", account["name"], "--policy",
                      "kms:CryptoUser", "--key", slug)  # fmt: skip
    assert (binding["scope"], binding["keyIdentity"]) == ("key", key["identity"])
    missing = coffer(env, "role", "bind", "--principal", account["name"], "--policy",
                     "kms:CryptoUser", "--key", "no-such-key")  # fmt: skip
    assert missing.returncode == 1
    assert "'no-such-key'" in one_line(missing)


def test_errors_repeat_the_name_given_and_say_what_to_do(
    coffer_server: RunningCoffer, tmp_path: Path
) -> None:
    env = coffer_server.env()
    missing = coffer(env, "encrypt", "no-such-key", "x")
    assert missing.returncode == 1
    line = one_line(missing)
    assert line.startswith("coffer: key 'no-such-key' not found in region nl-01 (key_not_found")
    assert "coffer keys list" in line

    unknown = coffer(env, "keys", "create", "k", "--type", "aes512")
    assert unknown.returncode == 2
    line = one_line(unknown)
    assert "'aes512'" in line
    assert all(kind.value in line for kind in KeyType)

    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(70_000))
    name = f"enc-{secrets.token_hex(4)}"
    ok(env, "keys", "create", name, "--type", "aes256-gcm96")
    too_large = coffer(env, "encrypt", name, "--in", big)
    assert too_large.returncode == 1
    line = one_line(too_large)
    assert str(big) in line
    assert "70000 bytes" in line
    assert "coffer envelope encrypt" in line

    usage = coffer(env, "encrypt")
    assert usage.returncode == 2
    assert "KEY" in one_line(usage)
    assert coffer(env, "no-such-command").returncode == 2


# --- 7: version, connection options before the command, TLS ------------------------------------


@ENGINE_FREE
def test_version() -> None:
    assert ok(clean_env(), "--version") == f"coffer {version('coffer')}\n".encode()


def test_connection_options_before_the_command(coffer_server: RunningCoffer) -> None:
    bare = clean_env()
    server = ("--url", coffer_server.url, "--token", coffer_server.token)
    summary = json.loads(ok(bare, *server, "--org", coffer_server.organisation, "summary",
                            "-o", "json"))  # fmt: skip
    assert summary["featureEnabled"] is True
    # After the command wins over before it; before it wins over the environment.
    assert coffer(bare, *server, "--org", "nowhere", "summary", "--org",
                  coffer_server.organisation).returncode == 0  # fmt: skip
    wrong = coffer(coffer_server.env(), "--token", "coffer_wrong", "summary")
    assert wrong.returncode == 1
    assert "unauthenticated" in one_line(wrong)
    # Options that belong to one command are not taken for the connection's.
    assert coffer(coffer_server.env(), "--project", "nowhere", "org", "list").returncode == 0


@contextlib.contextmanager
def plain_http_port() -> Iterator[tuple[int, list[int]]]:
    """A port that answers HTTP (never TLS); the list counts the connections it accepted."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    accepted: list[int] = []

    def answer() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            accepted.append(1)
            with conn, contextlib.suppress(OSError):
                conn.recv(4096)
                conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")

    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1], accepted
    finally:
        listener.close()


@ENGINE_FREE
def test_tls_to_a_plain_http_port_fails_at_once_in_one_line() -> None:
    with plain_http_port() as (port, accepted):
        env = clean_env(COFFER_TOKEN="t", COFFER_ORG="o")
        started = time.monotonic()
        done = coffer(env, "summary", "--url", f"https://127.0.0.1:{port}")
        elapsed = time.monotonic() - started
    assert done.returncode == 1
    assert one_line(done).startswith(f"coffer: https://127.0.0.1:{port}: TLS handshake failed")
    assert "use http://" in done.stderr.decode()
    assert elapsed < 5
    assert len(accepted) == 1  # no retry


@ENGINE_FREE
def test_a_private_ca_is_given_with_ca_cert(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    assert run_coffer("init", "--data-dir", data_dir).returncode == 0
    cert, key = self_signed(tmp_path)
    port = free_port()
    log = tmp_path / "serve.log"
    process = start_serve("--data-dir", data_dir, "--port", str(port), "--tls-cert", cert,
                          "--tls-key", key, log=log)  # fmt: skip
    try:
        context = ssl.create_default_context(cafile=str(cert))
        deadline = time.monotonic() + STARTUP_DEADLINE_SECONDS
        while True:
            assert process.poll() is None, log.read_text()
            try:
                https_get(port, "/healthz", context, {})
                break
            except (OSError, ssl.SSLError):
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.05)
        env = clean_env(COFFER_URL=f"https://127.0.0.1:{port}")
        untrusted = coffer(env, "operator", "seal-status")
        assert untrusted.returncode == 1
        line = one_line(untrusted)
        assert "not trusted" in line
        assert "--ca-cert" in line
        assert b"unsealed" in ok(env, "operator", "seal-status", "--ca-cert", cert)
        assert b"unsealed" in ok(env, "--ca-cert", cert, "operator", "seal-status")
        assert b"unsealed" in ok(env | {"COFFER_CA_CERT": str(cert)}, "operator", "seal-status")
        not_pem = coffer(env, "operator", "seal-status", "--ca-cert", data_dir / "root.key")
        assert not_pem.returncode == 1
        assert "CA certificate file" in one_line(not_pem)
        # Plain HTTP to the HTTPS port: one line, at once.
        started = time.monotonic()
        plain = coffer(env | {"COFFER_URL": f"http://127.0.0.1:{port}"}, "operator",
                       "seal-status")  # fmt: skip
        assert plain.returncode == 1
        assert "use https://" in one_line(plain)
        assert time.monotonic() - started < 5
    finally:
        stop(process)
