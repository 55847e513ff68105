"""Bring-your-own-key: the region's wrapping key and the unwrapping of imported material
(spec §5.11).

The caller sends RSA-OAEP(ephemeral AES-256 key) ‖ AES-KWP(ephemeral key, target key), where KWP is
AES key wrap with padding (RFC 5649). It is the ``CKM_RSA_AES_KEY_WRAP`` mechanism of PKCS #11 and
the format of Vault Transit BYOK, so ``openssl pkeyutl`` and ``openssl enc -id-aes256-wrap-pad``
produce it.
"""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap_with_padding

from coffer.crypto import pkcs8
from coffer.crypto.hashes import import_hash_of
from coffer.domain.signing import ImportHash
from coffer.errors import InvalidKeyMaterial

WRAPPING_KEY_BITS = 4096
EPHEMERAL_KEY_BYTES = 32

# One message for every way unwrapping can fail, so that the answer is no padding oracle.
#: The one error of every import that does not unwrap, whatever the cause (another
#: organisation's key, another region's, a key no longer accepted, a damaged blob).
UNWRAP_FAILED = (
    "importKeyMaterial could not be unwrapped with this organisation's wrapping key for this "
    "region (fetch the wrapping key again and wrap with it)"
)


class WrappingKey:
    """A region's RSA-4096 import key, loaded. Its repr never shows the material."""

    __slots__ = ("_private", "public_pem")

    def __init__(self, private: rsa.RSAPrivateKey) -> None:
        self._private = private
        self.public_pem = pkcs8.public_pem(private)

    def __repr__(self) -> str:
        return "<WrappingKey redacted>"

    @staticmethod
    def generate() -> bytes:
        """A new wrapping key's private part, PKCS #8 DER (to be stored wrapped)."""
        return pkcs8.to_der(rsa.generate_private_key(65537, WRAPPING_KEY_BITS))

    @classmethod
    def load(cls, material: bytes) -> WrappingKey:
        private = pkcs8.load_stored(material)
        assert isinstance(private, rsa.RSAPrivateKey)
        return cls(private)

    def unwrap(self, blob: bytes, hash_function: ImportHash) -> bytes:
        """The target key bytes inside ``blob``."""
        size = self._private.key_size // 8
        if len(blob) <= size:
            raise InvalidKeyMaterial(UNWRAP_FAILED)
        digest = import_hash_of(hash_function)
        oaep = padding.OAEP(mgf=padding.MGF1(digest), algorithm=digest, label=None)
        try:
            ephemeral = self._private.decrypt(blob[:size], oaep)
            if len(ephemeral) != EPHEMERAL_KEY_BYTES:
                raise InvalidKeyMaterial(UNWRAP_FAILED)
            return aes_key_unwrap_with_padding(ephemeral, blob[size:])
        except (ValueError, InvalidUnwrap):
            raise InvalidKeyMaterial(UNWRAP_FAILED) from None
