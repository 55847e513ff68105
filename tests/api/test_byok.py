"""Bring-your-own-key: the wrapping key and ``importKeyMaterial`` (spec §5.11)."""

from __future__ import annotations

import base64
import os
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.keywrap import aes_key_wrap_with_padding
from sqlalchemy import select

from coffer.domain.identity import new_identity
from coffer.storage import schema
from tests.api.test_access import error
from tests.conftest import SUITE_SECRETS, Kms, initialised, make_settings, open_kms, sync_engine

KEYS = "/v1/kms/nl-01/keys"
IMPORT_HASHES = {"sha1": hashes.SHA1, "sha224": hashes.SHA224, "sha256": hashes.SHA256,
                 "sha384": hashes.SHA384, "sha512": hashes.SHA512}  # fmt: skip


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.fixture(scope="module")
def kms(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kms]:
    settings = make_settings(tmp_path_factory.mktemp("byok") / "data")
    yield from open_kms(settings, initialised(settings))


def wrapping_key(kms: Kms) -> rsa.RSAPublicKey:
    response = kms.get("/v1/kms/nl-01/wrapping-key")
    assert response.status_code == 200, response.text
    assert response.json()["algorithm"] == "RSA_OAEP_AES_KWP"
    key = serialization.load_pem_public_key(response.json()["publicKey"].encode())
    assert isinstance(key, rsa.RSAPublicKey)
    return key


def wrap(kms: Kms, target: bytes, hash_name: str = "sha256") -> str:
    """What a user's tooling does: RSA-OAEP of an ephemeral AES key, then AES-KWP of the key."""
    SUITE_SECRETS.update({target.hex(), b64(target)})
    ephemeral = os.urandom(32)
    digest = IMPORT_HASHES[hash_name]()
    oaep = padding.OAEP(padding.MGF1(digest), digest, None)
    head = wrapping_key(kms).encrypt(ephemeral, oaep)
    return b64(head + aes_key_wrap_with_padding(ephemeral, target))


def import_key(kms: Kms, key_type: str, material: str, **fields: Any) -> Any:
    name = fields.pop("name", new_identity("imp"))
    body = {"name": name, "keyType": key_type, "importKeyMaterial": material, **fields}
    return kms.post(KEYS, body)


def der(private: Any) -> bytes:
    return bytes(
        private.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


def test_the_wrapping_key_is_rsa_4096_and_stable(kms: Kms) -> None:
    first = wrapping_key(kms)
    assert first.key_size == 4096
    assert wrapping_key(kms).public_numbers() == first.public_numbers()


def test_the_wrapping_key_survives_a_restart(tmp_path_factory: pytest.TempPathFactory) -> None:
    settings = make_settings(tmp_path_factory.mktemp("byok-restart") / "data")
    boot = initialised(settings)
    before = next(iter([wrapping_key(k).public_numbers() for k in open_kms(settings, boot)]))
    after = next(iter([wrapping_key(k).public_numbers() for k in open_kms(settings, boot)]))
    assert before == after


@pytest.mark.parametrize("hash_name", list(IMPORT_HASHES))
def test_an_imported_aes_key_encrypts_as_the_caller_expects(kms: Kms, hash_name: str) -> None:
    target = os.urandom(32)
    response = import_key(kms, "aes256-gcm96", wrap(kms, target, hash_name), hashFunction=hash_name)
    assert response.status_code == 201, response.text
    key = response.json()
    assert key["imported"] is True
    sealed = kms.post(f"{KEYS}/{key['identity']}/encrypt", {"plaintext": b64(b"yours")}).json()
    body = base64.b64decode(sealed["ciphertext"].removeprefix("thalassa:v1:"))
    assert AESGCM(target).decrypt(body[:12], body[12:], None) == b"yours"


@pytest.mark.parametrize(
    ("key_type", "private"),
    [("rsa-2048", lambda: rsa.generate_private_key(65537, 2048)),
     ("ecdsa-p256", lambda: ec.generate_private_key(ec.SECP256R1())),
     ("ecdsa-p521", lambda: ec.generate_private_key(ec.SECP521R1())),
     ("ed25519", ed25519.Ed25519PrivateKey.generate)],
)  # fmt: skip
def test_an_imported_asymmetric_key_shows_its_own_public_key(
    kms: Kms, key_type: str, private: Any
) -> None:
    key = private()
    response = import_key(kms, key_type, wrap(kms, der(key)))
    assert response.status_code == 201, response.text
    shown = kms.get(f"{KEYS}/{response.json()['identity']}/public-key").json()["keys"]["1"]
    public = key.public_key()
    if key_type == "ed25519":
        raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        assert shown == b64(raw)
    else:
        pem = public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        assert shown == pem.decode()


@pytest.mark.parametrize(
    ("key_type", "target"),
    [("aes256-gcm96", lambda: os.urandom(16)),
     ("aes128-gcm96", lambda: os.urandom(32)),
     ("chacha20-poly1305", lambda: os.urandom(31)),
     ("rsa-3072", lambda: der(rsa.generate_private_key(65537, 2048))),
     ("ecdsa-p384", lambda: der(ec.generate_private_key(ec.SECP256R1()))),
     ("ed25519", lambda: der(ec.generate_private_key(ec.SECP256R1()))),
     ("rsa-2048", lambda: b"not a key at all"),
     ("ed25519", lambda: os.urandom(32))],
)  # fmt: skip
def test_material_that_does_not_fit_the_type_is_refused_and_nothing_is_stored(
    kms: Kms, key_type: str, target: Any
) -> None:
    before = kms.get(KEYS).json()
    response = import_key(kms, key_type, wrap(kms, target()))
    error(response, 400, "invalid_key_material")
    assert kms.get(KEYS).json() == before


def test_material_that_does_not_unwrap_is_refused_with_one_message(kms: Kms) -> None:
    good = base64.b64decode(wrap(kms, os.urandom(32)))
    flipped_head = bytes([good[0] ^ 1]) + good[1:]
    flipped_tail = good[:-1] + bytes([good[-1] ^ 1])
    messages = set()
    for blob in (flipped_head, flipped_tail, good[:512], good[:100]):
        body = error(import_key(kms, "aes256-gcm96", b64(blob)), 400, "invalid_key_material")
        messages.add(body["message"])
    body = error(import_key(kms, "aes256-gcm96", b64(good), hashFunction="sha512"), 400,
                 "invalid_key_material")  # fmt: skip
    messages.add(body["message"])
    assert len(messages) == 1


@pytest.mark.parametrize("key_type", ["hmac", "hmac-sha256", "hmac-sha512"])
def test_hmac_keys_cannot_be_imported(kms: Kms, key_type: str) -> None:
    error(import_key(kms, key_type, wrap(kms, os.urandom(32))), 400, "unsupported_operation")


def test_bad_import_fields_are_400(kms: Kms) -> None:
    error(import_key(kms, "aes256-gcm96", "%%%"), 400, "invalid_request")
    material = wrap(kms, os.urandom(32))
    error(import_key(kms, "aes256-gcm96", material, hashFunction="md5"), 400, "invalid_request")


def test_imported_keys_rotate_only_with_allow_rotation(kms: Kms) -> None:
    fixed = import_key(kms, "aes256-gcm96", wrap(kms, os.urandom(32)), name="fixed").json()
    error(kms.post(f"{KEYS}/{fixed['identity']}/rotate"), 400, "rotation_not_allowed")
    material = wrap(kms, os.urandom(32))
    rotating = import_key(kms, "aes256-gcm96", material, name="rot", allowRotation=True).json()
    rotated = kms.post(f"{KEYS}/{rotating['identity']}/rotate")
    assert rotated.status_code == 200, rotated.text
    assert rotated.json()["latestVersion"] == 2


def test_the_wrapping_key_needs_the_create_permission(kms: Kms) -> None:
    token = kms.add_principal("kms:ReadAccess")
    headers = {"Authorization": f"Bearer {token}", "X-Organisation-Identity": kms.org}
    error(kms.get("/v1/kms/nl-01/wrapping-key", headers=headers), 403, "forbidden")
    error(kms.get("/v1/kms/nl-01/wrapping-key", headers={}), 401, "unauthenticated")
    error(kms.get("/v1/kms/xx-99/wrapping-key"), 404, "region_not_found")


def test_pkcs1_and_sec1_der_import_too_and_export_as_pkcs8(kms: Kms) -> None:
    for key_type, private in (
        ("rsa-2048", rsa.generate_private_key(65537, 2048)),
        ("ecdsa-p256", ec.generate_private_key(ec.SECP256R1())),
    ):
        traditional = private.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
        response = import_key(kms, key_type, wrap(kms, traditional), exportAllowed=True)
        assert response.status_code == 201, response.text
        out = kms.post(f"{KEYS}/{response.json()['identity']}/export").json()["keyMaterial"]
        assert base64.b64decode(out) == der(private)


# --- one series of wrapping keys per organisation and region --------------------------------------


@pytest.fixture
def fresh(tmp_path: Any) -> Iterator[Kms]:
    """An app of its own: these tests move its clock."""
    settings = make_settings(tmp_path / "data")
    yield from open_kms(settings, initialised(settings))


def fetched(kms: Kms, headers: dict[str, str] | None = None) -> tuple[rsa.RSAPublicKey, str]:
    response = kms.get("/v1/kms/nl-01/wrapping-key", headers=headers or kms.headers)
    assert response.status_code == 200, response.text
    key = serialization.load_pem_public_key(response.json()["publicKey"].encode())
    assert isinstance(key, rsa.RSAPublicKey)
    return key, response.json()["expiresAt"]


def wrap_with(public: rsa.RSAPublicKey, target: bytes) -> str:
    SUITE_SECRETS.update({target.hex(), b64(target)})
    ephemeral = os.urandom(32)
    oaep = padding.OAEP(padding.MGF1(hashes.SHA256()), hashes.SHA256(), None)
    return b64(public.encrypt(ephemeral, oaep) + aes_key_wrap_with_padding(ephemeral, target))


def unwrap_error(response: Any) -> str:
    message: str = error(response, 400, "invalid_key_material")["message"]
    return message


def test_a_blob_wrapped_for_one_organisation_does_not_import_into_another(fresh: Kms) -> None:
    """The reviewer's attack: a blob that organisation A wrapped, imported into organisation B
    with ``exportAllowed`` so that B could export A's key. B's wrapping key is B's own: the blob
    does not open there, and the error is the one every bad blob gets."""
    kms = fresh
    other = kms.post("/v1/organisations", {"name": "Organisation B"}).json()["identity"]
    in_b = {**kms.headers, "X-Organisation-Identity": other}
    bound = kms.post("/v1/iam/role-bindings",
                     {"principal": kms.boot.principal.identity, "policy": "kms:FullAccess"},
                     headers=in_b)  # fmt: skip
    assert bound.status_code == 201
    key_a, _ = fetched(kms)
    key_b, _ = fetched(kms, in_b)
    assert key_a.public_numbers() != key_b.public_numbers()

    target = os.urandom(32)
    blob = wrap_with(key_a, target)
    body = {"name": "stolen", "keyType": "aes256-gcm96", "importKeyMaterial": blob,
            "exportAllowed": True}  # fmt: skip
    refused = unwrap_error(kms.post(KEYS, body, headers=in_b))
    garbage = unwrap_error(
        import_key(kms, "aes256-gcm96", b64(os.urandom(len(base64.b64decode(blob)))))
    )
    assert refused == garbage
    assert kms.get(KEYS, headers=in_b).json() == []
    # A's own import of the same blob works.
    assert kms.post(KEYS, {**body, "name": "mine"}).status_code == 201
    # Shredding B destroys its wrapping keys with its KEK.
    shred = kms.post(f"/v1/organisations/{other}/shred", {"confirm": other})
    assert shred.status_code == 200, shred.text
    engine = sync_engine(kms.settings)
    with engine.connect() as conn:
        table = schema.byok_wrapping_keys
        owners = {r[0] for r in conn.execute(select(table.c.organisation_identity))}
    engine.dispose()
    assert owners == {kms.org}


def test_wrapping_keys_rotate_after_their_lifetime_and_the_last_one_is_accepted_for_a_day(
    fresh: Kms,
) -> None:
    kms = fresh
    first, expires = fetched(kms)
    now = kms.clock()
    lifetime = datetime.fromisoformat(expires) - now
    assert timedelta(days=30) - timedelta(minutes=1) < lifetime <= timedelta(days=30)
    assert fetched(kms)[0].public_numbers() == first.public_numbers()  # stable until then
    early = wrap_with(first, os.urandom(32))
    late = wrap_with(first, os.urandom(32))

    kms.clock.advance(days=30, seconds=1)
    second, expires_second = fetched(kms)
    assert second.public_numbers() != first.public_numbers()
    assert datetime.fromisoformat(expires_second) > datetime.fromisoformat(expires)
    # A client that fetched the first key just before still imports with it for 24 hours.
    assert import_key(kms, "aes256-gcm96", early).status_code == 201
    assert import_key(kms, "aes256-gcm96", wrap_with(second, os.urandom(32))).status_code == 201
    kms.clock.advance(hours=24, seconds=1)
    unwrap_error(import_key(kms, "aes256-gcm96", late))
    assert import_key(kms, "aes256-gcm96", wrap_with(second, os.urandom(32))).status_code == 201


def test_the_wrapping_key_lifetime_is_configurable(tmp_path: Any) -> None:
    settings = make_settings(tmp_path / "data", byok_wrapping_key_lifetime_days=2)
    for kms in open_kms(settings, initialised(settings)):
        _, expires = fetched(kms)
        lifetime = datetime.fromisoformat(expires) - kms.clock()
        assert timedelta(days=2) - timedelta(minutes=1) < lifetime <= timedelta(days=2)
