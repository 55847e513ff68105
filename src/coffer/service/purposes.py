"""Purpose keys: random keys for one purpose each, stored wrapped by the root key.

Today: the audit checkpoint signing key (Ed25519 seed). They are random rather than derived from
the root key so that rotating the root only rewraps them: every signature (and, later, every
keyed digest and MAC) made before a rotation stays valid after it. They are loaded when first
needed after the root opens, and forgotten when it seals.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable
from datetime import datetime
from functools import partial

from coffer.crypto.signing import CheckpointSigner
from coffer.crypto.wrapping import WRAPPING_KEY_BYTES, purpose_key_aad
from coffer.domain.seal import Wrapped
from coffer.errors import Conflict
from coffer.service.root import RootOfTrust
from coffer.storage.repositories import RootStore

CHECKPOINT_SIGNING = "audit-checkpoint-signing"
#: Every purpose an installation has a key for (made on first use if missing).
PURPOSES = (CHECKPOINT_SIGNING,)


class PurposeKeys:
    def __init__(self, root: RootOfTrust, store: RootStore, clock: Callable[[], datetime]) -> None:
        self._root = root
        self._store = store
        self._clock = clock
        self._keys: dict[str, bytes] = {}
        self._signer: CheckpointSigner | None = None
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"PurposeKeys(loaded={sorted(self._keys)})"

    async def load(self, *, create: bool = True) -> None:
        """Unwrap every purpose key (making the missing ones, unless ``create`` is false:
        ``KeyIntegrityError`` then); ``Sealed`` while sealed."""
        if self._signer is not None and not self._root.sealed:
            return
        async with self._lock:
            if self._signer is not None and not self._root.sealed:
                return
            if self._root.sealed:
                raise self._root.sealed_error()
            stored = dict(await self._store.purpose_keys())
            for purpose in PURPOSES:
                if purpose not in stored and create:
                    # Another node may make it first (Conflict): then that one is used.
                    with contextlib.suppress(Conflict):
                        await self._root.write_wrapped(
                            os.urandom(WRAPPING_KEY_BYTES),
                            purpose_key_aad(purpose),
                            partial(self._add, purpose),
                        )
            keys = {}
            for purpose in PURPOSES:
                keys[purpose] = await self._root.unwrap_stored(
                    partial(self._read, purpose), purpose_key_aad(purpose)
                )
            self._keys = keys
            self._signer = CheckpointSigner(keys[CHECKPOINT_SIGNING])

    async def _add(self, purpose: str, wrapped: Wrapped) -> None:
        await self._store.add_purpose_key(purpose, wrapped, self._clock())

    async def _read(self, purpose: str) -> bytes | None:
        wrapped = (await self._store.purpose_keys()).get(purpose)
        return wrapped.blob if wrapped is not None else None

    def forget(self) -> None:
        self._keys = {}
        self._signer = None

    @property
    def signer(self) -> CheckpointSigner:
        """The checkpoint signer (``load`` first); ``Sealed`` if the keys are not loaded."""
        if self._signer is None or self._root.sealed:
            raise self._root.sealed_error()
        return self._signer

    async def checkpoint_signer(self) -> CheckpointSigner:
        await self.load()
        return self.signer

    async def checkpoint_seed(self) -> bytes:
        await self.load()
        return self._keys[CHECKPOINT_SIGNING]


class PurposeSigner:
    """The audit log's ``Signer``: the checkpoint signer of the purpose keys, as loaded now."""

    __slots__ = ("_keys",)

    def __init__(self, keys: PurposeKeys) -> None:
        self._keys = keys

    def __repr__(self) -> str:
        return "<PurposeSigner>"

    async def ready(self) -> None:
        await self._keys.load()

    def sign(self, message: bytes) -> bytes:
        return self._keys.signer.sign(message)

    def verify(self, signature: bytes, message: bytes) -> bool:
        return self._keys.signer.verify(signature, message)
