"""Root-of-trust providers: the key at the top of the hierarchy, which wraps organisation KEKs.

The embedded provider keeps 32 random bytes in a file of mode 0600 made by ``coffer init``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from coffer.crypto.wrapping import WRAPPING_KEY_BYTES, Wrapper
from coffer.errors import Unavailable


class RootKeyProvider(Protocol):
    def wrap(self, plaintext: bytes, aad: bytes) -> bytes: ...

    def unwrap(self, blob: bytes, aad: bytes) -> bytes: ...

    def check(self) -> None:
        """Raise ``Unavailable`` if the root key cannot be used now."""
        ...

    def derive(self, purpose: bytes) -> bytes:
        """32 bytes derived from the root key for one ``purpose`` (HKDF-SHA-256, RFC 5869)."""
        ...


class RootKeyError(Unavailable):
    """The root key file is missing, unreadable or malformed."""


class FileRootKey:
    """The root key as a 32-byte file."""

    __slots__ = ("_key", "_path", "_wrapper")

    def __init__(self, path: Path, key: bytes) -> None:
        self._path = path
        self._key = key
        self._wrapper = Wrapper(key)

    def __repr__(self) -> str:
        return f"FileRootKey(path={str(self._path)!r})"

    @classmethod
    def create(cls, path: Path) -> FileRootKey:
        """Write a new random root key to ``path`` (which must not exist), mode 0600, synced."""
        key = os.urandom(WRAPPING_KEY_BYTES)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, key)
            os.fsync(fd)
        finally:
            os.close(fd)
        return cls(path, key)

    @classmethod
    def load(cls, path: Path) -> FileRootKey:
        try:
            key = path.read_bytes()
        except FileNotFoundError:
            raise RootKeyError(f"root key file {path} does not exist") from None
        except OSError as exc:
            raise RootKeyError(f"root key file {path} cannot be read: {exc.strerror}") from None
        if len(key) != WRAPPING_KEY_BYTES:
            raise RootKeyError(f"root key file {path} must hold exactly 32 bytes")
        return cls(path, key)

    def wrap(self, plaintext: bytes, aad: bytes) -> bytes:
        return self._wrapper.wrap(plaintext, aad)

    def unwrap(self, blob: bytes, aad: bytes) -> bytes:
        return self._wrapper.unwrap(blob, aad)

    def derive(self, purpose: bytes) -> bytes:
        return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose).derive(self._key)

    def check(self) -> None:
        # The key is held in memory; readiness also requires the file to still be there, so an
        # operator who removed or locked it is told before the next restart fails.
        if not os.access(self._path, os.R_OK):
            raise RootKeyError(f"root key file {self._path} is not readable")
