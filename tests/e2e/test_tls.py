"""``coffer serve --tls-cert --tls-key`` serves HTTPS; plain HTTP beyond loopback gets a warning."""

from __future__ import annotations

import datetime
import http.client
import ipaddress
import json
import ssl
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.e2e.processes import (
    STARTUP_DEADLINE_SECONDS,
    ServeFactory,
    free_port,
    http_get,
    run_coffer,
    start_serve,
    stop,
)

pytestmark = pytest.mark.slow


def self_signed(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "coffer-test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def https_get(
    port: int, path: str, context: ssl.SSLContext, headers: dict[str, str]
) -> tuple[int, dict[str, object]]:
    connection = http.client.HTTPSConnection("127.0.0.1", port, timeout=5, context=context)
    try:
        connection.request("GET", path, headers=headers)
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def answers_plain_http(port: int) -> bool:
    try:
        http_get(port, "/healthz")
    except (http.client.HTTPException, OSError, ValueError):
        return False
    return True


def test_serve_with_a_certificate_speaks_https_only(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    init = run_coffer("init", "--data-dir", data_dir, "--output", "json")
    assert init.returncode == 0, init.stderr
    boot = json.loads(init.stdout)
    cert, key = self_signed(tmp_path)
    port = free_port()
    log = tmp_path / "serve.log"
    process = start_serve(
        "--data-dir", data_dir, "--port", str(port), "--tls-cert", cert, "--tls-key", key, log=log
    )
    try:
        context = ssl.create_default_context(cafile=str(cert))
        headers = {
            "Authorization": f"Bearer {boot['token']}",
            "X-Organisation-Identity": boot["organisation"],
        }
        deadline = time.monotonic() + STARTUP_DEADLINE_SECONDS
        while True:
            assert process.poll() is None, log.read_text()
            try:
                status, body = https_get(port, "/v1/kms/summary", context, headers)
                break
            except (OSError, ssl.SSLError):
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.05)
        assert status == 200
        assert body["featureEnabled"] is True
        # The same port does not answer plain HTTP.
        assert not answers_plain_http(port)
        assert "without TLS" not in log.read_text()
    finally:
        stop(process)


def test_serve_warns_when_listening_beyond_loopback_without_tls(
    tmp_path: Path, serve: ServeFactory
) -> None:
    data_dir = tmp_path / "data"
    assert run_coffer("init", "--data-dir", data_dir, "--output", "json").returncode == 0
    loopback_port = free_port()
    serve("--data-dir", data_dir, "--port", str(loopback_port), port=loopback_port)
    wildcard_port = free_port()
    serve(
        "--data-dir",
        data_dir,
        "--host",
        "0.0.0.0",
        "--port",
        str(wildcard_port),
        port=wildcard_port,
    )

    assert answers_plain_http(loopback_port)  # the probe of the HTTPS test can tell
    quiet = (tmp_path / f"serve-{loopback_port}.log").read_text()
    assert "without TLS" not in quiet
    assert "file seal" not in quiet
    warning = (tmp_path / f"serve-{wildcard_port}.log").read_text()
    assert "WARNING" in warning
    assert "listening on 0.0.0.0 without TLS" in warning
    # The development seal beyond loopback: the risk and the alternatives, named.
    assert "the file seal keeps the root key in" in warning
    assert "whoever copies the data directory" in warning
    assert "--seal shamir" in warning
    assert "--seal pkcs11" in warning
