"""RSA key types: RSA-OAEP encryption and RSA-PSS / PKCS #1 v1.5 signatures (RFC 8017).

Encryption is OAEP with SHA-256 and MGF1-SHA-256, as in Vault Transit. PSS uses MGF1 with the
signing hash and a salt as long as the hash (RFC 8017 §9.1, the length RFC 4055 recommends), which
is what ``openssl dgst -sigopt rsa_pss_saltlen:digest`` verifies.
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa, utils

from coffer.crypto import pkcs8
from coffer.crypto.handles import KeyHandle
from coffer.crypto.hashes import hash_of
from coffer.domain.keytypes import KeyType
from coffer.domain.signing import SignatureScheme, SignOptions
from coffer.errors import InvalidCiphertext, InvalidKeyMaterial

PUBLIC_EXPONENT = 65537

_OAEP = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)


def _padding(options: SignOptions) -> padding.AsymmetricPadding:
    if options.scheme is SignatureScheme.PKCS1V15:
        return padding.PKCS1v15()
    return padding.PSS(
        mgf=padding.MGF1(hash_of(options.hash)), salt_length=padding.PSS.DIGEST_LENGTH
    )


def _algorithm(options: SignOptions) -> hashes.HashAlgorithm | utils.Prehashed:
    digest = hash_of(options.hash)
    return utils.Prehashed(digest) if options.prehashed else digest


class RsaKey(KeyHandle):
    __slots__ = ("_pem", "_private", "_public")

    slow_private_operations = True

    def __init__(self, private: rsa.RSAPrivateKey) -> None:
        self._private = private
        self._public = private.public_key()
        self._pem = pkcs8.public_pem(private)

    def encrypt(self, plaintext: bytes) -> bytes:
        return self._public.encrypt(plaintext, _OAEP)

    def decrypt(self, body: bytes) -> bytes:
        try:
            return self._private.decrypt(body, _OAEP)
        except ValueError:
            raise InvalidCiphertext() from None

    def sign(self, data: bytes, options: SignOptions) -> bytes:
        return self._private.sign(data, _padding(options), _algorithm(options))

    def verify(self, data: bytes, signature: bytes, options: SignOptions) -> bool:
        try:
            self._public.verify(signature, data, _padding(options), _algorithm(options))
        except InvalidSignature:
            return False
        return True

    def public_key(self) -> str:
        return self._pem


@dataclass(frozen=True, slots=True)
class RsaAlgorithm:
    key_type: KeyType
    bits: int

    def generate(self) -> bytes:
        return pkcs8.to_der(rsa.generate_private_key(PUBLIC_EXPONENT, self.bits))

    def _checked(self, private: object) -> rsa.RSAPrivateKey:
        if not isinstance(private, rsa.RSAPrivateKey) or private.key_size != self.bits:
            raise InvalidKeyMaterial(
                f"{self.key_type.value} needs an RSA private key of {self.bits} bits"
            )
        return private

    def load(self, material: bytes) -> RsaKey:
        return RsaKey(self._checked(pkcs8.load_stored(material)))

    def import_material(self, raw: bytes) -> bytes:
        return pkcs8.to_der(self._checked(pkcs8.load_untrusted(raw, "RSA")))


RSA_2048 = RsaAlgorithm(KeyType.RSA_2048, 2048)
RSA_3072 = RsaAlgorithm(KeyType.RSA_3072, 3072)
RSA_4096 = RsaAlgorithm(KeyType.RSA_4096, 4096)
