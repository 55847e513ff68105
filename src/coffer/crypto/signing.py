"""The audit log's checkpoint signer: Ed25519 (RFC 8032) with a key derived from the root key.

Deriving the key (HKDF-SHA-256 with a fixed purpose label) means nothing more to store or back up:
whoever holds the root key can sign and verify checkpoints; whoever can only write the database
cannot forge them.
"""

from __future__ import annotations

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from coffer.crypto.root import RootKeyProvider

PURPOSE = b"coffer/audit-checkpoint-signing/v1"


class CheckpointSigner:
    __slots__ = ("_private", "_public")

    def __init__(self, root: RootKeyProvider) -> None:
        self._private = Ed25519PrivateKey.from_private_bytes(root.derive(PURPOSE))
        self._public = self._private.public_key()

    def __repr__(self) -> str:
        return "<CheckpointSigner redacted>"

    def sign(self, message: bytes) -> bytes:
        return self._private.sign(message)

    def verify(self, signature: bytes, message: bytes) -> bool:
        try:
            self._public.verify(signature, message)
        except InvalidSignature:
            return False
        return True
