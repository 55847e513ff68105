"""Private keys stored as PKCS #8 DER (RFC 5208), the form they are exported and imported in."""

from __future__ import annotations

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from coffer.errors import InvalidKeyMaterial


def to_der(private: PrivateKeyTypes) -> bytes:
    return private.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def load_stored(material: bytes) -> PrivateKeyTypes:
    """A key this server generated or already validated on import.

    Stored material is authenticated by its wrapping (AES-GCM with the row in the associated data),
    so the expensive RSA consistency checks ran once, on import, and are not repeated here.
    """
    return serialization.load_der_private_key(
        material, password=None, unsafe_skip_rsa_key_validation=True
    )


def load_untrusted(raw: bytes, expected: str) -> PrivateKeyTypes:
    """A caller's DER private key, fully validated; ``InvalidKeyMaterial`` naming ``expected``.

    PKCS #8 is the documented form; the older PKCS #1 (RSA) and SEC 1 (EC) DER forms that
    ``openssl genpkey -outform DER`` writes are accepted too, and stored as PKCS #8 like any key.
    """
    try:
        return serialization.load_der_private_key(raw, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise InvalidKeyMaterial(
            f"key material must be an unencrypted DER {expected} private key (PKCS #8)"
        ) from None


def public_pem(private: PrivateKeyTypes) -> str:
    return (
        private.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode("ascii")
    )
