"""Known-answer tests for the ``ed25519`` key type: RFC 8032 §7.1 (Ed25519 test vectors).

Each secret key is turned into PKCS #8 DER (the stored and exported form) and loaded through
``ED25519.load``; the handle must show the RFC's public key (base64 of its 32 raw bytes, spec §5.8)
and, Ed25519 being deterministic, sign to exactly the RFC's signature.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from coffer.crypto import pkcs8
from coffer.crypto.eddsa import ED25519, Ed25519Key
from coffer.domain.keytypes import KeyType
from coffer.domain.signing import SignOptions


@dataclass(frozen=True)
class Rfc8032Vector:
    secret_key: str
    public_key: str
    message: str
    signature: str


# RFC 8032 §7.1, "Test Vectors for Ed25519".
RFC8032 = {
    # TEST 1: the empty message
    "test1": Rfc8032Vector(
        secret_key="9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
        public_key="d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
        message="",
        signature=(
            "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e06522490155"
            "5fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
        ),
    ),
    # TEST 2: a 1-byte message
    "test2": Rfc8032Vector(
        secret_key="4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
        public_key="3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
        message="72",
        signature=(
            "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da"
            "085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00"
        ),
    ),
    # TEST 3: a 2-byte message
    "test3": Rfc8032Vector(
        secret_key="c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7",
        public_key="fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025",
        message="af82",
        signature=(
            "6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac"
            "18ff9b538d16f290ae67f760984dc6594a7c15e9716ed28dc027beceea1ec40a"
        ),
    ),
    # TEST SHA(abc): the message is SHA-512("abc"), 64 bytes
    "test-sha-abc": Rfc8032Vector(
        secret_key="833fe62409237b9d62ec77587520911e9a759cec1d19755b7da901b96dca3d42",
        public_key="ec172b93ad5e563bf4932c70e1245034c35467ef2efd4d64ebf819683467e2bf",
        message=(
            "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a"
            "2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f"
        ),
        signature=(
            "dc2a4459e7369633a52b1bf277839a00201009a3efbf3ecb69bea2186c26b589"
            "09351fc9ac90b3ecfdfbc7c66431e0303dca179c138ac17ad9bef1177331a704"
        ),
    ),
}

VECTORS = [pytest.param(vector, id=name) for name, vector in RFC8032.items()]
OPTIONS = SignOptions.for_key(KeyType.ED25519)


def _pkcs8(vector: Rfc8032Vector) -> bytes:
    private = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(vector.secret_key))
    return pkcs8.to_der(private)


def _handle(vector: Rfc8032Vector) -> Ed25519Key:
    return ED25519.load(_pkcs8(vector))


def _flipped(data: bytes, index: int) -> bytes:
    tampered = bytearray(data)
    tampered[index] ^= 0x01
    return bytes(tampered)


@pytest.mark.parametrize("vector", VECTORS)
def test_public_key_is_base64_of_the_rfc_public_key(vector: Rfc8032Vector) -> None:
    expected = base64.b64encode(bytes.fromhex(vector.public_key)).decode("ascii")
    assert _handle(vector).public_key() == expected


@pytest.mark.parametrize("vector", VECTORS)
def test_sign_gives_the_rfc_signature(vector: Rfc8032Vector) -> None:
    message = bytes.fromhex(vector.message)
    assert _handle(vector).sign(message, OPTIONS) == bytes.fromhex(vector.signature)


@pytest.mark.parametrize("vector", VECTORS)
def test_the_rfc_signature_verifies(vector: Rfc8032Vector) -> None:
    message = bytes.fromhex(vector.message)
    assert _handle(vector).verify(message, bytes.fromhex(vector.signature), OPTIONS) is True


@pytest.mark.parametrize("vector", VECTORS)
@pytest.mark.parametrize("index", [0, 31, 32, 63])
def test_a_signature_with_a_flipped_bit_does_not_verify(vector: Rfc8032Vector, index: int) -> None:
    # Bytes 0-31 are R, bytes 32-63 are S (RFC 8032 §5.1.6).
    message = bytes.fromhex(vector.message)
    signature = _flipped(bytes.fromhex(vector.signature), index)
    assert _handle(vector).verify(message, signature, OPTIONS) is False


@pytest.mark.parametrize("vector", VECTORS)
def test_a_message_with_a_flipped_bit_or_an_extra_byte_does_not_verify(
    vector: Rfc8032Vector,
) -> None:
    handle = _handle(vector)
    message = bytes.fromhex(vector.message)
    signature = bytes.fromhex(vector.signature)
    assert handle.verify(message + b"\x00", signature, OPTIONS) is False
    if message:
        assert handle.verify(_flipped(message, 0), signature, OPTIONS) is False


@pytest.mark.parametrize("vector", VECTORS)
def test_import_of_the_rfc_key_keeps_its_pkcs8_form(vector: Rfc8032Vector) -> None:
    material = _pkcs8(vector)
    assert ED25519.import_material(material) == material
