"""``hmac``, ``verify-hmac``, ``export`` and the capability table over HTTP (spec §3, §5.7,
§5.10)."""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterator
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from tests.api.test_access import error
from tests.conftest import Kms, initialised, make_settings, open_kms

KEYS = "/v1/kms/nl-01/keys"
ALL_TYPES = [
    "aes128-gcm96", "aes256-gcm96", "chacha20-poly1305", "rsa-2048", "rsa-3072", "rsa-4096",
    "ecdsa-p256", "ecdsa-p384", "ecdsa-p521", "ed25519", "hmac", "hmac-sha256", "hmac-sha512",
]  # fmt: skip
SUPPORTED = {
    "encrypt": {"aes128-gcm96", "aes256-gcm96", "chacha20-poly1305", "rsa-2048", "rsa-3072",
                "rsa-4096"},
    "sign": {"rsa-2048", "rsa-3072", "rsa-4096", "ecdsa-p256", "ecdsa-p384", "ecdsa-p521",
             "ed25519"},
    "hmac": {"hmac", "hmac-sha256", "hmac-sha512"},
}  # fmt: skip
SUPPORTED["decrypt"] = SUPPORTED["encrypt"]
SUPPORTED["verify"] = SUPPORTED["sign"]
SUPPORTED["public-key"] = SUPPORTED["sign"]
SUPPORTED["verify-hmac"] = SUPPORTED["hmac"]
REQUESTS: dict[str, dict[str, Any]] = {
    "encrypt": {"plaintext": "aGVsbG8="},
    "decrypt": {"ciphertext": "thalassa:v1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"},
    "sign": {"input": "aGVsbG8="},
    "verify": {"input": "aGVsbG8=", "signature": "thalassa:v1:AAAA"},
    "hmac": {"input": "aGVsbG8="},
    "verify-hmac": {"input": "aGVsbG8=", "hmac": "thalassa:v1:AAAA"},
}
DATA = b"message to authenticate"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.fixture(scope="module")
def kms(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kms]:
    """One exportable key of every type."""
    settings = make_settings(tmp_path_factory.mktemp("hmac-export") / "data")
    for running in open_kms(settings, initialised(settings)):
        for key_type in ALL_TYPES:
            running.create_key(key_type, key_type, exportAllowed=True)
        yield running


def exported(kms: Kms, key: str, **body: Any) -> bytes:
    response = kms.post(f"{KEYS}/{key}/export", body or None)
    assert response.status_code == 200, response.text
    return base64.b64decode(response.json()["keyMaterial"])


@pytest.mark.parametrize("key_type", ALL_TYPES)
@pytest.mark.parametrize("operation", [*REQUESTS, "public-key"])
def test_every_operation_a_type_lacks_is_unsupported_operation(
    kms: Kms, key_type: str, operation: str
) -> None:
    if operation == "public-key":
        response = kms.get(f"{KEYS}/{key_type}/public-key")
    else:
        response = kms.post(f"{KEYS}/{key_type}/{operation}", REQUESTS[operation])
    if key_type in SUPPORTED[operation]:
        assert response.json().get("code") != "unsupported_operation", response.text
    else:
        error(response, 400, "unsupported_operation")


# --- HMAC -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key_type", "algorithm", "digest"),
    [("hmac", None, hashlib.sha256), ("hmac", "sha2-512", hashlib.sha512),
     ("hmac", "sha3-256", hashlib.sha3_256), ("hmac", "sha384", hashlib.sha384),
     ("hmac-sha256", None, hashlib.sha256), ("hmac-sha256", "sha2-256", hashlib.sha256),
     ("hmac-sha512", None, hashlib.sha512)],
)  # fmt: skip
def test_hmac_is_rfc_2104_with_the_exported_key(
    kms: Kms, key_type: str, algorithm: str | None, digest: Any
) -> None:
    options = {"algorithm": algorithm} if algorithm else {}
    response = kms.post(f"{KEYS}/{key_type}/hmac", {"input": b64(DATA), **options})
    assert response.status_code == 200, response.text
    mac = response.json()["hmac"]
    assert response.json()["keyVersion"] == "1"
    expected = hmac.new(exported(kms, key_type), DATA, digest).digest()
    assert mac == "thalassa:v1:" + b64(expected)
    checked = kms.post(f"{KEYS}/{key_type}/verify-hmac",
                       {"input": b64(DATA), "hmac": mac, **options})  # fmt: skip
    assert checked.json() == {"valid": True, "keyVersion": "1"}
    wrong = kms.post(f"{KEYS}/{key_type}/verify-hmac",
                     {"input": b64(DATA + b"!"), "hmac": mac, **options})  # fmt: skip
    assert wrong.json() == {"valid": False, "keyVersion": "1"}


def test_hmac_key_lengths_follow_the_type(kms: Kms) -> None:
    assert len(exported(kms, "hmac")) == 32
    assert len(exported(kms, "hmac-sha256")) == 32
    assert len(exported(kms, "hmac-sha512")) == 64


def test_verify_hmac_accepts_both_names_of_the_hash(kms: Kms) -> None:
    mac = kms.post(f"{KEYS}/hmac/hmac", {"input": b64(DATA), "algorithm": "sha2-384"}).json()
    for name in ("hashAlgorithm", "algorithm"):
        body = {"input": b64(DATA), "hmac": mac["hmac"], name: "sha2-384"}
        assert kms.post(f"{KEYS}/hmac/verify-hmac", body).json()["valid"] is True
    # The same MAC checked under another hash is simply not valid.
    body = {"input": b64(DATA), "hmac": mac["hmac"]}
    assert kms.post(f"{KEYS}/hmac/verify-hmac", body).json()["valid"] is False


@pytest.mark.parametrize(
    ("key_type", "body", "code"),
    [("hmac-sha256", {"algorithm": "sha2-512"}, "invalid_request"),
     ("hmac-sha512", {"algorithm": "sha2-256"}, "invalid_request"),
     ("hmac", {"algorithm": "md5"}, "invalid_request"),
     ("hmac", {"algorithm": "sha2-256", "hashAlgorithm": "sha2-512"}, "invalid_request"),
     ("hmac", {"keyVersion": 3}, "invalid_key_version"),
     ("hmac", {"input": "***"}, "invalid_request"),
     ("hmac", {"input": b64(bytes(65_536))}, "invalid_request")],
)  # fmt: skip
def test_bad_hmac_requests_are_400(
    kms: Kms, key_type: str, body: dict[str, Any], code: str
) -> None:
    error(kms.post(f"{KEYS}/{key_type}/hmac", {"input": b64(DATA), **body}), 400, code)


@pytest.mark.parametrize("mac", ["", "thalassa:v1", "thalassa:vX:AAAA", "thalassa:v1:A"])
def test_a_malformed_hmac_is_400(kms: Kms, mac: str) -> None:
    response = kms.post(f"{KEYS}/hmac/verify-hmac", {"input": b64(DATA), "hmac": mac})
    error(response, 400, "invalid_signature_format")


def test_an_hmac_naming_an_unknown_version_is_400(kms: Kms) -> None:
    response = kms.post(
        f"{KEYS}/hmac/verify-hmac", {"input": b64(DATA), "hmac": "thalassa:v2:AAAA"}
    )
    error(response, 400, "invalid_key_version")


# --- export -----------------------------------------------------------------------------------


def test_exported_symmetric_keys_are_raw_and_decrypt_what_the_server_encrypted(kms: Kms) -> None:
    sealed = kms.post(f"{KEYS}/aes256-gcm96/encrypt", {"plaintext": b64(b"break glass")}).json()
    body = base64.b64decode(sealed["ciphertext"].removeprefix("thalassa:v1:"))
    key = exported(kms, "aes256-gcm96")
    assert len(key) == 32
    assert AESGCM(key).decrypt(body[:12], body[12:], None) == b"break glass"
    assert len(exported(kms, "aes128-gcm96")) == 16


@pytest.mark.parametrize("key_type", ["rsa-2048", "ecdsa-p384", "ed25519"])
def test_exported_asymmetric_keys_are_pkcs8_der_matching_the_public_key(
    kms: Kms, key_type: str
) -> None:
    private = serialization.load_der_private_key(exported(kms, key_type), password=None)
    public = private.public_key()
    shown = kms.get(f"{KEYS}/{key_type}/public-key").json()["keys"]["1"]
    if key_type == "ed25519":
        raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        assert shown == b64(raw)
    else:
        pem = public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        assert shown == pem.decode()
    if key_type == "rsa-2048":
        assert isinstance(private, rsa.RSAPrivateKey)
        assert private.key_size == 2048


def test_export_takes_a_version_and_defaults_to_the_latest(kms: Kms) -> None:
    kms.create_key("exp-rotating", "hmac", exportAllowed=True)
    first = exported(kms, "exp-rotating")
    assert kms.post(f"{KEYS}/exp-rotating/rotate").status_code == 200
    latest = kms.post(f"{KEYS}/exp-rotating/export", {}).json()
    assert latest["keyVersion"] == "2"
    assert base64.b64decode(latest["keyMaterial"]) != first
    assert exported(kms, "exp-rotating", keyVersion="1") == first
    error(kms.post(f"{KEYS}/exp-rotating/export", {"keyVersion": 3}), 400, "invalid_key_version")


def test_export_needs_export_allowed(kms: Kms) -> None:
    kms.create_key("sealed", "aes256-gcm96")
    error(kms.post(f"{KEYS}/sealed/export"), 400, "export_not_allowed")


def test_a_disabled_key_cannot_be_exported(kms: Kms) -> None:
    kms.create_key("exp-disabled", "aes256-gcm96", exportAllowed=True)
    assert kms.post(f"{KEYS}/exp-disabled/disable").status_code == 200
    error(kms.post(f"{KEYS}/exp-disabled/export"), 400, "key_disabled")
