"""Known-answer and failure tests for BYOK unwrapping (``WrappingKey.unwrap``, spec §5.11).

A BYOK blob is RSA-OAEP(ephemeral AES-256 key) ‖ AES-KWP(ephemeral key, target key). The AES-KWP
half comes from Project Wycheproof's ``aes_kwp_test.json`` (``tests/vectors/wycheproof/``, see the
README there): the vector's ``key`` is the ephemeral key and its ``ct`` the wrapped target key, and
the RSA-OAEP half is made here with the public key of an RSA-4096 wrapping key generated once for
the module. The ephemeral key is always AES-256, so ``_applies`` keeps only the ``keySize`` 256
group (94 vectors); the 128- and 192-bit groups (160 vectors) are left out. The file has no
``acceptable`` vectors (the count test checks that).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.keywrap import aes_key_wrap_with_padding

from coffer.crypto.byok import EPHEMERAL_KEY_BYTES, WRAPPING_KEY_BITS, WrappingKey
from coffer.domain.signing import ImportHash
from coffer.errors import InvalidKeyMaterial

VECTORS_DIR = Path(__file__).parent.parent / "vectors" / "wycheproof"
KWP_FILE = "aes_kwp_test.json"

RSA_BYTES = WRAPPING_KEY_BITS // 8

OAEP_HASHES: dict[ImportHash, type[hashes.HashAlgorithm]] = {
    ImportHash.SHA1: hashes.SHA1,
    ImportHash.SHA224: hashes.SHA224,
    ImportHash.SHA256: hashes.SHA256,
    ImportHash.SHA384: hashes.SHA384,
    ImportHash.SHA512: hashes.SHA512,
}


def _applies(group: dict[str, Any]) -> bool:
    """The ephemeral key of a BYOK blob is AES-256: only the 256-bit KWP group applies."""
    return bool(group["keySize"] == EPHEMERAL_KEY_BYTES * 8)


@dataclass(frozen=True)
class KwpVector:
    id: str
    key: bytes
    msg: bytes
    ct: bytes
    result: str


@dataclass(frozen=True)
class _Loaded:
    vectors: list[KwpVector]
    filtered: int


def load_vectors() -> _Loaded:
    data = json.loads((VECTORS_DIR / KWP_FILE).read_text(encoding="utf-8"))
    assert data["algorithm"] == "AES-KWP"
    vectors, filtered = [], 0
    for group in data["testGroups"]:
        if not _applies(group):
            filtered += len(group["tests"])
            continue
        for test in group["tests"]:
            vectors.append(
                KwpVector(
                    id=f"aes-kwp-tc{test['tcId']}",
                    key=bytes.fromhex(test["key"]),
                    msg=bytes.fromhex(test["msg"]),
                    ct=bytes.fromhex(test["ct"]),
                    result=test["result"],
                )
            )
    return _Loaded(vectors, filtered)


LOADED = load_vectors()


def _select(result: str) -> list[object]:
    return [pytest.param(v, id=v.id) for v in LOADED.vectors if v.result == result]


@dataclass(frozen=True)
class Wrapping:
    """The module's wrapping key, and its public half as a BYOK client gets it (PEM)."""

    key: WrappingKey
    public: rsa.RSAPublicKey

    def blob(
        self, ephemeral: bytes, wrapped: bytes, hash_function: ImportHash = ImportHash.SHA256
    ) -> bytes:
        digest = OAEP_HASHES[hash_function]()
        oaep = padding.OAEP(mgf=padding.MGF1(digest), algorithm=digest, label=None)
        return self.public.encrypt(ephemeral, oaep) + wrapped


@pytest.fixture(scope="module")
def wrapping() -> Wrapping:
    key = WrappingKey.load(WrappingKey.generate())
    public = serialization.load_pem_public_key(key.public_pem.encode("ascii"))
    assert isinstance(public, rsa.RSAPublicKey)
    assert public.key_size == WRAPPING_KEY_BITS
    return Wrapping(key, public)


def _unwrap_failure(wrapping: Wrapping, blob: bytes, hash_function: ImportHash) -> str:
    with pytest.raises(InvalidKeyMaterial) as raised:
        wrapping.key.unwrap(blob, hash_function)
    return raised.value.message


@pytest.fixture(scope="module")
def reference_message(wrapping: Wrapping) -> str:
    """The message of the plainest failure (an empty blob), which every other must repeat."""
    return _unwrap_failure(wrapping, b"", ImportHash.SHA256)


# --- Wycheproof AES-KWP ----------------------------------------------------------------------


def test_the_vector_file_contributes_the_expected_vectors() -> None:
    # At the pinned Wycheproof commit: 25 valid and 69 invalid vectors with a 256-bit key, and the
    # 160 vectors of the 128- and 192-bit groups filtered out.
    assert sum(v.result == "valid" for v in LOADED.vectors) == 25
    assert sum(v.result == "invalid" for v in LOADED.vectors) == 69
    assert len(LOADED.vectors) == 94
    assert LOADED.filtered == 160


def test_vector_ids_are_unique() -> None:
    ids = [v.id for v in LOADED.vectors]
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize("vector", _select("valid"))
def test_valid_vectors_unwrap_to_the_expected_key(wrapping: Wrapping, vector: KwpVector) -> None:
    blob = wrapping.blob(vector.key, vector.ct)
    assert wrapping.key.unwrap(blob, ImportHash.SHA256) == vector.msg


@pytest.mark.parametrize("vector", _select("invalid"))
def test_invalid_vectors_are_refused_as_invalid_key_material(
    wrapping: Wrapping, reference_message: str, vector: KwpVector
) -> None:
    blob = wrapping.blob(vector.key, vector.ct)
    assert _unwrap_failure(wrapping, blob, ImportHash.SHA256) == reference_message


# --- the RSA-OAEP half and the one failure message -------------------------------------------

TARGET = bytes(range(32))
EPHEMERAL = bytes(range(0x40, 0x40 + EPHEMERAL_KEY_BYTES))
WRAPPED = aes_key_wrap_with_padding(EPHEMERAL, TARGET)


@pytest.mark.parametrize("hash_function", list(ImportHash))
def test_every_import_hash_unwraps(wrapping: Wrapping, hash_function: ImportHash) -> None:
    blob = wrapping.blob(EPHEMERAL, WRAPPED, hash_function)
    assert wrapping.key.unwrap(blob, hash_function) == TARGET


def test_every_import_hash_is_covered() -> None:
    assert set(OAEP_HASHES) == set(ImportHash)


def _flipped(blob: bytes, index: int) -> bytes:
    tampered = bytearray(blob)
    tampered[index] ^= 0x01
    return bytes(tampered)


def _good(w: Wrapping) -> bytes:
    return w.blob(EPHEMERAL, WRAPPED)


#: Every way a blob can fail to unwrap: name → (blob for a wrapping key, hash it is unwrapped with).
FAILURES: dict[str, Callable[[Wrapping], tuple[bytes, ImportHash]]] = {
    "empty": lambda w: (b"", ImportHash.SHA256),
    "one-byte": lambda w: (b"\x00", ImportHash.SHA256),
    "rsa-part-one-byte-short": lambda w: (_good(w)[: RSA_BYTES - 1], ImportHash.SHA256),
    "rsa-part-only": lambda w: (_good(w)[:RSA_BYTES], ImportHash.SHA256),
    "sha1-blob-unwrapped-as-sha256": lambda w: (
        w.blob(EPHEMERAL, WRAPPED, ImportHash.SHA1),
        ImportHash.SHA256,
    ),
    "sha256-blob-unwrapped-as-sha512": lambda w: (_good(w), ImportHash.SHA512),
    "flipped-bit-first-rsa-byte": lambda w: (_flipped(_good(w), 0), ImportHash.SHA256),
    "flipped-bit-last-rsa-byte": lambda w: (_flipped(_good(w), RSA_BYTES - 1), ImportHash.SHA256),
    "flipped-bit-first-kwp-byte": lambda w: (_flipped(_good(w), RSA_BYTES), ImportHash.SHA256),
    "flipped-bit-last-kwp-byte": lambda w: (_flipped(_good(w), -1), ImportHash.SHA256),
    "kwp-part-cut-short": lambda w: (_good(w)[:-8], ImportHash.SHA256),
    "kwp-part-not-a-multiple-of-8": lambda w: (_good(w) + b"\x00", ImportHash.SHA256),
    "aes-128-ephemeral-key": lambda w: (
        w.blob(EPHEMERAL[:16], aes_key_wrap_with_padding(EPHEMERAL[:16], TARGET)),
        ImportHash.SHA256,
    ),
    "33-byte-ephemeral-key": lambda w: (w.blob(EPHEMERAL + b"\x00", WRAPPED), ImportHash.SHA256),
}


def test_the_good_blob_of_the_failure_cases_unwraps(wrapping: Wrapping) -> None:
    assert wrapping.key.unwrap(_good(wrapping), ImportHash.SHA256) == TARGET


@pytest.mark.parametrize("failure", [pytest.param(f, id=name) for name, f in FAILURES.items()])
def test_every_way_of_failing_gives_the_same_message(
    wrapping: Wrapping,
    reference_message: str,
    failure: Callable[[Wrapping], tuple[bytes, ImportHash]],
) -> None:
    blob, hash_function = failure(wrapping)
    assert _unwrap_failure(wrapping, blob, hash_function) == reference_message
    assert "unwrapped" in reference_message
