"""The interface every key type's algorithm implements, and the registry of all 13 types.

An algorithm object makes new key material (``generate``), checks a caller's material on BYOK import
(``import_material``) and turns stored material into a ready-to-use ``KeyHandle`` (``load``).
Handles are what the service caches: loading may parse, using a handle costs microseconds.

Stored material is what export returns (spec §5.10): raw bytes for symmetric and HMAC keys, PKCS #8
DER for asymmetric ones.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from coffer.crypto.aead import AES_GCM_128, AES_GCM_256, CHACHA20_POLY1305
from coffer.crypto.ecdsa import ECDSA_P256, ECDSA_P384, ECDSA_P521
from coffer.crypto.eddsa import ED25519
from coffer.crypto.handles import KeyHandle
from coffer.crypto.mac import HMAC, HMAC_SHA256, HMAC_SHA512
from coffer.crypto.rsa import RSA_2048, RSA_3072, RSA_4096
from coffer.domain.keytypes import KeyType

__all__ = ["KeyAlgorithm", "KeyHandle", "algorithm_for"]


class KeyAlgorithm(Protocol):
    @property
    def key_type(self) -> KeyType: ...

    def generate(self) -> bytes:
        """Fresh key material, in the form it is stored (wrapped) and exported."""
        ...

    def load(self, material: bytes) -> KeyHandle:
        """A handle for stored ``material``; ``InvalidKeyMaterial`` if it does not fit the type."""
        ...

    def import_material(self, raw: bytes) -> bytes:
        """A caller's key bytes checked in full and put in stored form (``InvalidKeyMaterial``)."""
        ...


_ALGORITHMS: Mapping[KeyType, KeyAlgorithm] = {
    algorithm.key_type: algorithm
    for algorithm in (
        AES_GCM_128,
        AES_GCM_256,
        CHACHA20_POLY1305,
        RSA_2048,
        RSA_3072,
        RSA_4096,
        ECDSA_P256,
        ECDSA_P384,
        ECDSA_P521,
        ED25519,
        HMAC,
        HMAC_SHA256,
        HMAC_SHA512,
    )
}


def algorithm_for(key_type: KeyType) -> KeyAlgorithm:
    return _ALGORITHMS[key_type]
