"""ECDSA key types on the NIST curves P-256, P-384 and P-521 (FIPS 186-5 §6).

Signatures are ASN.1 DER (RFC 3279 §2.2.3) by default, or the fixed-width r‖s of JWS
(RFC 7518 §3.4) with ``marshalingAlgorithm: "jws"``.
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ec, utils

from coffer.crypto import pkcs8
from coffer.crypto.handles import KeyHandle
from coffer.crypto.hashes import hash_of
from coffer.domain.keytypes import KeyType
from coffer.domain.signing import Marshaling, SignOptions
from coffer.errors import InvalidKeyMaterial, InvalidSignatureFormat


def _signature_algorithm(options: SignOptions) -> ec.ECDSA:
    digest = hash_of(options.hash)
    return ec.ECDSA(utils.Prehashed(digest) if options.prehashed else digest)


class EcdsaKey(KeyHandle):
    __slots__ = ("_pem", "_private", "_public", "_width")

    def __init__(self, private: ec.EllipticCurvePrivateKey) -> None:
        self._private = private
        self._public = private.public_key()
        self._pem = pkcs8.public_pem(private)
        self._width = (private.curve.key_size + 7) // 8

    def sign(self, data: bytes, options: SignOptions) -> bytes:
        der = self._private.sign(data, _signature_algorithm(options))
        if options.marshaling is Marshaling.ASN1:
            return der
        r, s = utils.decode_dss_signature(der)
        return r.to_bytes(self._width, "big") + s.to_bytes(self._width, "big")

    def verify(self, data: bytes, signature: bytes, options: SignOptions) -> bool:
        if options.marshaling is Marshaling.JWS:
            if len(signature) != 2 * self._width:
                raise InvalidSignatureFormat(
                    f"a JWS signature of this key is {2 * self._width} bytes"
                )
            r = int.from_bytes(signature[: self._width], "big")
            s = int.from_bytes(signature[self._width :], "big")
            signature = utils.encode_dss_signature(r, s)
        try:
            self._public.verify(signature, data, _signature_algorithm(options))
        except InvalidSignature:
            return False
        return True

    def public_key(self) -> str:
        return self._pem


@dataclass(frozen=True, slots=True)
class EcdsaAlgorithm:
    key_type: KeyType
    curve: type[ec.EllipticCurve]

    def generate(self) -> bytes:
        return pkcs8.to_der(ec.generate_private_key(self.curve()))

    def _checked(self, private: object) -> ec.EllipticCurvePrivateKey:
        if not isinstance(private, ec.EllipticCurvePrivateKey) or not isinstance(
            private.curve, self.curve
        ):
            raise InvalidKeyMaterial(
                f"{self.key_type.value} needs an EC private key on {self.curve.name}"
            )
        return private

    def load(self, material: bytes) -> EcdsaKey:
        return EcdsaKey(self._checked(pkcs8.load_stored(material)))

    def import_material(self, raw: bytes) -> bytes:
        return pkcs8.to_der(self._checked(pkcs8.load_untrusted(raw, "EC")))


ECDSA_P256 = EcdsaAlgorithm(KeyType.ECDSA_P256, ec.SECP256R1)
ECDSA_P384 = EcdsaAlgorithm(KeyType.ECDSA_P384, ec.SECP384R1)
ECDSA_P521 = EcdsaAlgorithm(KeyType.ECDSA_P521, ec.SECP521R1)
