"""Seals: where each root key generation lives at rest, and how a server gets it back.

* ``FileSeal``: the key in ``<data-dir>/root.key`` (development). During a rotation the previous
  generation's key stays in ``root.key.old``; a key made for a generation that is not committed yet
  waits in ``root.key.new``. Other nodes, which hold the previous key in their own data directory,
  get the new one from a copy wrapped by the previous generation (``transit``), kept in the
  database only until the rotation completes.
* ``ShamirSeal``: the key sealed (AES-256-GCM) by an unseal key that exists only as shares
  (``coffer.crypto.shamir``); the unseal key is held in memory while unsealed.
* ``Pkcs11Seal``: the key inside a PKCS #11 token (``coffer.crypto.hsm``).

A seal opens a generation (gives its ``RootCipher``) and makes new ones; whether the cipher it
opened is the right key is checked by the caller against the generation's check value.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from coffer.config import ROOT_KEY_FILE
from coffer.crypto.hsm import HsmUnavailable, Pkcs11Token, key_label
from coffer.crypto.root import (
    RootCipher,
    SoftwareCipher,
    open_blob,
    opens_check_value,
    read_key_file,
    seal_blob,
    sync_directory,
    write_key_file,
)
from coffer.crypto.wrapping import WRAPPING_KEY_BYTES
from coffer.domain.seal import RootGeneration, SealType
from coffer.errors import KeyIntegrityError, Sealed

log = logging.getLogger(__name__)

NEW_KEY_FILE = ROOT_KEY_FILE + ".new"
OLD_KEY_FILE = ROOT_KEY_FILE + ".old"
KEY_FILES = (ROOT_KEY_FILE, NEW_KEY_FILE, OLD_KEY_FILE)


def transit_aad(installation: str, generation: int) -> bytes:
    """Associated data of a generation's key wrapped by another generation of the root."""
    return f"coffer/root-key-transit/v1\x00{installation}\x00{generation}".encode()


def unseal_aad(installation: str, generation: int) -> bytes:
    """Associated data of a generation's key sealed by the Shamir unseal key."""
    return f"coffer/root-key-unseal/v1\x00{installation}\x00{generation}".encode()


def share_digest(installation: str, share: bytes) -> str:
    """What the database keeps of each share (to refuse a wrong one at once): a hash, which
    reveals nothing of a 256-bit share."""
    return hashlib.sha256(
        b"coffer/unseal-share/v1\x00" + installation.encode() + b"\x00" + share
    ).hexdigest()


@dataclass(frozen=True, slots=True)
class NewKey:
    """A generation's key as a seal made it: the cipher, and what the database keeps so that
    other nodes can open it (``sealed_key``)."""

    cipher: RootCipher
    sealed_key: bytes | None = field(repr=False)


class Seal(Protocol):
    type: SealType

    def open(
        self, installation: str, generation: RootGeneration, ciphers: dict[int, RootCipher]
    ) -> RootCipher | None:
        """The key of ``generation`` (``ciphers``: the generations opened so far), or ``None``
        if this seal cannot open it now. ``Sealed``/``HsmUnavailable`` if the seal is shut."""
        ...

    def make(
        self, installation: str, generation: int, previous: tuple[int, RootCipher] | None
    ) -> NewKey:
        """A new key for ``generation`` (``previous``: the active generation and its key)."""
        ...

    def keep(self, installation: str, live: set[int], active: int) -> None:
        """The generations ``live`` are live, ``active`` the newest: keep their keys where this
        seal keeps keys, and nothing of the others."""
        ...

    def forget(self, installation: str, generation: int) -> None:
        """Destroy what this seal holds of a retired ``generation``."""
        ...


class FileSeal:
    type = SealType.FILE

    def __init__(self, data_dir: Path) -> None:
        self._dir = data_dir
        #: Keys read from the files or from transit copies, by generation.
        self._known: dict[int, bytes] = {}

    def __repr__(self) -> str:
        return f"FileSeal(data_dir={str(self._dir)!r})"

    def _files(self) -> dict[str, bytes]:
        found = {}
        for name in KEY_FILES:
            path = self._dir / name
            if path.exists():
                found[name] = read_key_file(path)
        return found

    def key_files(self) -> dict[str, bytes]:
        """The key files present (``RootKeyError`` if one cannot be read)."""
        return self._files()

    def check(self) -> None:
        """``RootKeyError`` unless ``root.key`` can be read (it is needed at the next start)."""
        read_key_file(self._dir / ROOT_KEY_FILE)

    def open(
        self, installation: str, generation: RootGeneration, ciphers: dict[int, RootCipher]
    ) -> RootCipher | None:
        number = generation.generation
        candidates = [self._known[number]] if number in self._known else []
        files = self._files()
        if not candidates and ROOT_KEY_FILE not in files:
            read_key_file(self._dir / ROOT_KEY_FILE)  # RootKeyError: says the file is missing
        candidates += list(files.values())
        for key in candidates:
            cipher = SoftwareCipher(key)
            if opens_check_value(cipher, generation.check_value, installation, number):
                self._known[number] = key
                return cipher
        if generation.sealed_key is None:
            return None
        # A key another node made: wrapped by a generation this node already holds.
        for opened in ciphers.values():
            try:
                key = open_blob(opened, generation.sealed_key, transit_aad(installation, number))
            except KeyIntegrityError:
                continue
            cipher = SoftwareCipher(key)
            if opens_check_value(cipher, generation.check_value, installation, number):
                self._known[number] = key
                return cipher
        return None

    def make(
        self, installation: str, generation: int, previous: tuple[int, RootCipher] | None
    ) -> NewKey:
        key = os.urandom(WRAPPING_KEY_BYTES)
        # Synced before the generation is stored: a crash after the commit finds it here.
        write_key_file(self._dir / NEW_KEY_FILE, key)
        self._known[generation] = key
        transit = None
        if previous is not None:
            number, cipher = previous
            transit = seal_blob(cipher, number, key, transit_aad(installation, generation))
        return NewKey(SoftwareCipher(key), transit)

    def keep(self, installation: str, live: set[int], active: int) -> None:
        wanted = {ROOT_KEY_FILE: self._known.get(active)}
        older = [g for g in live if g != active and g in self._known]
        if older:
            wanted[OLD_KEY_FILE] = self._known[max(older)]
        if wanted[ROOT_KEY_FILE] is None:
            return  # nothing of this seal is active (another seal took over)
        files = self._files()
        # The previous key is put in place before root.key is replaced: a crash between the two
        # leaves both keys on disk.
        for name in (OLD_KEY_FILE, ROOT_KEY_FILE):
            key = wanted.get(name)
            if key is not None and files.get(name) != key:
                write_key_file(self._dir / name, key)
        for name in (NEW_KEY_FILE, OLD_KEY_FILE):
            if name not in wanted and (self._dir / name).exists():
                (self._dir / name).unlink()
                sync_directory(self._dir)
        for number in [g for g in self._known if g not in live]:
            del self._known[number]

    def forget(self, installation: str, generation: int) -> None:
        key = self._known.pop(generation, None)
        # root.key too: after a move to another seal, the file seal's last key is retired.
        for name in KEY_FILES:
            path = self._dir / name
            if key is not None and path.exists() and read_key_file(path) == key:
                path.unlink()
                sync_directory(self._dir)


class ShamirSeal:
    type = SealType.SHAMIR

    def __init__(self) -> None:
        self._unseal_key: AESGCM | None = None

    def __repr__(self) -> str:
        return f"ShamirSeal(unsealed={self._unseal_key is not None})"

    @property
    def unsealed(self) -> bool:
        return self._unseal_key is not None

    def use(self, unseal_key: bytes | None) -> None:
        """Hold ``unseal_key`` (combined from shares), or drop it (``None``: sealed)."""
        self._unseal_key = AESGCM(unseal_key) if unseal_key is not None else None

    def open(
        self, installation: str, generation: RootGeneration, ciphers: dict[int, RootCipher]
    ) -> RootCipher | None:
        if self._unseal_key is None:
            raise Sealed("waiting for unseal key shares (coffer operator unseal)")
        blob = generation.sealed_key
        if blob is None or len(blob) < 12 + 16:
            return None
        try:
            key = self._unseal_key.decrypt(
                blob[:12], blob[12:], unseal_aad(installation, generation.generation)
            )
        except InvalidTag:
            return None
        return SoftwareCipher(key)

    def make(
        self, installation: str, generation: int, previous: tuple[int, RootCipher] | None
    ) -> NewKey:
        if self._unseal_key is None:
            raise Sealed("waiting for unseal key shares (coffer operator unseal)")
        key = os.urandom(WRAPPING_KEY_BYTES)
        nonce = os.urandom(12)
        sealed = nonce + self._unseal_key.encrypt(nonce, key, unseal_aad(installation, generation))
        return NewKey(SoftwareCipher(key), sealed)

    def keep(self, installation: str, live: set[int], active: int) -> None:
        return None  # the database holds the sealed keys

    def forget(self, installation: str, generation: int) -> None:
        return None  # the database drops the sealed key of a retired generation


def new_unseal_key() -> bytes:
    return os.urandom(WRAPPING_KEY_BYTES)


def share_matches(installation: str, share: bytes, digests: tuple[str, ...]) -> bool:
    digest = share_digest(installation, share)
    return any(hmac.compare_digest(digest, known) for known in digests)


class Pkcs11Seal:
    type = SealType.PKCS11

    def __init__(self, token: Pkcs11Token) -> None:
        self.token = token

    def __repr__(self) -> str:
        return f"Pkcs11Seal({self.token!r})"

    def _ensure_open(self) -> None:
        if not self.token.is_open:
            self.token.open()

    def open(
        self, installation: str, generation: RootGeneration, ciphers: dict[int, RootCipher]
    ) -> RootCipher | None:
        self._ensure_open()
        label = key_label(installation, generation.generation)
        if not self.token.has_key(label):
            return None
        return self.token.cipher(label)

    def make(
        self, installation: str, generation: int, previous: tuple[int, RootCipher] | None
    ) -> NewKey:
        self._ensure_open()
        label = key_label(installation, generation)
        if self.token.has_key(label):
            # Left by an attempt that never committed: a key no generation names.
            self.token.destroy_key(label)
        self.token.generate_key(label)
        return NewKey(self.token.cipher(label), None)

    def keep(self, installation: str, live: set[int], active: int) -> None:
        return None

    def forget(self, installation: str, generation: int) -> None:
        try:
            self._ensure_open()
            self.token.destroy_key(key_label(installation, generation))
        except HsmUnavailable as exc:
            log.warning("retired root key generation %d stays in the token: %s", generation,
                        exc.message)  # fmt: skip
