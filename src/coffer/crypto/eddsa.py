"""The ``ed25519`` key type: pure Ed25519 (RFC 8032 §5.1). The public key is shown as base64 of
its 32 raw bytes (spec §5.8)."""

from __future__ import annotations

import base64
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from coffer.crypto import pkcs8
from coffer.crypto.handles import KeyHandle
from coffer.domain.keytypes import KeyType
from coffer.domain.signing import SignOptions
from coffer.errors import InvalidKeyMaterial


class Ed25519Key(KeyHandle):
    __slots__ = ("_private", "_public", "_raw_public")

    def __init__(self, private: ed25519.Ed25519PrivateKey) -> None:
        self._private = private
        self._public = private.public_key()
        self._raw_public = self._public.public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )

    def sign(self, data: bytes, options: SignOptions) -> bytes:
        return self._private.sign(data)

    def verify(self, data: bytes, signature: bytes, options: SignOptions) -> bool:
        try:
            self._public.verify(signature, data)
        except InvalidSignature:
            return False
        return True

    def public_key(self) -> str:
        return base64.b64encode(self._raw_public).decode("ascii")


@dataclass(frozen=True, slots=True)
class Ed25519Algorithm:
    key_type: KeyType = KeyType.ED25519

    def generate(self) -> bytes:
        return pkcs8.to_der(ed25519.Ed25519PrivateKey.generate())

    @staticmethod
    def _checked(private: object) -> ed25519.Ed25519PrivateKey:
        if not isinstance(private, ed25519.Ed25519PrivateKey):
            raise InvalidKeyMaterial("ed25519 needs an Ed25519 private key")
        return private

    def load(self, material: bytes) -> Ed25519Key:
        return Ed25519Key(self._checked(pkcs8.load_stored(material)))

    def import_material(self, raw: bytes) -> bytes:
        return pkcs8.to_der(self._checked(pkcs8.load_untrusted(raw, "Ed25519")))


ED25519 = Ed25519Algorithm()
