"""Known-answer tests for signature verification by the asymmetric key handles, from Wycheproof.

The vectors live in ``tests/vectors/wycheproof/`` (see the README there): ECDSA P-256/P-384/P-521
with ASN.1 DER signatures, RSA-PSS (MGF1 with the signing hash, salt as long as the hash), RSA
PKCS #1 v1.5 and Ed25519. A ``valid`` vector must verify; an ``invalid`` one must give ``False`` or
a clean ``CofferError`` (``InvalidSignatureFormat``), never any other exception; an ``acceptable``
one may give either answer but again no foreign exception.

Wycheproof's verify vectors carry a public key only, while every handle is built from a private key
(``EcdsaKey(private)``, ``RsaKey(private)``, ``Ed25519Key(private)``). The ``_VerifyOnly*`` classes
below are therefore test-local adapters: subclasses that fill the handle's public-key slots from the
vector's key and inherit ``verify`` unchanged, so the code under test is the handle's own. They
depend on the handles' private slot names; ``test_adapters_agree_with_loaded_handles`` checks each
adapter against a handle loaded the ordinary way, through the algorithm object.

Every vector of the selected files applies today; ``_applies`` documents the parameters Coffer
supports and would filter out any vector outside them (the counts are checked below).
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa, utils

from coffer.crypto.algorithms import algorithm_for
from coffer.crypto.ecdsa import EcdsaKey
from coffer.crypto.eddsa import Ed25519Key
from coffer.crypto.handles import KeyHandle
from coffer.crypto.rsa import RsaKey
from coffer.domain.keytypes import KeyType
from coffer.domain.signing import SignOptions
from coffer.errors import CofferError

VECTORS_DIR = Path(__file__).parent.parent / "vectors" / "wycheproof"


# --- verify-only adapters over the real handle classes --------------------------------------


def _pem(public: ec.EllipticCurvePublicKey | rsa.RSAPublicKey) -> str:
    """The public key as ``public_key()`` shows it (PEM SPKI), as ``pkcs8.public_pem`` makes it."""
    return public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode("ascii")


class _VerifyOnlyEcdsaKey(EcdsaKey):
    """``EcdsaKey.verify`` over a bare public key (no private key, so no sign)."""

    __slots__ = ()

    def __init__(self, public: ec.EllipticCurvePublicKey) -> None:
        self._public = public
        self._pem = _pem(public)
        self._width = (public.curve.key_size + 7) // 8


class _VerifyOnlyRsaKey(RsaKey):
    """``RsaKey.verify`` over a bare public key (no private key, so no sign or decrypt)."""

    __slots__ = ()

    def __init__(self, public: rsa.RSAPublicKey) -> None:
        self._public = public
        self._pem = _pem(public)


class _VerifyOnlyEd25519Key(Ed25519Key):
    """``Ed25519Key.verify`` over a bare public key (no private key, so no sign)."""

    __slots__ = ()

    def __init__(self, public: ed25519.Ed25519PublicKey) -> None:
        self._public = public
        self._raw_public = public.public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )


@functools.cache
def verify_only_handle(public_der: bytes) -> KeyHandle:
    """A verify-only handle for an SPKI DER public key (parsed once per key, not per vector)."""
    public = serialization.load_der_public_key(public_der)
    if isinstance(public, ec.EllipticCurvePublicKey):
        return _VerifyOnlyEcdsaKey(public)
    if isinstance(public, rsa.RSAPublicKey):
        return _VerifyOnlyRsaKey(public)
    if isinstance(public, ed25519.Ed25519PublicKey):
        return _VerifyOnlyEd25519Key(public)
    raise AssertionError(f"unexpected public key type {type(public).__name__}")


# --- loading the vectors ----------------------------------------------------------------------

#: Wycheproof's hash names as the API spells them.
WYCHEPROOF_HASHES = {"SHA-256": "sha2-256", "SHA-384": "sha2-384", "SHA-512": "sha2-512"}
DIGEST_BYTES = {"SHA-256": 32, "SHA-384": 48, "SHA-512": 64}
ECDSA_CURVES = {
    KeyType.ECDSA_P256: "secp256r1",
    KeyType.ECDSA_P384: "secp384r1",
    KeyType.ECDSA_P521: "secp521r1",
}
RSA_BITS = {KeyType.RSA_2048: 2048, KeyType.RSA_3072: 3072, KeyType.RSA_4096: 4096}


@dataclass(frozen=True)
class _Source:
    """How one Wycheproof file maps onto Coffer: id prefix, schema, key type and RSA scheme."""

    prefix: str
    schema: str
    key_type: KeyType
    signature_algorithm: str | None = None


_ECDSA_SCHEMA = "ecdsa_verify_schema_v1.json"
_PSS_SCHEMA = "rsassa_pss_verify_schema_v1.json"
_PKCS1_SCHEMA = "rsassa_pkcs1_verify_schema_v1.json"

SOURCES = {
    "ecdsa_secp256r1_sha256_test.json": _Source(
        "ecdsa-p256-sha256", _ECDSA_SCHEMA, KeyType.ECDSA_P256
    ),
    "ecdsa_secp384r1_sha384_test.json": _Source(
        "ecdsa-p384-sha384", _ECDSA_SCHEMA, KeyType.ECDSA_P384
    ),
    "ecdsa_secp521r1_sha512_test.json": _Source(
        "ecdsa-p521-sha512", _ECDSA_SCHEMA, KeyType.ECDSA_P521
    ),
    "rsa_pss_2048_sha256_mgf1_32_test.json": _Source(
        "rsa-pss-2048-sha256", _PSS_SCHEMA, KeyType.RSA_2048, "pss"
    ),
    "rsa_pss_3072_sha256_mgf1_32_test.json": _Source(
        "rsa-pss-3072-sha256", _PSS_SCHEMA, KeyType.RSA_3072, "pss"
    ),
    "rsa_pss_4096_sha512_mgf1_64_test.json": _Source(
        "rsa-pss-4096-sha512", _PSS_SCHEMA, KeyType.RSA_4096, "pss"
    ),
    "rsa_signature_2048_sha256_test.json": _Source(
        "rsa-pkcs1-2048-sha256", _PKCS1_SCHEMA, KeyType.RSA_2048, "pkcs1v15"
    ),
    "rsa_signature_3072_sha384_test.json": _Source(
        "rsa-pkcs1-3072-sha384", _PKCS1_SCHEMA, KeyType.RSA_3072, "pkcs1v15"
    ),
    "rsa_signature_4096_sha512_test.json": _Source(
        "rsa-pkcs1-4096-sha512", _PKCS1_SCHEMA, KeyType.RSA_4096, "pkcs1v15"
    ),
    "ed25519_test.json": _Source("ed25519", "eddsa_verify_schema_v1.json", KeyType.ED25519),
}


def _applies(source: _Source, group: dict[str, Any]) -> bool:
    """Whether a test group's parameters are ones Coffer's key type can verify.

    ECDSA: the group's curve is the key type's curve. RSA: the modulus has the key type's size;
    PSS also needs MGF1 with the signing hash and a salt as long as the hash (``rsa.py``). Ed25519:
    every group (pure Ed25519 is the only variant in the file).
    """
    key_type = source.key_type
    if key_type in ECDSA_CURVES:
        return bool(group["publicKey"]["curve"] == ECDSA_CURVES[key_type])
    if key_type in RSA_BITS:
        if group["keySize"] != RSA_BITS[key_type]:
            return False
        if source.signature_algorithm == "pss":
            return bool(
                group["mgf"] == "MGF1"
                and group["mgfSha"] == group["sha"]
                and group["sLen"] == DIGEST_BYTES[group["sha"]]
            )
        return True
    return key_type is KeyType.ED25519


@dataclass(frozen=True)
class SignatureVector:
    id: str
    key_type: KeyType
    public_der: bytes
    hash_name: str | None  # Wycheproof's name ("SHA-256"); None for Ed25519
    options: SignOptions
    msg: bytes
    sig: bytes
    result: str

    @property
    def handle(self) -> KeyHandle:
        return verify_only_handle(self.public_der)


@dataclass(frozen=True)
class _Loaded:
    vectors: list[SignatureVector]
    filtered: int


def load_vectors(filename: str) -> _Loaded:
    """The vectors of ``filename`` whose parameters Coffer supports, and how many were left out."""
    source = SOURCES[filename]
    data = json.loads((VECTORS_DIR / filename).read_text(encoding="utf-8"))
    assert data["schema"] == source.schema
    vectors, filtered = [], 0
    for group in data["testGroups"]:
        if not _applies(source, group):
            filtered += len(group["tests"])
            continue
        hash_name = group.get("sha")
        options = SignOptions.for_key(
            source.key_type,
            hash_algorithm=WYCHEPROOF_HASHES[hash_name] if hash_name else None,
            signature_algorithm=source.signature_algorithm,
        )
        public_der = bytes.fromhex(group["publicKeyDer"])
        for test in group["tests"]:
            vectors.append(
                SignatureVector(
                    id=f"{source.prefix}-tc{test['tcId']}",
                    key_type=source.key_type,
                    public_der=public_der,
                    hash_name=hash_name,
                    options=options,
                    msg=bytes.fromhex(test["msg"]),
                    sig=bytes.fromhex(test["sig"]),
                    result=test["result"],
                )
            )
    return _Loaded(vectors, filtered)


LOADED = {filename: load_vectors(filename) for filename in SOURCES}
ALL_VECTORS = [v for loaded in LOADED.values() for v in loaded.vectors]


def _select(result: str) -> list[object]:
    return [pytest.param(v, id=v.id) for v in ALL_VECTORS if v.result == result]


def _outcome(
    handle: KeyHandle, data: bytes, sig: bytes, options: SignOptions
) -> bool | CofferError:
    """What ``verify`` answers: a bool, or the ``CofferError`` it raised (any other propagates)."""
    try:
        return handle.verify(data, sig, options)
    except CofferError as error:
        return error


# --- the counts ---------------------------------------------------------------------------------

# (valid, invalid, acceptable, filtered) at the pinned Wycheproof commit: nothing is filtered.
EXPECTED_COUNTS = {
    "ecdsa_secp256r1_sha256_test.json": (174, 310, 0, 0),
    "ecdsa_secp384r1_sha384_test.json": (194, 310, 0, 0),
    "ecdsa_secp521r1_sha512_test.json": (232, 310, 0, 0),
    "rsa_pss_2048_sha256_mgf1_32_test.json": (63, 45, 0, 0),
    "rsa_pss_3072_sha256_mgf1_32_test.json": (63, 45, 0, 0),
    "rsa_pss_4096_sha512_mgf1_64_test.json": (132, 47, 0, 0),
    "rsa_signature_2048_sha256_test.json": (9, 249, 1, 0),
    "rsa_signature_3072_sha384_test.json": (7, 251, 1, 0),
    "rsa_signature_4096_sha512_test.json": (7, 251, 1, 0),
    "ed25519_test.json": (88, 63, 0, 0),
}


@pytest.mark.parametrize("filename", list(SOURCES))
def test_each_vector_file_contributes_the_expected_vectors(filename: str) -> None:
    loaded = LOADED[filename]
    counts = tuple(
        sum(v.result == result for v in loaded.vectors)
        for result in ("valid", "invalid", "acceptable")
    )
    assert (*counts, loaded.filtered) == EXPECTED_COUNTS[filename]


def test_vector_ids_are_unique() -> None:
    ids = [v.id for v in ALL_VECTORS]
    assert len(ids) == len(set(ids))


def test_every_signing_key_type_is_covered_by_valid_vectors() -> None:
    covered = {v.key_type for v in ALL_VECTORS if v.result == "valid"}
    assert covered == {*ECDSA_CURVES, *RSA_BITS, KeyType.ED25519}


def test_the_adapters_run_the_handle_classes_own_verify() -> None:
    for adapter, handle_class in (
        (_VerifyOnlyEcdsaKey, EcdsaKey),
        (_VerifyOnlyRsaKey, RsaKey),
        (_VerifyOnlyEd25519Key, Ed25519Key),
    ):
        assert adapter.verify is handle_class.verify
        assert adapter.public_key is handle_class.public_key


@pytest.mark.parametrize(
    ("key_type", "hash_algorithm", "signature_algorithm"),
    [
        pytest.param(KeyType.ECDSA_P256, "sha2-256", None, id="ecdsa-p256"),
        pytest.param(KeyType.ECDSA_P384, "sha2-384", None, id="ecdsa-p384"),
        pytest.param(KeyType.ECDSA_P521, "sha2-512", None, id="ecdsa-p521"),
        pytest.param(KeyType.RSA_2048, "sha2-256", "pss", id="rsa-2048-pss"),
        pytest.param(KeyType.RSA_2048, "sha2-256", "pkcs1v15", id="rsa-2048-pkcs1v15"),
        pytest.param(KeyType.ED25519, None, None, id="ed25519"),
    ],
)
def test_adapters_agree_with_loaded_handles(
    key_type: KeyType, hash_algorithm: str | None, signature_algorithm: str | None
) -> None:
    algorithm = algorithm_for(key_type)
    material = algorithm.generate()
    loaded = algorithm.load(material)
    private = serialization.load_der_private_key(material, password=None)
    public_der = private.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    adapter = verify_only_handle(public_der)
    sign_options = SignOptions.for_key(
        key_type, hash_algorithm=hash_algorithm, signature_algorithm=signature_algorithm
    )
    message = b"the adapter and the loaded handle must agree"
    signature = loaded.sign(message, sign_options)
    assert adapter.public_key() == loaded.public_key()
    assert adapter.verify(message, signature, sign_options) is True
    assert loaded.verify(message, signature, sign_options) is True
    assert adapter.verify(message + b"!", signature, sign_options) is False
    assert loaded.verify(message + b"!", signature, sign_options) is False


# --- the vectors ---------------------------------------------------------------------------------


@pytest.mark.parametrize("vector", _select("valid"))
def test_valid_vectors_verify(vector: SignatureVector) -> None:
    assert _outcome(vector.handle, vector.msg, vector.sig, vector.options) is True


@pytest.mark.parametrize("vector", _select("invalid"))
def test_invalid_vectors_are_rejected_cleanly(vector: SignatureVector) -> None:
    outcome = _outcome(vector.handle, vector.msg, vector.sig, vector.options)
    assert outcome is False or isinstance(outcome, CofferError)


@pytest.mark.parametrize("vector", _select("acceptable"))
def test_acceptable_vectors_give_an_answer_and_no_foreign_exception(
    vector: SignatureVector,
) -> None:
    outcome = _outcome(vector.handle, vector.msg, vector.sig, vector.options)
    assert isinstance(outcome, bool | CofferError)


# Derived from the valid vectors (not Wycheproof vectors themselves): the same signatures through
# the prehashed path and, for ECDSA, through the JWS marshaling. One test per file, listing the ids
# that fail, keeps the number of test items (and the run time) down.


def _prehashed(vector: SignatureVector) -> tuple[bytes, SignOptions]:
    assert vector.hash_name is not None
    digest = hashlib.new(vector.hash_name.replace("-", "").lower(), vector.msg).digest()
    options = SignOptions.for_key(
        vector.key_type,
        hash_algorithm=WYCHEPROOF_HASHES[vector.hash_name],
        prehashed=True,
        signature_algorithm=vector.options.scheme.value if vector.key_type in RSA_BITS else None,
    )
    return digest, options


@pytest.mark.parametrize(
    "filename", [f for f, source in SOURCES.items() if source.key_type is not KeyType.ED25519]
)
def test_valid_vectors_verify_over_the_prehashed_message(filename: str) -> None:
    valid = [v for v in LOADED[filename].vectors if v.result == "valid"]
    failing = []
    for vector in valid:
        digest, options = _prehashed(vector)
        if _outcome(vector.handle, digest, vector.sig, options) is not True:
            failing.append(vector.id)
    assert valid
    assert failing == []


def _jws(vector: SignatureVector) -> tuple[bytes, SignOptions]:
    assert vector.hash_name is not None
    width = {"secp256r1": 32, "secp384r1": 48, "secp521r1": 66}[ECDSA_CURVES[vector.key_type]]
    r, s = utils.decode_dss_signature(vector.sig)
    options = SignOptions.for_key(
        vector.key_type,
        hash_algorithm=WYCHEPROOF_HASHES[vector.hash_name],
        marshaling_algorithm="jws",
    )
    return r.to_bytes(width, "big") + s.to_bytes(width, "big"), options


@pytest.mark.parametrize(
    "filename", [f for f, source in SOURCES.items() if source.key_type in ECDSA_CURVES]
)
def test_valid_ecdsa_vectors_verify_as_jws(filename: str) -> None:
    valid = [v for v in LOADED[filename].vectors if v.result == "valid"]
    failing, not_refused = [], []
    for vector in valid:
        jws, options = _jws(vector)
        if _outcome(vector.handle, vector.msg, jws, options) is not True:
            failing.append(vector.id)
        # One byte short is not a JWS signature of this curve at all.
        if not isinstance(_outcome(vector.handle, vector.msg, jws[:-1], options), CofferError):
            not_refused.append(vector.id)
    assert valid
    assert failing == []
    assert not_refused == []
