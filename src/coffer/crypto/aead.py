"""Symmetric AEAD key types: AES-GCM (NIST SP 800-38D) and ChaCha20-Poly1305 (RFC 8439).

Body format (spec §4): nonce (12 bytes) ‖ ciphertext ‖ tag (16 bytes). Nonces are random, 96
bits, as in Vault Transit; SP 800-38D §8.3 bounds a key to 2^32 random-nonce messages, which is
why keys rotate.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

from coffer.crypto.handles import KeyHandle
from coffer.domain.keytypes import KeyType
from coffer.errors import InvalidCiphertext, InvalidKeyMaterial

NONCE_BYTES = 12
TAG_BYTES = 16


class AeadKey(KeyHandle):
    """A loaded AEAD key. ``nonce`` is injectable for known-answer tests only."""

    __slots__ = ("_cipher",)

    def __init__(self, cipher: AESGCM | ChaCha20Poly1305) -> None:
        self._cipher = cipher

    def encrypt(self, plaintext: bytes, *, nonce: bytes | None = None) -> bytes:
        if nonce is None:
            nonce = os.urandom(NONCE_BYTES)
        return nonce + self._cipher.encrypt(nonce, plaintext, None)

    def decrypt(self, body: bytes) -> bytes:
        if len(body) < NONCE_BYTES + TAG_BYTES:
            raise InvalidCiphertext()
        try:
            return self._cipher.decrypt(body[:NONCE_BYTES], body[NONCE_BYTES:], None)
        except InvalidTag:
            raise InvalidCiphertext() from None


@dataclass(frozen=True, slots=True)
class AeadAlgorithm:
    key_type: KeyType
    key_bytes: int
    cipher: type[AESGCM] | type[ChaCha20Poly1305]

    def generate(self) -> bytes:
        return os.urandom(self.key_bytes)

    def load(self, material: bytes) -> AeadKey:
        if len(material) != self.key_bytes:
            raise InvalidKeyMaterial(
                f"{self.key_type.value} needs a {self.key_bytes}-byte key, "
                f"got {len(material)} bytes"
            )
        return AeadKey(self.cipher(material))

    def import_material(self, raw: bytes) -> bytes:
        self.load(raw)
        return raw


AES_GCM_128 = AeadAlgorithm(KeyType.AES128_GCM96, 16, AESGCM)
AES_GCM_256 = AeadAlgorithm(KeyType.AES256_GCM96, 32, AESGCM)
CHACHA20_POLY1305 = AeadAlgorithm(KeyType.CHACHA20_POLY1305, 32, ChaCha20Poly1305)
