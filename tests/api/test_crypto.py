"""``encrypt`` and ``decrypt`` (spec §4, §5.5)."""

from __future__ import annotations

import base64

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.api.test_access import error
from tests.conftest import Kms

KEYS = "/v1/kms/nl-01/keys"
SYMMETRIC = ["aes128-gcm96", "aes256-gcm96", "chacha20-poly1305"]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def encrypt(kms: Kms, key: str, plaintext: bytes, **extra: object) -> dict[str, str]:
    response = kms.post(f"{KEYS}/{key}/encrypt", {"plaintext": b64(plaintext), **extra})
    assert response.status_code == 200, response.text
    body: dict[str, str] = response.json()
    return body


def decrypt(kms: Kms, key: str, ciphertext: str):  # type: ignore[no-untyped-def]
    return kms.post(f"{KEYS}/{key}/decrypt", {"ciphertext": ciphertext})


@pytest.mark.parametrize("key_type", SYMMETRIC)
def test_encrypt_then_decrypt_round_trips(kms: Kms, key_type: str) -> None:
    key = kms.create_key("k", key_type)
    sealed = encrypt(kms, "k", b"hello, kms")
    assert sealed["ciphertext"].startswith("thalassa:v1:")
    assert sealed["keyVersion"] == "1"
    body = base64.b64decode(sealed["ciphertext"].removeprefix("thalassa:v1:"))
    assert len(body) == 12 + len(b"hello, kms") + 16
    opened = decrypt(kms, key["identity"], sealed["ciphertext"])
    assert opened.status_code == 200
    assert opened.json() == {"plaintext": b64(b"hello, kms"), "keyVersion": "1"}


def test_encrypting_twice_gives_different_ciphertexts(kms: Kms) -> None:
    kms.create_key("k")
    assert encrypt(kms, "k", b"same")["ciphertext"] != encrypt(kms, "k", b"same")["ciphertext"]


@pytest.mark.parametrize("version", [1, "1"])
def test_key_version_is_accepted_as_integer_or_string(kms: Kms, version: object) -> None:
    kms.create_key("k")
    assert encrypt(kms, "k", b"x", keyVersion=version)["keyVersion"] == "1"


@pytest.mark.parametrize("version", [0, 2, "2", "0", "-1", "one", "1.0", "١", True, 1.5])
def test_key_version_out_of_range_or_malformed_is_400(kms: Kms, version: object) -> None:
    kms.create_key("k")
    response = kms.post(f"{KEYS}/k/encrypt", {"plaintext": "AA==", "keyVersion": version})
    assert response.status_code == 400
    assert response.json()["code"] in {"invalid_key_version", "invalid_request"}


def test_plaintext_size_limits(kms: Kms) -> None:
    kms.create_key("k")
    error(kms.post(f"{KEYS}/k/encrypt", {"plaintext": ""}), 400, "invalid_plaintext")
    error(
        kms.post(f"{KEYS}/k/encrypt", {"plaintext": b64(bytes(65_536))}), 400, "invalid_plaintext"
    )
    largest = encrypt(kms, "k", bytes(65_535))
    assert base64.b64decode(decrypt(kms, "k", largest["ciphertext"]).json()["plaintext"]) == bytes(
        65_535
    )


@pytest.mark.parametrize("plaintext", ["not base64!", "AAA", "AA=A", "YQ", "aGVsbG8=\n", 42])
def test_bad_base64_plaintext_is_400_naming_the_field(kms: Kms, plaintext: object) -> None:
    kms.create_key("k")
    body = error(kms.post(f"{KEYS}/k/encrypt", {"plaintext": plaintext}), 400, "invalid_request")
    assert "plaintext" in body["message"]


def test_bad_base64_message_follows_the_spec(kms: Kms) -> None:
    kms.create_key("k")
    body = error(kms.post(f"{KEYS}/k/encrypt", {"plaintext": "@@@@"}), 400, "invalid_request")
    assert body["message"] == "plaintext must be valid base64"


def test_oversized_request_body_is_413(kms: Kms) -> None:
    kms.create_key("k")
    response = kms.post(f"{KEYS}/k/encrypt", {"plaintext": b64(bytes(800_000))})
    error(response, 413, "request_too_large")


def test_unknown_fields_are_rejected(kms: Kms) -> None:
    kms.create_key("k")
    error(kms.post(f"{KEYS}/k/encrypt", {"plaintext": "AA==", "context": "x"}), 400,
          "invalid_request")  # fmt: skip
    error(kms.post(f"{KEYS}/k/decrypt", {"ciphertext": "thalassa:v1:AAAA", "x": 1}), 400,
          "invalid_request")  # fmt: skip


def test_crypto_on_an_unknown_key_is_404(kms: Kms) -> None:
    error(kms.post(f"{KEYS}/nope/encrypt", {"plaintext": "AA=="}), 404, "key_not_found")
    error(kms.post(f"{KEYS}/nope/decrypt", {"ciphertext": "thalassa:v1:AAAA"}), 404,
          "key_not_found")  # fmt: skip


def test_every_decryption_failure_gives_one_answer(kms: Kms) -> None:
    kms.create_key("k")
    kms.create_key("other")
    sealed = encrypt(kms, "k", b"secret")["ciphertext"]
    prefix, body = sealed.rsplit(":", 1)
    raw = bytearray(base64.b64decode(body))
    raw[-1] ^= 0x01
    cases = {
        "tampered tag": f"{prefix}:{b64(bytes(raw))}",
        "other key": sealed,
        "unknown version": sealed.replace("thalassa:v1:", "thalassa:v2:"),
        "malformed prefix": sealed.replace("thalassa:", "vault:"),
        "truncated": sealed[:-8],
        "empty": "",
        "short body": "thalassa:v1:AAAA",
    }
    answers = set()
    for name, ciphertext in cases.items():
        key = "other" if name == "other key" else "k"
        response = decrypt(kms, key, ciphertext)
        body_json = error(response, 400, "invalid_ciphertext")
        answers.add(body_json["message"])
        assert "secret" not in response.text
    assert len(answers) == 1


# --- properties -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def keys(module_kms: Kms) -> Kms:
    for key_type in SYMMETRIC:
        module_kms.create_key(key_type, key_type)
    return module_kms


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(key_type=st.sampled_from(SYMMETRIC), plaintext=st.binary(min_size=1, max_size=65_535))
def test_property_any_plaintext_round_trips(keys: Kms, key_type: str, plaintext: bytes) -> None:
    sealed = encrypt(keys, key_type, plaintext)
    opened = decrypt(keys, key_type, sealed["ciphertext"])
    assert opened.status_code == 200
    assert base64.b64decode(opened.json()["plaintext"]) == plaintext


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    key_type=st.sampled_from(SYMMETRIC),
    plaintext=st.binary(min_size=1, max_size=256),
    position=st.integers(min_value=0),
    replacement=st.characters(min_codepoint=32, max_codepoint=126),
)
def test_property_any_single_character_change_is_invalid_ciphertext(
    keys: Kms, key_type: str, plaintext: bytes, position: int, replacement: str
) -> None:
    ciphertext = encrypt(keys, key_type, plaintext)["ciphertext"]
    position %= len(ciphertext)
    if ciphertext[position] == replacement:
        replacement = "A" if replacement != "A" else "B"
    changed = ciphertext[:position] + replacement + ciphertext[position + 1 :]
    response = decrypt(keys, key_type, changed)
    assert response.status_code == 400, (changed, response.text)
    assert response.json()["code"] == "invalid_ciphertext"


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    key_type=st.sampled_from(SYMMETRIC),
    plaintext=st.binary(min_size=1, max_size=256),
    position=st.integers(min_value=0),
    flip=st.integers(min_value=1, max_value=255),
)
def test_property_any_single_byte_change_of_the_body_is_invalid_ciphertext(
    keys: Kms, key_type: str, plaintext: bytes, position: int, flip: int
) -> None:
    ciphertext = encrypt(keys, key_type, plaintext)["ciphertext"]
    prefix, body = ciphertext.rsplit(":", 1)
    raw = bytearray(base64.b64decode(body))
    raw[position % len(raw)] ^= flip
    response = decrypt(keys, key_type, f"{prefix}:{b64(bytes(raw))}")
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_ciphertext"


def test_material_is_loaded_from_storage_when_not_in_memory(kms: Kms) -> None:
    """What a restarted server does: unwrap the stored material, and it decrypts."""
    kms.create_key("k")
    sealed = encrypt(kms, "k", b"kept")
    kms.services.keyring._handles.clear()
    opened = decrypt(kms, "k", sealed["ciphertext"])
    assert opened.status_code == 200
    assert base64.b64decode(opened.json()["plaintext"]) == b"kept"


def test_a_second_app_on_the_same_data_directory_decrypts(kms: Kms) -> None:
    from starlette.testclient import TestClient

    from coffer.bootstrap import build_app

    kms.create_key("k")
    sealed = encrypt(kms, "k", b"kept")
    with TestClient(build_app(kms.settings)) as other:
        opened = other.post(
            f"{KEYS}/k/decrypt", json={"ciphertext": sealed["ciphertext"]}, headers=kms.headers
        )
    assert opened.status_code == 200
    assert base64.b64decode(opened.json()["plaintext"]) == b"kept"
