"""Known-answer tests for RSA-OAEP decryption by the RSA key handles, from Project Wycheproof.

The vectors live in ``tests/vectors/wycheproof/`` (see the README there). Each file has one RSA
private key (``privateKeyPkcs8``), which goes in the way a caller's key does: the algorithm's
``import_material`` (full validation) and then ``load``. Coffer's encryption is OAEP with SHA-256,
MGF1-SHA-256 and no label (``rsa.py``), so ``_applies`` keeps only the vectors with those
parameters and an empty ``label``: 8 valid vectors per file carry a label and are left out of the
known-answer tests (24 in all); ``test_ciphertexts_made_with_a_label_are_rejected`` uses them to
show that such a ciphertext is refused rather than decrypted. The files have no ``acceptable``
vectors (the count test checks that), so there is no test for them.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from coffer.crypto.rsa import RSA_2048, RSA_3072, RSA_4096, RsaAlgorithm, RsaKey
from coffer.errors import InvalidCiphertext

VECTORS_DIR = Path(__file__).parent.parent / "vectors" / "wycheproof"

SOURCES = {
    "rsa_oaep_2048_sha256_mgf1sha256_test.json": ("rsa-oaep-2048", RSA_2048),
    "rsa_oaep_3072_sha256_mgf1sha256_test.json": ("rsa-oaep-3072", RSA_3072),
    "rsa_oaep_4096_sha256_mgf1sha256_test.json": ("rsa-oaep-4096", RSA_4096),
}


def _group_applies(group: dict[str, Any], algorithm: RsaAlgorithm) -> bool:
    """The group's key has the key type's size and its padding is Coffer's: OAEP with SHA-256 and
    MGF1-SHA-256."""
    return bool(
        group["keySize"] == algorithm.bits
        and group["sha"] == "SHA-256"
        and group["mgf"] == "MGF1"
        and group["mgfSha"] == "SHA-256"
    )


def _test_applies(test: dict[str, Any]) -> bool:
    """Coffer encrypts with no OAEP label, so only vectors with an empty label can decrypt."""
    return bool(test["label"] == "")


@dataclass(frozen=True)
class OaepVector:
    id: str
    algorithm: RsaAlgorithm
    private_pkcs8: bytes
    msg: bytes
    ct: bytes
    result: str

    @property
    def handle(self) -> RsaKey:
        return rsa_handle(self.algorithm, self.private_pkcs8)


@functools.cache
def rsa_handle(algorithm: RsaAlgorithm, private_pkcs8: bytes) -> RsaKey:
    """The vector's key imported as a caller's key would be, then loaded (once per key)."""
    return algorithm.load(algorithm.import_material(private_pkcs8))


@dataclass(frozen=True)
class _Loaded:
    vectors: list[OaepVector]
    with_label: list[OaepVector]


def load_vectors(filename: str) -> _Loaded:
    """The vectors of ``filename`` Coffer's OAEP can decrypt, and those left out for their label."""
    prefix, algorithm = SOURCES[filename]
    data = json.loads((VECTORS_DIR / filename).read_text(encoding="utf-8"))
    assert data["schema"] == "rsaes_oaep_decrypt_schema_v1.json"
    vectors: list[OaepVector] = []
    with_label: list[OaepVector] = []
    for group in data["testGroups"]:
        if not _group_applies(group, algorithm):
            continue
        private_pkcs8 = bytes.fromhex(group["privateKeyPkcs8"])
        for test in group["tests"]:
            vector = OaepVector(
                id=f"{prefix}-tc{test['tcId']}",
                algorithm=algorithm,
                private_pkcs8=private_pkcs8,
                msg=bytes.fromhex(test["msg"]),
                ct=bytes.fromhex(test["ct"]),
                result=test["result"],
            )
            (vectors if _test_applies(test) else with_label).append(vector)
    return _Loaded(vectors, with_label)


LOADED = {filename: load_vectors(filename) for filename in SOURCES}
ALL_VECTORS = [v for loaded in LOADED.values() for v in loaded.vectors]
WITH_LABEL = [v for loaded in LOADED.values() for v in loaded.with_label]


def _select(vectors: list[OaepVector], *results: str) -> list[object]:
    return [pytest.param(v, id=v.id) for v in vectors if v.result in results]


@pytest.mark.parametrize("filename", list(SOURCES))
def test_each_vector_file_contributes_the_expected_vectors(filename: str) -> None:
    # At the pinned Wycheproof commit: 10 valid and 19 invalid vectors without a label per file,
    # 8 valid ones with a label filtered out, and no "acceptable" ones.
    loaded = LOADED[filename]
    assert sum(v.result == "valid" for v in loaded.vectors) == 10
    assert sum(v.result == "invalid" for v in loaded.vectors) == 19
    assert len(loaded.vectors) == 29
    assert len(loaded.with_label) == 8


def test_vector_ids_are_unique() -> None:
    ids = [v.id for v in ALL_VECTORS + WITH_LABEL]
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize("vector", _select(ALL_VECTORS, "valid"))
def test_valid_vectors_decrypt_to_the_expected_message(vector: OaepVector) -> None:
    assert vector.handle.decrypt(vector.ct) == vector.msg


@pytest.mark.parametrize("vector", _select(ALL_VECTORS, "invalid"))
def test_invalid_vectors_are_rejected_with_the_one_error(vector: OaepVector) -> None:
    with pytest.raises(InvalidCiphertext) as raised:
        vector.handle.decrypt(vector.ct)
    # One message for every cause, so the error is no padding oracle.
    assert raised.value.message == InvalidCiphertext.default_message


@pytest.mark.parametrize("vector", _select(WITH_LABEL, "valid", "invalid"))
def test_ciphertexts_made_with_a_label_are_rejected(vector: OaepVector) -> None:
    # Not a Wycheproof expectation: Coffer decrypts with an empty label, so these must not decrypt.
    with pytest.raises(InvalidCiphertext):
        vector.handle.decrypt(vector.ct)


@pytest.mark.parametrize("filename", list(SOURCES))
def test_the_vector_keys_round_trip_their_own_messages(filename: str) -> None:
    # Derived: encrypt (random OAEP seed) and decrypt again with each file's key.
    valid = [v for v in LOADED[filename].vectors if v.result == "valid"]
    assert valid
    for vector in valid:
        assert vector.handle.decrypt(vector.handle.encrypt(vector.msg)) == vector.msg
