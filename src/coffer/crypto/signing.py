"""The audit log's checkpoint signer: Ed25519 (RFC 8032).

Its private key is a purpose key (``coffer.service.purposes``): 32 random bytes stored wrapped by
the root key, so that rotating the root rewraps it and every signature stays valid. Whoever can
only write the database cannot forge a checkpoint; whoever has the public key (``coffer audit
public-key``) can check one without being able to make one.
"""

from __future__ import annotations

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

#: Installations made before purpose keys derived the signing key from the root key with this
#: label; their upgrade keeps that key (as a stored purpose key), so old checkpoints still verify.
LEGACY_PURPOSE = b"coffer/audit-checkpoint-signing/v1"


def legacy_signing_seed(root_key: bytes) -> bytes:
    """The checkpoint key earlier versions derived from a file root key (HKDF-SHA-256, RFC 5869)."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=LEGACY_PURPOSE).derive(
        root_key
    )


class CheckpointSigner:
    __slots__ = ("_private", "_public")

    def __init__(self, seed: bytes) -> None:
        self._private = Ed25519PrivateKey.from_private_bytes(seed)
        self._public = self._private.public_key()

    def __repr__(self) -> str:
        return "<CheckpointSigner redacted>"

    async def ready(self) -> None:
        """Nothing to load: the key is at hand (the audit log's ``Signer`` protocol)."""

    def sign(self, message: bytes) -> bytes:
        return self._private.sign(message)

    def verify(self, signature: bytes, message: bytes) -> bool:
        return _verifies(self._public, signature, message)

    def public_pem(self) -> str:
        """The public key as PEM SubjectPublicKeyInfo (RFC 8410), for verifiers outside."""
        return self._public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ).decode("ascii")


class CheckpointVerifier:
    """The public half only (``coffer audit verify --public-key``): verifies, cannot sign."""

    __slots__ = ("_public",)

    def __init__(self, pem: bytes) -> None:
        public = serialization.load_pem_public_key(pem)
        if not isinstance(public, Ed25519PublicKey):
            raise ValueError("not an Ed25519 public key")
        self._public = public

    async def ready(self) -> None:
        """Nothing to load."""

    def sign(self, message: bytes) -> bytes:
        raise TypeError("a public key cannot sign")

    def verify(self, signature: bytes, message: bytes) -> bool:
        return _verifies(self._public, signature, message)


def _verifies(public: Ed25519PublicKey, signature: bytes, message: bytes) -> bool:
    try:
        public.verify(signature, message)
    except InvalidSignature:
        return False
    return True
