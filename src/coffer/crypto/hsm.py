"""The root key inside a PKCS #11 token (an HSM), through python-pkcs11.

The key is an AES-256 secret key object made inside the token (``CKA_EXTRACTABLE`` false,
``CKA_SENSITIVE`` true, ``CKA_TOKEN`` true): its value never leaves the token, and Coffer only asks
the token to encrypt and decrypt with it (``CKM_AES_GCM``: organisation KEKs, purpose keys and check
values are wrapped there). Objects are found by label: ``coffer-root-<installation>-<generation>``.

A ``Pkcs11Token`` is one logged-in session. It is not safe for concurrent use: the root of trust
runs every call on one thread of its own. When the token goes away (a network HSM that cannot be
reached, a removed token) calls fail with ``HsmUnavailable``; ``open`` again re-initialises the
library, which is how PKCS #11 modules notice a token that came back.
"""

from __future__ import annotations

import contextlib
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pkcs11
from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass
from pkcs11.exceptions import NoSuchKey, PinIncorrect, PKCS11Error, UserAlreadyLoggedIn
from pkcs11.mechanisms import GCMParams

from coffer.domain.seal import StaleRootGeneration
from coffer.errors import KeyIntegrityError, Unavailable

#: Loaded modules by path: a module is initialised once per process (C_Initialize), however
#: many tokens or apps use it.
_LIBRARIES: dict[str, Any] = {}
#: One thread per module runs every call to it: python-pkcs11 initialises a module without
#: locking callbacks, which tells it that calls will not overlap (PKCS #11 §5.4).
_THREADS: dict[str, ThreadPoolExecutor] = {}
_THREADS_LOCK = threading.Lock()


def calls_of(library: str) -> ThreadPoolExecutor:
    """The thread that runs every call to the module at ``library`` in this process."""
    with _THREADS_LOCK:
        executor = _THREADS.get(library)
        if executor is None:
            executor = _THREADS[library] = ThreadPoolExecutor(
                max_workers=1, thread_name_prefix="coffer-hsm"
            )
        return executor


class HsmUnavailable(Unavailable):
    """The token cannot be used now: its module fails to load, it is not present, the PIN is
    wrong, or a call to it failed."""


def key_label(installation: str, generation: int) -> str:
    return f"coffer-root-{installation}-{generation}"


def _library(path: str, *, reinitialise: bool) -> Any:
    library = _LIBRARIES.get(path)
    try:
        if library is None:
            library = _LIBRARIES[path] = pkcs11.lib(path)
        elif reinitialise:
            library.reinitialize()
    except PKCS11Error as exc:
        raise HsmUnavailable(f"the PKCS #11 module {path} cannot be loaded ({_why(exc)})") from None
    return library


def _why(exc: PKCS11Error) -> str:
    return str(exc) or type(exc).__name__


class Pkcs11Token:
    """A logged-in session on the token labelled ``token_label`` of the module at ``library``."""

    def __init__(self, library: str, token_label: str, pin: str) -> None:
        self.library = library
        self.token_label = token_label
        self._pin = pin
        self._session: Any = None
        self._keys: dict[str, Any] = {}
        self._opened_before = False

    def __repr__(self) -> str:
        return f"Pkcs11Token(library={self.library!r}, token={self.token_label!r})"

    @property
    def is_open(self) -> bool:
        return self._session is not None

    def open(self) -> None:
        """Log in (again). ``HsmUnavailable`` with the reason if the token cannot be used."""
        self.close()
        library = _library(self.library, reinitialise=self._opened_before)
        self._opened_before = True
        try:
            token = library.get_token(token_label=self.token_label)
        except PKCS11Error:
            # A token that appeared since the module was initialised is only seen after
            # initialising it again.
            library = _library(self.library, reinitialise=True)
            try:
                token = library.get_token(token_label=self.token_label)
            except PKCS11Error as exc:
                raise HsmUnavailable(
                    f"PKCS #11 token {self.token_label!r} is not present ({_why(exc)})"
                ) from None
        try:
            self._session = token.open(user_pin=self._pin, rw=True)
        except UserAlreadyLoggedIn:
            # Login is per process (PKCS #11 §5.6): another session of this process logged in.
            self._session = token.open(rw=True)
        except PinIncorrect:
            raise HsmUnavailable(
                f"the PIN of PKCS #11 token {self.token_label!r} is wrong (COFFER_PKCS11_PIN)"
            ) from None
        except PKCS11Error as exc:
            raise HsmUnavailable(
                f"PKCS #11 token {self.token_label!r} cannot be opened ({_why(exc)})"
            ) from None

    def close(self) -> None:
        session, self._session = self._session, None
        self._keys.clear()
        if session is not None:
            # A token that went away took the session with it.
            with contextlib.suppress(PKCS11Error):
                session.close()

    def _require(self) -> Any:
        if self._session is None:
            raise HsmUnavailable(f"PKCS #11 token {self.token_label!r} is not open")
        return self._session

    def _key(self, label: str) -> Any:
        key = self._keys.get(label)
        if key is None:
            try:
                key = self._require().get_key(
                    object_class=ObjectClass.SECRET_KEY, key_type=KeyType.AES, label=label
                )
            except NoSuchKey:
                raise
            except PKCS11Error as exc:
                raise HsmUnavailable(f"PKCS #11 token {self.token_label!r}: {_why(exc)}") from None
            self._keys[label] = key
        return key

    def has_key(self, label: str) -> bool:
        try:
            self._key(label)
        except NoSuchKey:
            return False
        return True

    def generate_key(self, label: str) -> None:
        """A new AES-256 key that never leaves the token."""
        try:
            self._require().generate_key(
                KeyType.AES,
                256,
                label=label,
                store=True,
                template={
                    Attribute.TOKEN: True,
                    Attribute.PRIVATE: True,
                    Attribute.SENSITIVE: True,
                    Attribute.EXTRACTABLE: False,
                    Attribute.ENCRYPT: True,
                    Attribute.DECRYPT: True,
                },
            )
        except PKCS11Error as exc:
            raise HsmUnavailable(
                f"PKCS #11 token {self.token_label!r} cannot make a key ({_why(exc)})"
            ) from None

    def destroy_key(self, label: str) -> None:
        try:
            key = self._key(label)
        except NoSuchKey:
            return
        try:
            key.destroy()
        except PKCS11Error as exc:
            raise HsmUnavailable(f"PKCS #11 token {self.token_label!r}: {_why(exc)}") from None
        self._keys.pop(label, None)

    def cipher(self, label: str) -> HsmCipher:
        """The ``RootCipher`` of the key ``label`` (``NoSuchKey`` if the token has none)."""
        self._key(label)
        return HsmCipher(self, label)

    def encrypt(self, label: str, nonce: bytes, plaintext: bytes, aad: bytes) -> bytes:
        try:
            data = self._key(label).encrypt(
                plaintext, mechanism=Mechanism.AES_GCM, mechanism_param=GCMParams(nonce, aad)
            )
        except NoSuchKey:
            raise self._gone(label) from None
        except PKCS11Error as exc:
            raise HsmUnavailable(f"PKCS #11 token {self.token_label!r}: {_why(exc)}") from None
        return bytes(data)

    def _gone(self, label: str) -> StaleRootGeneration:
        """The key object is not in the token any more: a retired generation's, destroyed by
        the node that completed a rotation. The caller reads the generations again."""
        self._keys.pop(label, None)
        return StaleRootGeneration(f"root key {label} is no longer in the token")

    def decrypt(self, label: str, nonce: bytes, data: bytes, aad: bytes) -> bytes:
        """The plaintext; ``KeyIntegrityError`` if the tag does not verify, ``HsmUnavailable`` if
        the token failed. A token does not say which of the two happened (SoftHSM answers both
        with CKR_GENERAL_ERROR), so after a failure the token is asked to round-trip a value of
        its own: if it can, the data was at fault."""
        try:
            plain = self._key(label).decrypt(
                data, mechanism=Mechanism.AES_GCM, mechanism_param=GCMParams(nonce, aad)
            )
        except NoSuchKey:
            raise self._gone(label) from None
        except PKCS11Error as exc:
            failure = exc
        else:
            return bytes(plain)
        probe = os.urandom(16)
        try:
            fresh = os.urandom(12)
            sealed = self.encrypt(label, fresh, probe, b"")
            opened = self._key(label).decrypt(
                sealed, mechanism=Mechanism.AES_GCM, mechanism_param=GCMParams(fresh, b"")
            )
        except (PKCS11Error, HsmUnavailable, StaleRootGeneration):
            raise HsmUnavailable(f"PKCS #11 token {self.token_label!r}: {_why(failure)}") from None
        if bytes(opened) != probe:
            raise HsmUnavailable(f"PKCS #11 token {self.token_label!r} answers wrongly")
        raise KeyIntegrityError()


class HsmCipher:
    """A root key generation held by the token."""

    __slots__ = ("_label", "_token")

    def __init__(self, token: Pkcs11Token, label: str) -> None:
        self._token = token
        self._label = label

    def __repr__(self) -> str:
        return f"HsmCipher(label={self._label!r})"

    def encrypt(self, nonce: bytes, plaintext: bytes, aad: bytes) -> bytes:
        return self._token.encrypt(self._label, nonce, plaintext, aad)

    def decrypt(self, nonce: bytes, data: bytes, aad: bytes) -> bytes:
        return self._token.decrypt(self._label, nonce, data, aad)
