"""The root key's cryptography: what it wraps, how a wrapped blob names its generation, the check
value that tells one root key from another, and the key files of the ``file`` seal.

A root key generation is a ``RootCipher``: AES-256-GCM under a key held in this process
(``SoftwareCipher``: the file and Shamir seals) or inside a PKCS #11 token (``coffer.crypto.hsm``).
Either way a wrapped blob is ``02 ‖ generation (4 bytes) ‖ nonce (12) ‖ ciphertext ‖ tag (16)``,
with the header inside the associated data, so a blob says which generation opens it and cannot
be made to claim another. Blobs written before generations existed have the format of
``coffer.crypto.wrapping`` (``01 ‖ nonce ‖ …``) and belong to generation 1.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from coffer.crypto.wrapping import FORMAT_V1, WRAPPING_KEY_BYTES
from coffer.errors import KeyIntegrityError, Unavailable

FORMAT_V2 = b"\x02"
NONCE_BYTES = 12
TAG_BYTES = 16
_HEADER_BYTES = 1 + 4
#: What every check value encrypts (a constant: the check value proves the key, not a secret).
CHECK_PLAINTEXT = b"coffer/root-key-check/v1"


class RootKeyError(Unavailable):
    """A root key file is missing, unreadable or malformed."""


class RootCipher(Protocol):
    """One generation of the root key: AES-256-GCM with a caller-chosen 96-bit nonce."""

    def encrypt(self, nonce: bytes, plaintext: bytes, aad: bytes) -> bytes:
        """``ciphertext ‖ tag``."""
        ...

    def decrypt(self, nonce: bytes, data: bytes, aad: bytes) -> bytes:
        """The plaintext; ``KeyIntegrityError`` if the tag does not verify."""
        ...


class SoftwareCipher:
    """A root key generation held in this process's memory."""

    __slots__ = ("_aead",)

    def __init__(self, key: bytes) -> None:
        if len(key) != WRAPPING_KEY_BYTES:
            raise ValueError("a root key is 32 bytes")
        self._aead = AESGCM(key)

    def __repr__(self) -> str:
        return "<SoftwareCipher redacted>"

    def encrypt(self, nonce: bytes, plaintext: bytes, aad: bytes) -> bytes:
        return self._aead.encrypt(nonce, plaintext, aad)

    def decrypt(self, nonce: bytes, data: bytes, aad: bytes) -> bytes:
        try:
            return self._aead.decrypt(nonce, data, aad)
        except InvalidTag:
            raise KeyIntegrityError() from None


def generation_of(blob: bytes) -> int:
    """The root key generation that wrapped ``blob`` (``KeyIntegrityError`` if it is none of
    Coffer's formats)."""
    if blob[:1] == FORMAT_V1 and len(blob) >= 1 + NONCE_BYTES + TAG_BYTES:
        return 1
    if blob[:1] == FORMAT_V2 and len(blob) >= _HEADER_BYTES + NONCE_BYTES + TAG_BYTES:
        return int.from_bytes(blob[1:_HEADER_BYTES], "big")
    raise KeyIntegrityError()


def seal_blob(cipher: RootCipher, generation: int, plaintext: bytes, aad: bytes) -> bytes:
    """``plaintext`` wrapped by ``cipher``, the root key of ``generation``, bound to ``aad``."""
    header = FORMAT_V2 + generation.to_bytes(4, "big")
    nonce = os.urandom(NONCE_BYTES)
    return header + nonce + cipher.encrypt(nonce, plaintext, header + aad)


def open_blob(cipher: RootCipher, blob: bytes, aad: bytes) -> bytes:
    """The plaintext of ``blob``, which ``cipher`` (its generation's key) wrapped with ``aad``."""
    if blob[:1] == FORMAT_V1:  # written before generations: format byte ‖ nonce ‖ ciphertext
        generation_of(blob)
        return cipher.decrypt(blob[1 : 1 + NONCE_BYTES], blob[1 + NONCE_BYTES :], FORMAT_V1 + aad)
    generation_of(blob)
    header = blob[:_HEADER_BYTES]
    nonce = blob[_HEADER_BYTES : _HEADER_BYTES + NONCE_BYTES]
    return cipher.decrypt(nonce, blob[_HEADER_BYTES + NONCE_BYTES :], header + aad)


def check_aad(installation: str, generation: int) -> bytes:
    return f"coffer/root-key-check/v1\x00{installation}\x00{generation}".encode()


def make_check_value(cipher: RootCipher, installation: str, generation: int) -> bytes:
    """What ``init`` and every rotation store, so that this key is recognised later."""
    return seal_blob(cipher, generation, CHECK_PLAINTEXT, check_aad(installation, generation))


def opens_check_value(
    cipher: RootCipher, check_value: bytes, installation: str, generation: int
) -> bool:
    """Whether ``cipher`` is the key of ``generation`` of ``installation``."""
    try:
        opened = open_blob(cipher, check_value, check_aad(installation, generation))
    except KeyIntegrityError:
        return False
    return opened == CHECK_PLAINTEXT


# --- the key files of the ``file`` seal -------------------------------------------------------


def read_key_file(path: Path) -> bytes:
    try:
        key = path.read_bytes()
    except FileNotFoundError:
        raise RootKeyError(f"root key file {path} does not exist") from None
    except OSError as exc:
        raise RootKeyError(f"root key file {path} cannot be read: {exc.strerror}") from None
    if len(key) != WRAPPING_KEY_BYTES:
        raise RootKeyError(f"root key file {path} must hold exactly 32 bytes")
    return key


def write_key_file(path: Path, key: bytes, *, exclusive: bool = False) -> None:
    """Put ``key`` at ``path`` whole (mode 0600, synced, then renamed into place), so a crash
    leaves either the old file or the new one. ``exclusive``: refuse if ``path`` exists."""
    if exclusive and path.exists():
        raise FileExistsError(path)
    # A name of this write's own: two processes writing the same file never rename each
    # other's half-written part into place.
    part = path.with_name(f"{path.name}.{os.getpid()}.{os.urandom(4).hex()}.part")
    fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, key)
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.replace(part, path)
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    sync_directory(path.parent)


def sync_directory(directory: Path) -> None:
    """Make renames and removals in ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
