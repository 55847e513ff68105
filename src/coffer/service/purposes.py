"""Purpose keys: random keys for one purpose each, stored wrapped by the root key.

The audit checkpoint signing key (Ed25519 seed), the row MAC key, the token digest key and the
audit link key (``coffer.crypto.integrity``). They are random rather than derived from the root
key so that rotating the root only rewraps them: every signature, MAC, digest and link made before
a rotation stays valid after it. They are loaded when a server starts with its root open or when
it opens, and forgotten when it seals.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable
from datetime import datetime
from functools import partial

from sqlalchemy.engine import Engine

from coffer.crypto.integrity import AuditLinks, RowMacs, TokenDigests
from coffer.crypto.signing import CheckpointSigner
from coffer.crypto.wrapping import WRAPPING_KEY_BYTES, purpose_key_aad
from coffer.domain.seal import Wrapped
from coffer.errors import Conflict
from coffer.service.root import RootOfTrust
from coffer.storage import barrier, sql_root
from coffer.storage.repositories import RootStore

CHECKPOINT_SIGNING = "audit-checkpoint-signing"
ROW_MAC = "row-mac"
TOKEN_DIGEST = "token-digest"  # noqa: S105 (a purpose name, not a secret)
AUDIT_LINK = "audit-link"
log = logging.getLogger(__name__)
#: Every purpose an installation has a key for (made on first use if missing).
PURPOSES = (CHECKPOINT_SIGNING, ROW_MAC, TOKEN_DIGEST, AUDIT_LINK)


class PurposeKeys:
    """The purpose keys, unwrapped by the root of trust: loaded when a server starts with its
    root open (``load_sync``) or when it opens later (``load``), forgotten when it seals."""

    def __init__(
        self,
        root: RootOfTrust,
        store: RootStore,
        clock: Callable[[], datetime],
        engine: Engine | None = None,
    ) -> None:
        self._root = root
        self._store = store
        self._clock = clock
        self._engine = engine
        self._keys: dict[str, bytes] = {}
        self._signer: CheckpointSigner | None = None
        self._row_macs: RowMacs | None = None
        self._token_digests: TokenDigests | None = None
        self._audit_links: AuditLinks | None = None
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"PurposeKeys(loaded={sorted(self._keys)})"

    @property
    def loaded(self) -> bool:
        return self._signer is not None and not self._root.sealed

    def _take(self, keys: dict[str, bytes]) -> None:
        self._keys = keys
        self._signer = CheckpointSigner(keys[CHECKPOINT_SIGNING])
        self._row_macs = RowMacs(keys[ROW_MAC])
        self._token_digests = TokenDigests(keys[TOKEN_DIGEST])
        self._audit_links = AuditLinks(keys[AUDIT_LINK])

    def load_sync(self) -> None:
        """``load`` at start, before any event loop (the root open, an engine given)."""
        if self.loaded or self._root.sealed or self._engine is None:
            return
        with self._engine.begin() as conn:
            stored = sql_root.read_purpose_keys(conn)
            for purpose in PURPOSES:
                if purpose not in stored:
                    wrapped = self._root.wrap_sync(
                        os.urandom(WRAPPING_KEY_BYTES), purpose_key_aad(purpose)
                    )
                    sql_root.insert_purpose_key(conn, purpose, wrapped, self._clock())
                    stored[purpose] = wrapped
        keys = {
            purpose: self._root.unwrap_sync(stored[purpose].blob, purpose_key_aad(purpose))
            for purpose in PURPOSES
        }
        self._upgrade_storage(keys)
        self._take(keys)

    def _upgrade_storage(self, keys: dict[str, bytes]) -> None:
        """Give the rows of an installation made before the storage barrier their MACs and
        keyed token digests (once: ``coffer.storage.barrier``), before the keys are used."""
        if self._engine is None:
            return
        with self._engine.begin() as conn:
            digests = TokenDigests(keys[TOKEN_DIGEST])
            if barrier.upgrade(conn, RowMacs(keys[ROW_MAC]), digests.of_unkeyed):
                log.warning("storage upgraded: every authenticated row has its MAC, every token "
                            "its keyed digest")  # fmt: skip

    async def load(self, *, create: bool = True) -> None:
        """Unwrap every purpose key (making the missing ones, unless ``create`` is false:
        ``KeyIntegrityError`` then); ``Sealed`` while sealed."""
        if self.loaded:
            return
        async with self._lock:
            if self.loaded:
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
            await asyncio.to_thread(self._upgrade_storage, keys)
            self._take(keys)

    async def _add(self, purpose: str, wrapped: Wrapped) -> None:
        await self._store.add_purpose_key(purpose, wrapped, self._clock())

    async def _read(self, purpose: str) -> bytes | None:
        wrapped = (await self._store.purpose_keys()).get(purpose)
        return wrapped.blob if wrapped is not None else None

    def forget(self) -> None:
        self._keys = {}
        self._signer = None
        self._row_macs = None
        self._token_digests = None
        self._audit_links = None

    def _loaded(self) -> None:
        if not self.loaded:
            raise self._root.sealed_error()

    @property
    def signer(self) -> CheckpointSigner:
        """The checkpoint signer (``load`` first); ``Sealed`` if the keys are not loaded."""
        self._loaded()
        assert self._signer is not None
        return self._signer

    @property
    def row_macs(self) -> RowMacs:
        self._loaded()
        assert self._row_macs is not None
        return self._row_macs

    @property
    def token_digests(self) -> TokenDigests:
        self._loaded()
        assert self._token_digests is not None
        return self._token_digests

    @property
    def audit_links(self) -> AuditLinks:
        self._loaded()
        assert self._audit_links is not None
        return self._audit_links

    def audit_link(self, prev: bytes, record: bytes) -> bytes:
        """The keyed link of ``record`` after ``prev``; ``Sealed`` if the keys are not loaded."""
        return self.audit_links.link(prev, record)

    def token_digest(self, token: str) -> bytes:
        """The stored digest of ``token``; ``Sealed`` if the keys are not loaded."""
        return self.token_digests.of(token)

    def token_digest_of_sha256(self, sha256_digest: bytes) -> bytes:
        """The stored digest of the token whose plain SHA-256 is ``sha256_digest``."""
        return self.token_digests.of_unkeyed(sha256_digest)

    async def checkpoint_signer(self) -> CheckpointSigner:
        await self.load()
        return self.signer

    async def checkpoint_seed(self) -> bytes:
        await self.load()
        return self._keys[CHECKPOINT_SIGNING]

    async def row_mac_key(self) -> bytes:
        await self.load()
        return self._keys[ROW_MAC]

    async def audit_link_key(self) -> bytes:
        await self.load()
        return self._keys[AUDIT_LINK]


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
