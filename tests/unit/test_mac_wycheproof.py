"""Known-answer tests for HMAC-SHA-256 and HMAC-SHA-512 through ``HmacKey``: Project Wycheproof
vectors and the RFC 4231 test cases.

The Wycheproof vectors live in ``tests/vectors/wycheproof/`` (see the README there). ``HmacKey``
takes a key of any length, so every key size in the files applies. Coffer's MACs are full-length
(``mac()`` returns the whole hash output and ``verify_mac()`` compares against it), so ``_applies``
keeps only the groups whose ``tagSize`` is the hash's full output; the groups with truncated tags
are left out of the known-answer tests (87 vectors per file) and used only to show that a
truncated tag never verifies. Neither file has ``acceptable`` vectors (the count test checks that).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from coffer.crypto.mac import HMAC, HMAC_SHA256, HMAC_SHA512, HmacAlgorithm, HmacKey
from coffer.domain.signing import HashAlgorithm

VECTORS_DIR = Path(__file__).parent.parent / "vectors" / "wycheproof"


@dataclass(frozen=True)
class _Source:
    prefix: str
    wycheproof_algorithm: str
    digest: HashAlgorithm
    #: The key types whose ``load`` accepts keys of this file's size (checked on those vectors).
    algorithms: tuple[HmacAlgorithm, ...]


SOURCES = {
    "hmac_sha256_test.json": _Source(
        "hmac-sha256", "HMACSHA256", HashAlgorithm.SHA2_256, (HMAC, HMAC_SHA256)
    ),
    "hmac_sha512_test.json": _Source(
        "hmac-sha512", "HMACSHA512", HashAlgorithm.SHA2_512, (HMAC, HMAC_SHA512)
    ),
}


def _applies(source: _Source, group: dict[str, Any]) -> bool:
    """Only full-length tags: Coffer neither produces nor accepts truncated HMAC tags."""
    return bool(group["tagSize"] == source.digest.digest_bytes * 8)


@dataclass(frozen=True)
class MacVector:
    id: str
    digest: HashAlgorithm
    key: bytes
    msg: bytes
    tag: bytes
    result: str


@dataclass(frozen=True)
class _Loaded:
    vectors: list[MacVector]
    truncated: list[MacVector]


def load_vectors(filename: str) -> _Loaded:
    """The full-tag vectors of ``filename``, and apart from them the truncated-tag ones."""
    source = SOURCES[filename]
    data = json.loads((VECTORS_DIR / filename).read_text(encoding="utf-8"))
    assert data["algorithm"] == source.wycheproof_algorithm
    vectors: list[MacVector] = []
    truncated: list[MacVector] = []
    for group in data["testGroups"]:
        applies = _applies(source, group)
        for test in group["tests"]:
            vector = MacVector(
                id=f"{source.prefix}-tc{test['tcId']}",
                digest=source.digest,
                key=bytes.fromhex(test["key"]),
                msg=bytes.fromhex(test["msg"]),
                tag=bytes.fromhex(test["tag"]),
                result=test["result"],
            )
            (vectors if applies else truncated).append(vector)
    return _Loaded(vectors, truncated)


LOADED = {filename: load_vectors(filename) for filename in SOURCES}
ALL_VECTORS = [v for loaded in LOADED.values() for v in loaded.vectors]


def _select(result: str) -> list[object]:
    return [pytest.param(v, id=v.id) for v in ALL_VECTORS if v.result == result]


# --- Wycheproof ------------------------------------------------------------------------------


@pytest.mark.parametrize("filename", list(SOURCES))
def test_each_vector_file_contributes_the_expected_vectors(filename: str) -> None:
    # At the pinned Wycheproof commit: 33 valid and 54 invalid full-tag vectors per file (keys of
    # 32, 16 and 65 bytes for SHA-256; 64, 32 and 65 bytes for SHA-512), and 87 truncated-tag
    # vectors filtered out.
    loaded = LOADED[filename]
    assert sum(v.result == "valid" for v in loaded.vectors) == 33
    assert sum(v.result == "invalid" for v in loaded.vectors) == 54
    assert len(loaded.vectors) == 87
    assert len(loaded.truncated) == 87
    assert len(loaded.truncated) > 0  # the filter does filter something


def test_vector_ids_are_unique() -> None:
    ids = [v.id for loaded in LOADED.values() for v in loaded.vectors + loaded.truncated]
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize("vector", _select("valid"))
def test_valid_vectors_mac_to_the_expected_tag(vector: MacVector) -> None:
    key = HmacKey(vector.key)
    assert key.mac(vector.msg, vector.digest) == vector.tag
    assert key.verify_mac(vector.msg, vector.tag, vector.digest) is True


@pytest.mark.parametrize("vector", _select("invalid"))
def test_invalid_vectors_do_not_verify(vector: MacVector) -> None:
    key = HmacKey(vector.key)
    assert key.mac(vector.msg, vector.digest) != vector.tag
    assert key.verify_mac(vector.msg, vector.tag, vector.digest) is False


@pytest.mark.parametrize("filename", list(SOURCES))
def test_valid_vectors_of_the_key_types_size_pass_through_the_algorithm(filename: str) -> None:
    # Derived: the vectors whose key fits a key type, loaded through that type's algorithm object.
    source = SOURCES[filename]
    for algorithm in source.algorithms:
        fitting = [
            v
            for v in LOADED[filename].vectors
            if v.result == "valid" and len(v.key) == algorithm.key_bytes
        ]
        assert fitting, algorithm.key_type
        for vector in fitting:
            key = algorithm.load(vector.key)
            assert key.mac(vector.msg, vector.digest) == vector.tag, vector.id
            assert key.verify_mac(vector.msg, vector.tag, vector.digest) is True, vector.id


@pytest.mark.parametrize("filename", list(SOURCES))
def test_truncated_tags_never_verify(filename: str) -> None:
    # Derived from the filtered-out vectors: even a correct truncated tag is not a valid MAC here.
    truncated = LOADED[filename].truncated
    assert truncated
    accepted = [
        v.id for v in truncated if HmacKey(v.key).verify_mac(v.msg, v.tag, v.digest) is not False
    ]
    assert accepted == []


# --- RFC 4231 --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rfc4231Case:
    key: bytes
    data: bytes
    sha256: str
    sha512: str


RFC4231 = {
    # RFC 4231 §4.2, Test Case 1
    "tc1": Rfc4231Case(
        key=bytes.fromhex("0b" * 20),
        data=b"Hi There",
        sha256="b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7",
        sha512=(
            "87aa7cdea5ef619d4ff0b4241a1d6cb02379f4e2ce4ec2787ad0b30545e17cde"
            "daa833b7d6b8a702038b274eaea3f4e4be9d914eeb61f1702e696c203a126854"
        ),
    ),
    # RFC 4231 §4.3, Test Case 2: a key shorter than the hash output
    "tc2": Rfc4231Case(
        key=b"Jefe",
        data=b"what do ya want for nothing?",
        sha256="5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
        sha512=(
            "164b7a7bfcf819e2e395fbe73b56e0a387bd64222e831fd610270cd7ea250554"
            "9758bf75c05a994a6d034f65f8f0e6fdcaeab1a34d4a6b4b636e070a38bce737"
        ),
    ),
    # RFC 4231 §4.4, Test Case 3: combined length of key and data larger than 64 bytes
    "tc3": Rfc4231Case(
        key=bytes.fromhex("aa" * 20),
        data=bytes.fromhex("dd" * 50),
        sha256="773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe",
        sha512=(
            "fa73b0089d56a284efb0f0756c890be9b1b5dbdd8ee81a3655f83e33b2279d39"
            "bf3e848279a722c806b485a47e67c807b946a337bee8942674278859e13292fb"
        ),
    ),
    # RFC 4231 §4.5, Test Case 4: combined length of key and data larger than 64 bytes
    "tc4": Rfc4231Case(
        key=bytes.fromhex("0102030405060708090a0b0c0d0e0f10111213141516171819"),
        data=bytes.fromhex("cd" * 50),
        sha256="82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b",
        sha512=(
            "b0ba465637458c6990e5a8c5f61d4af7e576d97ff94b872de76f8050361ee3db"
            "a91ca5c11aa25eb4d679275cc5788063a5f19741120c4f2de2adebeb10a298dd"
        ),
    ),
    # RFC 4231 §4.7, Test Case 6: a key larger than the 128-byte block size (hashed first)
    "tc6": Rfc4231Case(
        key=bytes.fromhex("aa" * 131),
        data=b"Test Using Larger Than Block-Size Key - Hash Key First",
        sha256="60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54",
        sha512=(
            "80b24263c7c1a3ebb71493c1dd7be8b49b46d1f41b4aeec1121b013783f8f352"
            "6b56d037e05f2598bd0fd2215d6a1e5295e64f73f63f0aec8b915a985d786598"
        ),
    ),
    # RFC 4231 §4.8, Test Case 7: a key and data larger than the block size
    "tc7": Rfc4231Case(
        key=bytes.fromhex("aa" * 131),
        data=(
            b"This is a test using a larger than block-size key and a larger than block-size"
            b" data. The key needs to be hashed before being used by the HMAC algorithm."
        ),
        sha256="9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2",
        sha512=(
            "e37b6a775dc87dbaa4dfa9f96e5e3ffddebd71f8867289865df5a32d20cdc944"
            "b6022cac3c4982b10d5eeb55c3e4de15134676fb6de0446065c97440fa8c6a58"
        ),
    ),
}
# RFC 4231 §4.6, Test Case 5 (a tag truncated to 128 bits) is left out: Coffer's tags are full.

RFC4231_PARAMS = [
    pytest.param(case, digest, id=f"{name}-{digest.value}")
    for name, case in RFC4231.items()
    for digest in (HashAlgorithm.SHA2_256, HashAlgorithm.SHA2_512)
]


def _expected(case: Rfc4231Case, digest: HashAlgorithm) -> bytes:
    return bytes.fromhex(case.sha256 if digest is HashAlgorithm.SHA2_256 else case.sha512)


@pytest.mark.parametrize(("case", "digest"), RFC4231_PARAMS)
def test_rfc4231_test_cases(case: Rfc4231Case, digest: HashAlgorithm) -> None:
    key = HmacKey(case.key)
    tag = _expected(case, digest)
    assert key.mac(case.data, digest) == tag
    assert key.verify_mac(case.data, tag, digest) is True


@pytest.mark.parametrize(("case", "digest"), RFC4231_PARAMS)
def test_rfc4231_tags_with_a_flipped_bit_do_not_verify(
    case: Rfc4231Case, digest: HashAlgorithm
) -> None:
    key = HmacKey(case.key)
    tampered = bytearray(_expected(case, digest))
    tampered[0] ^= 0x80
    assert key.verify_mac(case.data, bytes(tampered), digest) is False
    assert key.verify_mac(case.data + b"\x00", _expected(case, digest), digest) is False
