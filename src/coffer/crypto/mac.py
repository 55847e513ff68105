"""HMAC key types (RFC 2104 with the hashes of FIPS 180-4 and FIPS 202).

``hmac`` and ``hmac-sha256`` keys are 32 random bytes and ``hmac-sha512`` keys 64, the length of
the hash output, which RFC 2104 §3 names as the minimum worth having. Verification compares in
constant time (``cryptography``'s ``HMAC.verify``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hmac

from coffer.crypto.handles import KeyHandle
from coffer.crypto.hashes import hash_of
from coffer.domain.keytypes import KeyType
from coffer.domain.signing import HashAlgorithm
from coffer.errors import InvalidKeyMaterial, UnsupportedOperation


class HmacKey(KeyHandle):
    """An HMAC key of any length (the known-answer tests use the RFC 4231 lengths)."""

    __slots__ = ("_key",)

    def __init__(self, key: bytes) -> None:
        self._key = key

    def _hmac(self, data: bytes, digest: HashAlgorithm) -> hmac.HMAC:
        h = hmac.HMAC(self._key, hash_of(digest))
        h.update(data)
        return h

    def mac(self, data: bytes, digest: HashAlgorithm) -> bytes:
        return self._hmac(data, digest).finalize()

    def verify_mac(self, data: bytes, tag: bytes, digest: HashAlgorithm) -> bool:
        try:
            self._hmac(data, digest).verify(tag)
        except InvalidSignature:
            return False
        return True


@dataclass(frozen=True, slots=True)
class HmacAlgorithm:
    key_type: KeyType
    key_bytes: int

    def generate(self) -> bytes:
        return os.urandom(self.key_bytes)

    def load(self, material: bytes) -> HmacKey:
        if len(material) != self.key_bytes:
            raise InvalidKeyMaterial(f"{self.key_type.value} needs a {self.key_bytes}-byte key")
        return HmacKey(material)

    def import_material(self, raw: bytes) -> bytes:
        raise UnsupportedOperation("HMAC keys cannot be imported")


HMAC = HmacAlgorithm(KeyType.HMAC, 32)
HMAC_SHA256 = HmacAlgorithm(KeyType.HMAC_SHA256, 32)
HMAC_SHA512 = HmacAlgorithm(KeyType.HMAC_SHA512, 64)
