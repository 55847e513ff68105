"""Known-answer tests for the symmetric AEAD algorithm objects, from Project Wycheproof.

The vectors live in ``tests/vectors/wycheproof/`` (see the README there). Coffer's body format is
nonce (12 bytes) ‖ ciphertext ‖ tag (16 bytes) with no associated data, so only vectors with a
96-bit IV, a 128-bit tag, empty ``aad`` and a key size Coffer offers are used. Vectors whose result
is ``acceptable`` are filtered out by the loader (neither file has any in the selection today).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from coffer.crypto.aead import (
    AES_GCM_128,
    AES_GCM_256,
    CHACHA20_POLY1305,
    NONCE_BYTES,
    TAG_BYTES,
    AeadAlgorithm,
)
from coffer.errors import InvalidCiphertext, InvalidKeyMaterial

VECTORS_DIR = Path(__file__).parent.parent / "vectors" / "wycheproof"

AES_GCM_FILE = "aes_gcm_test.json"
CHACHA_FILE = "chacha20_poly1305_test.json"


@dataclass(frozen=True)
class _Source:
    """How one Wycheproof file maps onto Coffer: its id prefix and algorithm per key size."""

    prefix: str
    wycheproof_algorithm: str
    by_key_bytes: dict[int, AeadAlgorithm]


SOURCES = {
    AES_GCM_FILE: _Source("aes-gcm", "AES-GCM", {16: AES_GCM_128, 32: AES_GCM_256}),
    CHACHA_FILE: _Source("chacha20-poly1305", "CHACHA20-POLY1305", {32: CHACHA20_POLY1305}),
}


@dataclass(frozen=True)
class AeadVector:
    id: str
    algorithm: AeadAlgorithm
    key: bytes
    iv: bytes
    msg: bytes
    ct: bytes
    tag: bytes
    result: str

    @property
    def body(self) -> bytes:
        """The vector in Coffer's body format: nonce ‖ ciphertext ‖ tag."""
        return self.iv + self.ct + self.tag


def load_vectors(filename: str) -> list[AeadVector]:
    """The vectors of ``filename`` that Coffer's body format can express, valid or invalid."""
    source = SOURCES[filename]
    data = json.loads((VECTORS_DIR / filename).read_text(encoding="utf-8"))
    assert data["algorithm"] == source.wycheproof_algorithm
    vectors = []
    for group in data["testGroups"]:
        algorithm = source.by_key_bytes.get(group["keySize"] // 8)
        if (
            algorithm is None
            or group["ivSize"] != NONCE_BYTES * 8
            or group["tagSize"] != TAG_BYTES * 8
        ):
            continue
        for test in group["tests"]:
            # Coffer uses no associated data; "acceptable" vectors are left out on purpose.
            if test["aad"] or test["result"] not in ("valid", "invalid"):
                continue
            vectors.append(
                AeadVector(
                    id=f"{source.prefix}-tc{test['tcId']}",
                    algorithm=algorithm,
                    key=bytes.fromhex(test["key"]),
                    iv=bytes.fromhex(test["iv"]),
                    msg=bytes.fromhex(test["msg"]),
                    ct=bytes.fromhex(test["ct"]),
                    tag=bytes.fromhex(test["tag"]),
                    result=test["result"],
                )
            )
    return vectors


ALL_VECTORS = {filename: load_vectors(filename) for filename in SOURCES}


def _select(result: str) -> list[AeadVector]:
    return [v for vectors in ALL_VECTORS.values() for v in vectors if v.result == result]


VALID = _select("valid")
INVALID = _select("invalid")


def _params(vectors: list[AeadVector]) -> list[object]:
    return [pytest.param(v, id=v.id) for v in vectors]


# Lower bounds: the counts found at the pinned Wycheproof commit. Every ChaCha20-Poly1305 invalid
# vector with a 96-bit nonce carries associated data, so none of them can be expressed in Coffer's
# format; the flipped-tag test below covers rejection for that algorithm instead.
@pytest.mark.parametrize(
    ("filename", "min_valid", "min_invalid"),
    [
        pytest.param(AES_GCM_FILE, 43, 54, id="aes-gcm"),
        pytest.param(CHACHA_FILE, 45, 0, id="chacha20-poly1305"),
    ],
)
def test_each_vector_file_contributes_enough_usable_vectors(
    filename: str, min_valid: int, min_invalid: int
) -> None:
    vectors = ALL_VECTORS[filename]
    valid = sum(v.result == "valid" for v in vectors)
    invalid = sum(v.result == "invalid" for v in vectors)
    assert vectors, f"no usable vectors in {filename}"
    assert valid >= min_valid, f"{filename}: {valid} valid vectors"
    assert invalid >= min_invalid, f"{filename}: {invalid} invalid vectors"


def test_vector_ids_are_unique() -> None:
    ids = [v.id for vectors in ALL_VECTORS.values() for v in vectors]
    assert len(ids) == len(set(ids))


def test_every_algorithm_is_covered_by_valid_vectors() -> None:
    covered = {v.algorithm.key_type for v in VALID}
    assert covered == {a.key_type for a in (AES_GCM_128, AES_GCM_256, CHACHA20_POLY1305)}


@pytest.mark.parametrize("vector", _params(VALID))
def test_valid_vectors_encrypt_to_the_expected_ciphertext(vector: AeadVector) -> None:
    key = vector.algorithm.load(vector.key)
    assert key.encrypt(vector.msg, nonce=vector.iv) == vector.body


@pytest.mark.parametrize("vector", _params(VALID))
def test_valid_vectors_decrypt_to_the_expected_message(vector: AeadVector) -> None:
    key = vector.algorithm.load(vector.key)
    assert key.decrypt(vector.body) == vector.msg


@pytest.mark.parametrize("vector", _params(INVALID))
def test_invalid_vectors_are_rejected_on_decrypt(vector: AeadVector) -> None:
    key = vector.algorithm.load(vector.key)
    with pytest.raises(InvalidCiphertext):
        key.decrypt(vector.body)


@pytest.mark.parametrize("vector", _params(VALID))
def test_valid_vectors_with_a_flipped_tag_bit_are_rejected(vector: AeadVector) -> None:
    # Derived from the valid vectors, not a Wycheproof vector itself.
    key = vector.algorithm.load(vector.key)
    tampered = bytearray(vector.body)
    tampered[-1] ^= 0x01
    with pytest.raises(InvalidCiphertext):
        key.decrypt(bytes(tampered))


ALGORITHMS = [
    pytest.param(AES_GCM_128, id="aes128-gcm96"),
    pytest.param(AES_GCM_256, id="aes256-gcm96"),
    pytest.param(CHACHA20_POLY1305, id="chacha20-poly1305"),
]


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("delta", [-1, 1, 8])
def test_loading_a_key_of_the_wrong_size_is_refused(algorithm: AeadAlgorithm, delta: int) -> None:
    with pytest.raises(InvalidKeyMaterial):
        algorithm.load(bytes(algorithm.key_bytes + delta))


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_loading_an_empty_key_is_refused(algorithm: AeadAlgorithm) -> None:
    with pytest.raises(InvalidKeyMaterial):
        algorithm.load(b"")


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("length", [0, 1, NONCE_BYTES, NONCE_BYTES + TAG_BYTES - 1])
def test_bodies_shorter_than_nonce_and_tag_are_rejected(
    algorithm: AeadAlgorithm, length: int
) -> None:
    key = algorithm.load(algorithm.generate())
    with pytest.raises(InvalidCiphertext):
        key.decrypt(bytes(length))


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_repr_of_a_loaded_key_does_not_reveal_the_key(algorithm: AeadAlgorithm) -> None:
    material = bytes(range(0xA0, 0xA0 + algorithm.key_bytes))
    key = algorithm.load(material)
    for text in (repr(key), str(key)):
        assert material.hex() not in text.lower()
        assert repr(material) not in text
