"""Seals: where each root key generation lives at rest, and how a server gets it back.

* ``FileSeal``: the key in ``<data-dir>/root.key`` (development). During a rotation the previous
  generation's key stays in ``root.key.old``; a key made for a generation that is not committed yet
  waits in ``root.key.new``. Other nodes, which hold the previous key in their own data directory,
  get the new one from a copy wrapped by the previous generation (``transit``), kept in the
  database only until the rotation completes.
* ``ShamirSeal``: the key sealed (AES-256-GCM) by an unseal key that exists only as shares
  (``coffer.crypto.shamir``); the unseal key is held in memory while unsealed.
* ``Pkcs11Seal``: the key inside a PKCS #11 token (``coffer.crypto.hsm``), under a label of its
  own per attempt (recorded with the generation), so that two attempts never share a key object.

A seal opens a generation (gives its ``RootCipher``) and makes new ones; whether the cipher it
opened is the right key is checked by the caller against the generation's check value. A key it
made is pending until the caller stored its generation (``adopt``) or failed to (``abandon``).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from coffer.config import ROOT_KEY_FILE
from coffer.crypto.hsm import HsmUnavailable, Pkcs11Token, key_label
from coffer.crypto.root import (
    RootCipher,
    RootKeyError,
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
WAITING_FOR_SHARES = "waiting for unseal key shares (coffer operator unseal)"


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


def share_matches(installation: str, share: bytes, digests: tuple[str, ...]) -> bool:
    digest = share_digest(installation, share)
    return any(hmac.compare_digest(digest, known) for known in digests)


def new_unseal_key() -> bytes:
    return os.urandom(WRAPPING_KEY_BYTES)


@dataclass(frozen=True, slots=True)
class NewKey:
    """A generation's key as a seal made it, pending until its generation is stored: the
    cipher, what the database keeps so that other nodes can open it (``sealed_key``), and where
    the seal keeps it (``ref``, stored with the generation)."""

    cipher: RootCipher
    sealed_key: bytes | None = field(repr=False)
    ref: str | None = None
    #: The file seal's key bytes (never printed), to put in place once adopted.
    raw: bytes | None = field(default=None, repr=False)


class Seal(Protocol):
    type: SealType

    def open(
        self, installation: str, generation: RootGeneration, ciphers: dict[int, RootCipher]
    ) -> RootCipher | None:
        """The key of ``generation`` (``ciphers``: the generations opened so far), or ``None``
        if this seal does not hold it. ``Sealed``/``HsmUnavailable`` if the seal is shut."""
        ...

    def make(
        self, installation: str, generation: int, previous: tuple[int, RootCipher] | None
    ) -> NewKey:
        """A new key for ``generation`` (``previous``: the active generation and its key),
        pending: it takes effect with ``adopt``, and ``abandon`` removes it."""
        ...

    def adopt(self, installation: str, generation: int, made: NewKey) -> None:
        """``made`` is the key of ``generation``, now stored."""
        ...

    def abandon(self, installation: str, generation: int, made: NewKey) -> None:
        """``made`` was never stored (the transaction failed): remove what it left."""
        ...

    def keep(self, installation: str, live: set[int], active: int) -> None:
        """The generations ``live`` are live, ``active`` the newest: keep their keys where this
        seal keeps keys."""
        ...

    def forget(self, installation: str, generation: RootGeneration, *, held: bool) -> None:
        """Destroy what this seal keeps of a retired ``generation``, which no stored blob needs
        any more (the caller checked). ``held``: this process held it open when it was retired;
        otherwise only leftovers that are plainly Coffer's own are removed."""
        ...


class FileSeal:
    type = SealType.FILE

    def __init__(self, data_dir: Path) -> None:
        self._dir = data_dir
        #: Keys of stored generations, read from the files or from transit copies.
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
        if not candidates and not files:
            read_key_file(self._dir / ROOT_KEY_FILE)  # RootKeyError: says root.key is missing
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
        transit = None
        if previous is not None:
            number, cipher = previous
            transit = seal_blob(cipher, number, key, transit_aad(installation, generation))
        return NewKey(SoftwareCipher(key), transit, raw=key)

    def adopt(self, installation: str, generation: int, made: NewKey) -> None:
        assert made.raw is not None
        self._known[generation] = made.raw

    def abandon(self, installation: str, generation: int, made: NewKey) -> None:
        path = self._dir / NEW_KEY_FILE
        try:
            mine = path.exists() and read_key_file(path) == made.raw
        except RootKeyError:
            mine = False
        if mine:  # not another process's pending key
            path.unlink()
            sync_directory(self._dir)

    def keep(self, installation: str, live: set[int], active: int) -> None:
        """Make ``root.key`` the active generation's key and ``root.key.old`` the newest older
        live one's, the previous key first (a crash between the two writes leaves both on
        disk). Nothing is removed here but a ``root.key.new`` that is now in place; retired
        keys go in ``forget``. If ``root.key`` holds a key this process does not know, another
        process on this directory is a rotation ahead: its files stay as they are until this
        one catches up (it reads the generations every few seconds). A ``root.key`` that is gone
        (and no ``root.key.new`` to put in its place) is not written back from memory: whoever
        removed it hears it from readiness, and a restart would refuse to start."""
        key = self._known.get(active)
        if key is None:
            return  # nothing of this seal is active (another seal took over)
        files = self._files()
        if ROOT_KEY_FILE in files and files[ROOT_KEY_FILE] not in self._known.values():
            return
        if ROOT_KEY_FILE not in files and files.get(NEW_KEY_FILE) != key:
            return
        older = [g for g in live if g != active and g in self._known]
        if older and files.get(OLD_KEY_FILE) != self._known[max(older)]:
            write_key_file(self._dir / OLD_KEY_FILE, self._known[max(older)])
        if files.get(ROOT_KEY_FILE) != key:
            write_key_file(self._dir / ROOT_KEY_FILE, key)
        if files.get(NEW_KEY_FILE) == key:
            (self._dir / NEW_KEY_FILE).unlink()
            sync_directory(self._dir)

    def forget(self, installation: str, generation: RootGeneration, *, held: bool) -> None:
        self._known.pop(generation.generation, None)
        # Files holding the retired key, told apart by the generation's check value:
        # root.key.old (and .new) are this seal's own; root.key holds it after a move to another
        # seal, and is removed then, by the process that made the move. A root.key with a
        # retired key found at start is an operator's (an old backup's key, say): it stays, and
        # the start is refused with what to do.
        names = KEY_FILES if held else (OLD_KEY_FILE, NEW_KEY_FILE)
        for name, key in self._files().items():
            if name in names and opens_check_value(
                SoftwareCipher(key), generation.check_value, installation, generation.generation
            ):
                (self._dir / name).unlink()
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
            raise Sealed(WAITING_FOR_SHARES)
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
            raise Sealed(WAITING_FOR_SHARES)
        key = os.urandom(WRAPPING_KEY_BYTES)
        nonce = os.urandom(12)
        sealed = nonce + self._unseal_key.encrypt(nonce, key, unseal_aad(installation, generation))
        return NewKey(SoftwareCipher(key), sealed)

    def adopt(self, installation: str, generation: int, made: NewKey) -> None:
        return None  # the database holds the sealed key

    def abandon(self, installation: str, generation: int, made: NewKey) -> None:
        return None  # nothing was kept outside the transaction that failed

    def keep(self, installation: str, live: set[int], active: int) -> None:
        return None

    def forget(self, installation: str, generation: RootGeneration, *, held: bool) -> None:
        return None  # the database drops the sealed key of a retired generation


class Pkcs11Seal:
    type = SealType.PKCS11

    def __init__(self, token: Pkcs11Token) -> None:
        self.token = token

    def __repr__(self) -> str:
        return f"Pkcs11Seal({self.token!r})"

    def _ensure_open(self) -> None:
        if not self.token.is_open:
            self.token.open()

    @staticmethod
    def _label(installation: str, generation: RootGeneration) -> str:
        return generation.seal_ref or key_label(installation, generation.generation)

    def open(
        self, installation: str, generation: RootGeneration, ciphers: dict[int, RootCipher]
    ) -> RootCipher | None:
        self._ensure_open()
        label = self._label(installation, generation)
        if not self.token.has_key(label):
            return None
        return self.token.cipher(label)

    def make(
        self, installation: str, generation: int, previous: tuple[int, RootCipher] | None
    ) -> NewKey:
        self._ensure_open()
        # A label of this attempt's own: an attempt that loses a race never touches the key
        # of the one that won.
        label = f"{key_label(installation, generation)}-{secrets.token_hex(4)}"
        self.token.generate_key(label)
        return NewKey(self.token.cipher(label), None, ref=label)

    def adopt(self, installation: str, generation: int, made: NewKey) -> None:
        return None

    def abandon(self, installation: str, generation: int, made: NewKey) -> None:
        if made.ref is not None:
            try:
                self.token.destroy_key(made.ref)
            except HsmUnavailable as exc:
                log.warning("an unused root key stays in the token (%s): %s", made.ref,
                            exc.message)  # fmt: skip

    def keep(self, installation: str, live: set[int], active: int) -> None:
        return None

    def forget(self, installation: str, generation: RootGeneration, *, held: bool) -> None:
        if not held:
            return  # the node that completed the rotation destroys it, after checking
        try:
            self._ensure_open()
            self.token.destroy_key(self._label(installation, generation))
        except HsmUnavailable as exc:
            log.warning("retired root key generation %d stays in the token: %s",
                        generation.generation, exc.message)  # fmt: skip
