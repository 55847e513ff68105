"""The one interface of a loaded key version, whatever its type.

A handle offers every operation; those its type lacks refuse with ``UnsupportedOperation``. The
service consults the capability table (``coffer.domain.keytypes``) before it calls a handle, so
these refusals are a second fence, not the place where the API's 400 is decided.
"""

from __future__ import annotations

from coffer.domain.signing import HashAlgorithm, SignOptions
from coffer.errors import UnsupportedOperation


class KeyHandle:
    """One key version's material, parsed and ready. Its repr never shows the material."""

    __slots__ = ()

    #: Whether private-key operations (sign, decrypt) take long enough (RSA: 1–10 ms) to belong
    #: off the event loop. OpenSSL releases the GIL while it works, so they also use other cores.
    slow_private_operations = False

    def __repr__(self) -> str:
        return f"<{type(self).__name__} redacted>"

    def _refuse(self, operation: str) -> UnsupportedOperation:
        return UnsupportedOperation(f"{type(self).__name__} does not support {operation}")

    def encrypt(self, plaintext: bytes) -> bytes:
        raise self._refuse("encrypt")

    def decrypt(self, body: bytes) -> bytes:
        """The plaintext; every failure is the one ``InvalidCiphertext`` (no oracle)."""
        raise self._refuse("decrypt")

    def sign(self, data: bytes, options: SignOptions) -> bytes:
        raise self._refuse("sign")

    def verify(self, data: bytes, signature: bytes, options: SignOptions) -> bool:
        """Whether ``signature`` is valid. A signature that merely fails to check is ``False``;
        ``InvalidSignatureFormat`` only where the encoding fixes a length it does not have (JWS)."""
        raise self._refuse("verify")

    def public_key(self) -> str:
        """The public key as the API shows it: PEM SPKI, or base64 of raw Ed25519 bytes."""
        raise self._refuse("public-key")

    def mac(self, data: bytes, digest: HashAlgorithm) -> bytes:
        raise self._refuse("hmac")

    def verify_mac(self, data: bytes, tag: bytes, digest: HashAlgorithm) -> bool:
        """Whether ``tag`` is the MAC of ``data``, compared in constant time."""
        raise self._refuse("verify-hmac")
