"""Options of sign/verify, HMAC and BYOK import, and which key types accept which (spec §3.1, §5.6,
§5.7, §5.11).

The request names a hash, a signature scheme and a marshaling; this module turns those strings into
values and refuses the combinations a key type cannot honour, before any cryptography runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import TypeVar

from coffer.domain.keytypes import KeyType
from coffer.errors import InvalidRequest, UnsupportedOperation

#: Longest ``input`` accepted by sign, verify, hmac and verify-hmac (the encrypt limit, spec §4).
MAX_INPUT_BYTES = 65_535


class HashAlgorithm(StrEnum):
    SHA2_224 = "sha2-224"
    SHA2_256 = "sha2-256"
    SHA2_384 = "sha2-384"
    SHA2_512 = "sha2-512"
    SHA3_224 = "sha3-224"
    SHA3_256 = "sha3-256"
    SHA3_384 = "sha3-384"
    SHA3_512 = "sha3-512"

    @property
    def digest_bytes(self) -> int:
        return int(self.value[-3:]) // 8


_HASH_ALIASES = {
    "sha256": HashAlgorithm.SHA2_256,
    "sha384": HashAlgorithm.SHA2_384,
    "sha512": HashAlgorithm.SHA2_512,
}
_HASH_NAMES = ", ".join([*HashAlgorithm, *_HASH_ALIASES])
DEFAULT_HASH = HashAlgorithm.SHA2_256


def parse_hash(value: str | None, field: str) -> HashAlgorithm | None:
    """``value`` as a hash (``None`` when absent); an unknown name is a 400 naming ``field``."""
    if value is None:
        return None
    try:
        return _HASH_ALIASES.get(value) or HashAlgorithm(value)
    except ValueError:
        raise InvalidRequest(f"{field} must be one of {_HASH_NAMES}") from None


class SignatureScheme(StrEnum):
    """RSA padding: PSS (default, salt length = hash length) or PKCS #1 v1.5 (*Extension*)."""

    PSS = "pss"
    PKCS1V15 = "pkcs1v15"


class Marshaling(StrEnum):
    """ECDSA signature encoding: ASN.1 DER (default) or the raw r‖s of JWS (RFC 7518 §3.4)."""

    ASN1 = "asn1"
    JWS = "jws"


_E = TypeVar("_E", bound=StrEnum)


def _parse_enum(kind: type[_E], value: str | None, field: str) -> _E | None:
    if value is None:
        return None
    try:
        return kind(value)
    except ValueError:
        raise InvalidRequest(f"{field} must be one of {', '.join(kind)}") from None


_RSA = frozenset({KeyType.RSA_2048, KeyType.RSA_3072, KeyType.RSA_4096})
_ECDSA = frozenset({KeyType.ECDSA_P256, KeyType.ECDSA_P384, KeyType.ECDSA_P521})


@dataclass(frozen=True, slots=True)
class SignOptions:
    """How to sign or verify with one key type; built only through ``for_key``."""

    hash: HashAlgorithm
    prehashed: bool
    scheme: SignatureScheme
    marshaling: Marshaling

    @classmethod
    def for_key(
        cls,
        key_type: KeyType,
        *,
        hash_algorithm: str | None = None,
        prehashed: bool = False,
        signature_algorithm: str | None = None,
        marshaling_algorithm: str | None = None,
    ) -> SignOptions:
        digest = parse_hash(hash_algorithm, "hashAlgorithm") or DEFAULT_HASH
        scheme = _parse_enum(SignatureScheme, signature_algorithm, "signatureAlgorithm")
        marshaling = _parse_enum(Marshaling, marshaling_algorithm, "marshalingAlgorithm")
        if scheme is not None and key_type not in _RSA:
            raise UnsupportedOperation("signatureAlgorithm applies to RSA keys only")
        if marshaling is not None and key_type not in _ECDSA:
            raise UnsupportedOperation("marshalingAlgorithm applies to ECDSA keys only")
        if key_type is KeyType.ED25519:
            # Pure Ed25519 (RFC 8032 §5.1) hashes inside the algorithm; hashAlgorithm is ignored
            # as in Vault Transit, but a digest cannot be signed in place of the message.
            if prehashed:
                raise UnsupportedOperation("ed25519 keys sign the message itself, not a prehash")
            digest = DEFAULT_HASH
        return cls(
            hash=digest,
            prehashed=prehashed,
            scheme=scheme or SignatureScheme.PSS,
            marshaling=marshaling or Marshaling.ASN1,
        )

    def check_input(self, data: bytes) -> None:
        check_input_size(data)
        if self.prehashed and len(data) != self.hash.digest_bytes:
            raise InvalidRequest(
                f"a prehashed {self.hash.value} input must be {self.hash.digest_bytes} bytes, "
                f"got {len(data)}"
            )


#: The hash an HMAC key type is fixed to (spec §3.1); ``hmac`` keys take the caller's choice.
_FIXED_MAC_HASH = {
    KeyType.HMAC_SHA256: HashAlgorithm.SHA2_256,
    KeyType.HMAC_SHA512: HashAlgorithm.SHA2_512,
}


def mac_hash(key_type: KeyType, requested: str | None, field: str = "algorithm") -> HashAlgorithm:
    """The hash an HMAC with ``key_type`` uses when the caller asked for ``requested``."""
    parsed = parse_hash(requested, field)
    fixed = _FIXED_MAC_HASH.get(key_type)
    if fixed is None:
        return parsed or DEFAULT_HASH
    if parsed is not None and parsed is not fixed:
        raise InvalidRequest(f"{key_type.value} keys always use {fixed.value}")
    return fixed


def check_input_size(data: bytes) -> None:
    if len(data) > MAX_INPUT_BYTES:
        raise InvalidRequest(f"input must be at most {MAX_INPUT_BYTES} bytes")


def check_no_context(context: bytes | None) -> None:
    """``context`` selects a derived key in Vault Transit; Coffer keys are never derived."""
    if context:
        raise UnsupportedOperation("context is not supported: keys are not derived")


#: The BYOK wrapping scheme (spec §5.11): RSA-OAEP of an ephemeral AES key, then AES-KWP.
BYOK_ALGORITHM = "RSA_OAEP_AES_KWP"


class ImportHash(StrEnum):
    """The RSA-OAEP hash of BYOK key material (spec §5.11 ``hashFunction``)."""

    SHA1 = "sha1"
    SHA224 = "sha224"
    SHA256 = "sha256"
    SHA384 = "sha384"
    SHA512 = "sha512"

    @classmethod
    def parse(cls, value: str | None) -> ImportHash:
        return _parse_enum(cls, value, "hashFunction") or cls.SHA256
