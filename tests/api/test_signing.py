"""``sign``, ``verify``, ``public-key`` and RSA encryption (spec §3, §5.5, §5.6, §5.8)."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterator
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa, utils

from tests.api.test_access import error
from tests.conftest import Kms, initialised, make_settings, open_kms

KEYS = "/v1/kms/nl-01/keys"
RSA = ["rsa-2048", "rsa-3072", "rsa-4096"]
ECDSA = ["ecdsa-p256", "ecdsa-p384", "ecdsa-p521"]
ASYMMETRIC = [*RSA, *ECDSA, "ed25519"]
HASHES = ["sha2-224", "sha2-256", "sha2-384", "sha2-512", "sha3-224", "sha3-256", "sha3-384",
          "sha3-512"]  # fmt: skip
DIGESTS = {
    "sha2-224": hashes.SHA224, "sha2-256": hashes.SHA256, "sha2-384": hashes.SHA384,
    "sha2-512": hashes.SHA512, "sha3-224": hashes.SHA3_224, "sha3-256": hashes.SHA3_256,
    "sha3-384": hashes.SHA3_384, "sha3-512": hashes.SHA3_512,
}  # fmt: skip
MESSAGE = b"the quick brown fox signs a contract"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def body_of(value: str) -> bytes:
    return base64.b64decode(value.split(":", 2)[2])


@pytest.fixture(scope="module")
def kms(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kms]:
    """One server with one key of every asymmetric type (RSA keys take a while to make)."""
    settings = make_settings(tmp_path_factory.mktemp("signing") / "data")
    for running in open_kms(settings, initialised(settings)):
        for key_type in ASYMMETRIC:
            running.create_key(key_type, key_type)
        yield running


def sign(kms: Kms, key: str, data: bytes = MESSAGE, **options: Any) -> dict[str, str]:
    response = kms.post(f"{KEYS}/{key}/sign", {"input": b64(data), **options})
    assert response.status_code == 200, response.text
    signed: dict[str, str] = response.json()
    return signed


def verify(kms: Kms, key: str, signature: str, data: bytes = MESSAGE, **options: Any) -> Any:
    return kms.post(f"{KEYS}/{key}/verify", {"input": b64(data), "signature": signature, **options})


def valid(kms: Kms, key: str, signature: str, data: bytes = MESSAGE, **options: Any) -> bool:
    response = verify(kms, key, signature, data, **options)
    assert response.status_code == 200, response.text
    assert set(response.json()) == {"valid"}
    result: bool = response.json()["valid"]
    return result


def public_key(kms: Kms, key: str) -> Any:
    response = kms.get(f"{KEYS}/{key}/public-key")
    assert response.status_code == 200, response.text
    keys = response.json()["keys"]
    latest = max(keys, key=int)
    if key == "ed25519":
        return ed25519.Ed25519PublicKey.from_public_bytes(base64.b64decode(keys[latest]))
    return serialization.load_pem_public_key(keys[latest].encode())


# --- round trips, checked independently with the public key ------------------------------------


@pytest.mark.parametrize("key_type", ASYMMETRIC)
def test_sign_then_verify_round_trips_and_a_changed_message_does_not(
    kms: Kms, key_type: str
) -> None:
    signed = sign(kms, key_type)
    assert signed["signature"].startswith("thalassa:v1:")
    assert signed["keyVersion"] == "1"
    assert valid(kms, key_type, signed["signature"])
    assert not valid(kms, key_type, signed["signature"], MESSAGE + b".")


@pytest.mark.parametrize("key_type", RSA)
@pytest.mark.parametrize("scheme", ["pss", "pkcs1v15"])
@pytest.mark.parametrize("hash_name", ["sha2-256", "sha2-512", "sha3-384"])
def test_rsa_signatures_verify_with_the_public_key(
    kms: Kms, key_type: str, scheme: str, hash_name: str
) -> None:
    signed = sign(kms, key_type, hashAlgorithm=hash_name, signatureAlgorithm=scheme)
    digest = DIGESTS[hash_name]()
    pad: padding.AsymmetricPadding = (
        padding.PKCS1v15()
        if scheme == "pkcs1v15"
        else padding.PSS(padding.MGF1(digest), salt_length=digest.digest_size)
    )
    key = public_key(kms, key_type)
    assert isinstance(key, rsa.RSAPublicKey)
    key.verify(body_of(signed["signature"]), MESSAGE, pad, digest)  # raises if invalid
    assert valid(kms, key_type, signed["signature"], hashAlgorithm=hash_name,
                 signatureAlgorithm=scheme)  # fmt: skip
    other = "pkcs1v15" if scheme == "pss" else "pss"
    assert not valid(kms, key_type, signed["signature"], hashAlgorithm=hash_name,
                     signatureAlgorithm=other)  # fmt: skip


def test_pkcs1v15_signatures_are_deterministic_and_pss_ones_are_not(kms: Kms) -> None:
    first = sign(kms, "rsa-2048", signatureAlgorithm="pkcs1v15")["signature"]
    assert sign(kms, "rsa-2048", signatureAlgorithm="pkcs1v15")["signature"] == first
    assert sign(kms, "rsa-2048")["signature"] != sign(kms, "rsa-2048")["signature"]


@pytest.mark.parametrize("key_type", ECDSA)
@pytest.mark.parametrize("hash_name", HASHES)
def test_ecdsa_signatures_verify_with_the_public_key_in_both_marshalings(
    kms: Kms, key_type: str, hash_name: str
) -> None:
    key = public_key(kms, key_type)
    assert isinstance(key, ec.EllipticCurvePublicKey)
    width = (key.curve.key_size + 7) // 8
    algorithm = ec.ECDSA(DIGESTS[hash_name]())
    der = sign(kms, key_type, hashAlgorithm=hash_name)["signature"]
    key.verify(body_of(der), MESSAGE, algorithm)
    jws = sign(kms, key_type, hashAlgorithm=hash_name, marshalingAlgorithm="jws")["signature"]
    raw = body_of(jws)
    assert len(raw) == 2 * width
    r, s = int.from_bytes(raw[:width], "big"), int.from_bytes(raw[width:], "big")
    key.verify(utils.encode_dss_signature(r, s), MESSAGE, algorithm)
    assert valid(kms, key_type, jws, hashAlgorithm=hash_name, marshalingAlgorithm="jws")
    assert valid(kms, key_type, der, hashAlgorithm=hash_name, marshalingAlgorithm="asn1")


def test_ed25519_signatures_are_pure_ed25519_and_ignore_the_hash(kms: Kms) -> None:
    signed = sign(kms, "ed25519", hashAlgorithm="sha2-512")
    key = public_key(kms, "ed25519")
    assert isinstance(key, ed25519.Ed25519PublicKey)
    key.verify(body_of(signed["signature"]), MESSAGE)
    # Ed25519 is deterministic (RFC 8032 §5.1.6): the hash named makes no difference.
    assert sign(kms, "ed25519")["signature"] == signed["signature"]


@pytest.mark.parametrize("key_type", ["rsa-2048", "ecdsa-p384"])
def test_a_prehashed_input_gives_the_signature_of_the_message(kms: Kms, key_type: str) -> None:
    digest = hashlib.sha384(MESSAGE).digest()
    options = {"hashAlgorithm": "sha2-384"}
    signed = sign(kms, key_type, digest, prehashed=True, **options)
    assert valid(kms, key_type, signed["signature"], **options)
    assert valid(kms, key_type, signed["signature"], digest, prehashed=True, **options)


@pytest.mark.parametrize("alias", ["sha256", "sha384", "sha512"])
def test_hash_aliases_name_the_sha2_hashes(kms: Kms, alias: str) -> None:
    signed = sign(kms, "ecdsa-p256", hashAlgorithm=alias)
    assert valid(kms, "ecdsa-p256", signed["signature"], hashAlgorithm=f"sha2-{alias[3:]}")


def test_old_versions_keep_verifying_after_rotation(kms: Kms) -> None:
    kms.create_key("rotating", "ecdsa-p256")
    old = sign(kms, "rotating")["signature"]
    assert kms.post(f"{KEYS}/rotating/rotate").status_code == 200
    new = sign(kms, "rotating")
    assert new["keyVersion"] == "2"
    assert new["signature"].startswith("thalassa:v2:")
    assert valid(kms, "rotating", old)
    assert valid(kms, "rotating", new["signature"])
    pinned = sign(kms, "rotating", keyVersion="1")
    assert pinned["keyVersion"] == "1"
    keys = kms.get(f"{KEYS}/rotating/public-key").json()["keys"]
    assert set(keys) == {"1", "2"}
    assert keys["1"] != keys["2"]
    assert kms.get(f"{KEYS}/rotating/public-key?version=1").json() == {"keys": {"1": keys["1"]}}
    # A signature of version 2 does not verify as version 1.
    forged = "thalassa:v1:" + new["signature"].split(":", 2)[2]
    assert not valid(kms, "rotating", forged)


# --- bad input --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key_type", "options", "code"),
    [
        ("rsa-2048", {"hashAlgorithm": "md5"}, "invalid_request"),
        ("rsa-2048", {"hashAlgorithm": "SHA256"}, "invalid_request"),
        ("rsa-2048", {"signatureAlgorithm": "pss2"}, "invalid_request"),
        ("ecdsa-p256", {"marshalingAlgorithm": "der"}, "invalid_request"),
        ("ecdsa-p256", {"signatureAlgorithm": "pkcs1v15"}, "unsupported_operation"),
        ("rsa-2048", {"marshalingAlgorithm": "jws"}, "unsupported_operation"),
        ("ed25519", {"prehashed": True}, "unsupported_operation"),
        ("ed25519", {"context": b64(b"tenant-1")}, "unsupported_operation"),
        ("rsa-2048", {"prehashed": True}, "invalid_request"),  # 36 bytes is no SHA-256 digest
        ("rsa-2048", {"keyVersion": "2"}, "invalid_key_version"),
        ("rsa-2048", {"keyVersion": "two"}, "invalid_request"),
        ("rsa-2048", {"unknown": 1}, "invalid_request"),
    ],
)
def test_bad_sign_options_are_400(
    kms: Kms, key_type: str, options: dict[str, Any], code: str
) -> None:
    response = kms.post(f"{KEYS}/{key_type}/sign", {"input": b64(MESSAGE), **options})
    error(response, 400, code)


def test_sign_input_must_be_base64_and_at_most_64_kib(kms: Kms) -> None:
    body = error(kms.post(f"{KEYS}/ed25519/sign", {"input": "not base64!"}), 400,
                 "invalid_request")  # fmt: skip
    assert body["message"] == "input must be valid base64"
    error(kms.post(f"{KEYS}/ed25519/sign", {"input": b64(b"x" * 65_536)}), 400, "invalid_request")
    assert sign(kms, "ed25519", b"x" * 65_535)["keyVersion"] == "1"
    assert valid(kms, "ed25519", sign(kms, "ed25519", b"")["signature"], b"")


@pytest.mark.parametrize(
    "signature",
    ["", "thalassa:v1:", "thalassa:v0:AAAA", "vault:v1:AAAA", "thalassa:v1:AAA", "thalassa:1:AAAA",
     "thalassa:v1:AAAA!"],
)  # fmt: skip
def test_a_malformed_signature_is_400_and_a_wrong_one_is_invalid(kms: Kms, signature: str) -> None:
    error(verify(kms, "ecdsa-p256", signature), 400, "invalid_signature_format")
    assert not valid(kms, "ecdsa-p256", "thalassa:v1:" + b64(b"\x30\x06\x02\x01\x01\x02\x01\x01"))
    assert not valid(kms, "rsa-2048", "thalassa:v1:" + b64(bytes(256)))


def test_a_jws_signature_of_the_wrong_length_is_malformed(kms: Kms) -> None:
    jws = sign(kms, "ecdsa-p256", marshalingAlgorithm="jws")["signature"]
    error(verify(kms, "ecdsa-p256", jws + "AAAA", marshalingAlgorithm="jws"), 400,
          "invalid_signature_format")  # fmt: skip


def test_a_signature_naming_an_unknown_version_is_400(kms: Kms) -> None:
    signed = sign(kms, "ed25519")["signature"]
    error(verify(kms, "ed25519", signed.replace("thalassa:v1:", "thalassa:v7:")), 400,
          "invalid_key_version")  # fmt: skip


# --- RSA encryption ---------------------------------------------------------------------------


@pytest.mark.parametrize(("key_type", "limit"), [("rsa-2048", 190), ("rsa-3072", 318),
                                                 ("rsa-4096", 446)])  # fmt: skip
def test_rsa_oaep_encrypts_up_to_its_limit(kms: Kms, key_type: str, limit: int) -> None:
    plaintext = bytes(range(256)) * 2
    response = kms.post(f"{KEYS}/{key_type}/encrypt", {"plaintext": b64(plaintext[:limit])})
    assert response.status_code == 200, response.text
    ciphertext = response.json()["ciphertext"]
    assert len(body_of(ciphertext)) == int(key_type[4:]) // 8
    opened = kms.post(f"{KEYS}/{key_type}/decrypt", {"ciphertext": ciphertext})
    assert opened.json()["plaintext"] == b64(plaintext[:limit])
    too_long = kms.post(f"{KEYS}/{key_type}/encrypt", {"plaintext": b64(plaintext[: limit + 1])})
    error(too_long, 400, "invalid_plaintext")


def test_an_rsa_ciphertext_made_with_the_public_key_decrypts(kms: Kms) -> None:
    key = public_key(kms, "rsa-3072")
    assert isinstance(key, rsa.RSAPublicKey)
    oaep = padding.OAEP(padding.MGF1(hashes.SHA256()), hashes.SHA256(), None)
    body = key.encrypt(b"made elsewhere", oaep)
    opened = kms.post(f"{KEYS}/rsa-3072/decrypt", {"ciphertext": "thalassa:v1:" + b64(body)})
    assert opened.json()["plaintext"] == b64(b"made elsewhere")
    tampered = b64(body[:-1] + bytes([body[-1] ^ 1]))
    error(kms.post(f"{KEYS}/rsa-3072/decrypt", {"ciphertext": "thalassa:v1:" + tampered}), 400,
          "invalid_ciphertext")  # fmt: skip


# --- public keys ------------------------------------------------------------------------------


def test_public_keys_are_pem_spki_or_raw_ed25519(kms: Kms) -> None:
    for key_type in [*RSA, *ECDSA]:
        pem = kms.get(f"{KEYS}/{key_type}/public-key").json()["keys"]["1"]
        assert pem.startswith("-----BEGIN PUBLIC KEY-----\n")
    raw = kms.get(f"{KEYS}/ed25519/public-key").json()["keys"]["1"]
    assert len(base64.b64decode(raw, validate=True)) == 32


def test_public_key_version_must_exist(kms: Kms) -> None:
    error(kms.get(f"{KEYS}/ed25519/public-key?version=2"), 400, "invalid_key_version")
    error(kms.get(f"{KEYS}/ed25519/public-key?version=x"), 400, "invalid_request")


def test_a_private_key_is_parsed_once_per_version_not_per_request(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    from coffer.crypto import pkcs8

    settings = make_settings(tmp_path_factory.mktemp("parse-once") / "data")
    boot = initialised(settings)
    for first in open_kms(settings, boot):
        first.create_key("once", "rsa-2048")
    loads: list[bytes] = []
    real = pkcs8.load_stored

    def counting(material: bytes) -> Any:
        loads.append(material)
        return real(material)

    monkeypatch.setattr(pkcs8, "load_stored", counting)
    for restarted in open_kms(settings, boot):  # a fresh process: nothing cached yet
        for _ in range(5):
            assert valid(restarted, "once", sign(restarted, "once")["signature"])
        assert restarted.get(f"{KEYS}/once/public-key").status_code == 200
    assert len(loads) == 1
