"""The interface every key type's algorithm implements, and the registry of implemented types.

An algorithm object makes new key material (``generate``) and turns stored material into a
ready-to-use ``KeyHandle`` (``load``). Handles are what the service caches: loading may parse and
validate, using a handle costs microseconds.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from coffer.crypto.aead import AES_GCM_128, AES_GCM_256, CHACHA20_POLY1305
from coffer.domain.keytypes import KeyType
from coffer.errors import UnsupportedKeyType


class KeyHandle(Protocol):
    """One key version's material, parsed and ready. Its repr never shows the material."""

    def encrypt(self, plaintext: bytes) -> bytes: ...

    def decrypt(self, body: bytes) -> bytes: ...


class KeyAlgorithm(Protocol):
    @property
    def key_type(self) -> KeyType: ...

    def generate(self) -> bytes:
        """Fresh key material, in the form it is stored (wrapped) and exported."""
        ...

    def load(self, material: bytes) -> KeyHandle:
        """A handle for ``material``; raises ``InvalidKeyMaterial`` if it does not fit the type."""
        ...


_IMPLEMENTED: Mapping[KeyType, KeyAlgorithm] = {
    algorithm.key_type: algorithm for algorithm in (AES_GCM_128, AES_GCM_256, CHACHA20_POLY1305)
}


def algorithm_for(key_type: KeyType) -> KeyAlgorithm:
    """The algorithm of ``key_type``; ``UnsupportedKeyType`` if this server cannot create it."""
    try:
        return _IMPLEMENTED[key_type]
    except KeyError:
        raise UnsupportedKeyType(
            f"key type {key_type.value} is not supported by this server yet"
        ) from None
