"""The 13 key types of the KMS API and what each can do (spec §3).

This table is the one place that decides whether an operation is allowed for a type; the
service asks it before any cryptography runs.
"""

from __future__ import annotations

from enum import StrEnum

from coffer.errors import UnsupportedKeyType, UnsupportedOperation, shown


class KeyType(StrEnum):
    AES128_GCM96 = "aes128-gcm96"
    AES256_GCM96 = "aes256-gcm96"
    CHACHA20_POLY1305 = "chacha20-poly1305"
    RSA_2048 = "rsa-2048"
    RSA_3072 = "rsa-3072"
    RSA_4096 = "rsa-4096"
    ECDSA_P256 = "ecdsa-p256"
    ECDSA_P384 = "ecdsa-p384"
    ECDSA_P521 = "ecdsa-p521"
    ED25519 = "ed25519"
    HMAC = "hmac"
    HMAC_SHA256 = "hmac-sha256"
    HMAC_SHA512 = "hmac-sha512"

    @classmethod
    def parse(cls, value: str) -> KeyType:
        try:
            return cls(value)
        except ValueError:
            raise UnsupportedKeyType(
                f"unknown key type {shown(value)}: use one of {', '.join(cls)}"
            ) from None


class Operation(StrEnum):
    ENCRYPT = "encrypt"
    DECRYPT = "decrypt"
    SIGN = "sign"
    VERIFY = "verify"
    HMAC = "hmac"
    VERIFY_HMAC = "verify-hmac"
    PUBLIC_KEY = "public-key"
    IMPORT = "import"


_SYMMETRIC = frozenset({Operation.ENCRYPT, Operation.DECRYPT, Operation.IMPORT})
_RSA = frozenset(
    {
        Operation.ENCRYPT,
        Operation.DECRYPT,
        Operation.SIGN,
        Operation.VERIFY,
        Operation.PUBLIC_KEY,
        Operation.IMPORT,
    }
)
_SIGNING = frozenset({Operation.SIGN, Operation.VERIFY, Operation.PUBLIC_KEY, Operation.IMPORT})
_MAC = frozenset({Operation.HMAC, Operation.VERIFY_HMAC})

CAPABILITIES: dict[KeyType, frozenset[Operation]] = {
    KeyType.AES128_GCM96: _SYMMETRIC,
    KeyType.AES256_GCM96: _SYMMETRIC,
    KeyType.CHACHA20_POLY1305: _SYMMETRIC,
    KeyType.RSA_2048: _RSA,
    KeyType.RSA_3072: _RSA,
    KeyType.RSA_4096: _RSA,
    KeyType.ECDSA_P256: _SIGNING,
    KeyType.ECDSA_P384: _SIGNING,
    KeyType.ECDSA_P521: _SIGNING,
    KeyType.ED25519: _SIGNING,
    KeyType.HMAC: _MAC,
    KeyType.HMAC_SHA256: _MAC,
    KeyType.HMAC_SHA512: _MAC,
}


def supports(key_type: KeyType, operation: Operation) -> bool:
    return operation in CAPABILITIES[key_type]


def require(key_type: KeyType, operation: Operation) -> None:
    """Raise ``UnsupportedOperation`` unless ``key_type`` supports ``operation``."""
    if operation not in CAPABILITIES[key_type]:
        raise UnsupportedOperation(f"key type {key_type.value} does not support {operation.value}")


#: RSA-OAEP with SHA-256 carries at most k - 2·32 - 2 bytes (RFC 8017 §7.1.1); others take the
#: general limit of spec §4.
_RSA_PLAINTEXT = {KeyType.RSA_2048: 190, KeyType.RSA_3072: 318, KeyType.RSA_4096: 446}
MAX_PLAINTEXT_BYTES = 65_535


def max_plaintext(key_type: KeyType) -> int:
    return _RSA_PLAINTEXT.get(key_type, MAX_PLAINTEXT_BYTES)
