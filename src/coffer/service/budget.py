"""The encryption budget of AES-GCM and ChaCha20-Poly1305 key versions.

These versions encrypt with random 96-bit nonces; NIST SP 800-38D §8.3 allows at most 2^32
encryptions under one key that way (beyond, the chance of a repeated nonce — which reveals the
authentication key and the XOR of two plaintexts — grows past 2^-32). Each version has a budget
(``encryption_budget``, default 2^30, at most 2^32).

Encryptions are counted without a database write per request: a server process **reserves** a
block of encryptions of a version in the database (one atomic update) before it makes them, then
counts them down in memory. A process that crashes loses the unused rest of its block: the count
in the database can only be above the encryptions really made, never below, so a version never
goes over its budget, also across restarts, ``kill -9`` and several processes. Near the end of
the budget, reservations go one by one.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from coffer.domain.keytypes import KeyType
from coffer.storage.repositories import Store

#: Key types whose versions have a budget.
BUDGETED = frozenset({KeyType.AES128_GCM96, KeyType.AES256_GCM96, KeyType.CHACHA20_POLY1305})
#: The most a budget may be (NIST SP 800-38D §8.3, random 96-bit nonces).
MAX_BUDGET = 1 << 32
#: The largest block a process reserves at once.
MAX_BLOCK = 4096
#: How long a key's counts read from the database are shown again (``made``) before they are
#: read anew; a reservation of this process's own makes them be read at once.
COUNTS_TTL_SECONDS = 1.0
#: The most keys whose counts are kept (beyond, all are forgotten: they are read again).
MAX_COUNTED_KEYS = 10_000


class EncryptionBudget:
    def __init__(
        self,
        store: Store,
        budget: int,
        meter: Callable[[], None] | None = None,
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self.budget = budget
        #: Blocks small against the budget: a crash never wastes more than 1/1024 of it.
        self.block = max(1, min(MAX_BLOCK, budget // 1024))
        #: key → version → encryptions this process reserved and has not made yet.
        self._left: dict[str, dict[int, int]] = {}
        #: key → how many blocks of its versions this process reserved (it changes with every
        #: reservation: a copy of the key's counts read before one is out of date).
        self.reservations: dict[str, int] = {}
        self._reserving: dict[tuple[str, int], asyncio.Future[int]] = {}
        #: Reservations asked for and not yet being committed; the task committing them.
        self._queued: list[tuple[str, int]] = []
        self._flusher: asyncio.Task[None] | None = None
        self._meter = meter
        self._timer = timer
        #: key → (when read, ``reservations`` then, the database's counts per version).
        self._counted: dict[str, tuple[float, int, dict[int, int]]] = {}

    def take_reserved(self, key_identity: str, version: int) -> bool:
        """Count one encryption from this process's reservation, if it has one left (the hot
        path: no await)."""
        versions = self._left.get(key_identity)
        if versions:
            left = versions.get(version, 0)
            if left > 0:
                versions[version] = left - 1
                return True
        return False

    async def take(self, key_identity: str, version: int) -> bool:
        """Count one encryption of the version; ``False`` if its budget is spent."""
        while not self.take_reserved(key_identity, version):
            if await self._reserve((key_identity, version)) == 0:
                return False
        return True

    async def _reserve(self, which: tuple[str, int]) -> int:
        """Reserve a block of the version: one request asks, the others of the moment wait for
        its answer; the reservations asked for while a commit is under way are made together in
        the next one (a group commit: a spread over many keys is not a commit per key)."""
        loop = asyncio.get_running_loop()
        pending = self._reserving.get(which)
        if pending is None or pending.get_loop() is not loop:
            pending = self._reserving[which] = loop.create_future()
            self._queued.append(which)
        flusher = self._flusher
        if flusher is None or flusher.done() or flusher.get_loop() is not loop:
            self._flusher = loop.create_task(self._flush())
        return await asyncio.shield(pending)

    async def _flush(self) -> None:
        try:
            while self._queued:
                batch, self._queued = list(dict.fromkeys(self._queued)), []
                try:
                    grants = await self._store.reserve_encryptions_of(batch, self.block,
                                                                      self.budget)  # fmt: skip
                except Exception as exc:
                    for which in batch:
                        future = self._reserving.pop(which, None)
                        if future is not None and not future.done():
                            future.set_exception(exc)
                            future.exception()  # retrieved: those waiting get it, no one else
                    continue
                except BaseException:  # cancelled (the process ends): those waiting are told
                    for which in batch:
                        future = self._reserving.pop(which, None)
                        if future is not None:
                            future.cancel()
                    raise
                for (key, version), granted in zip(batch, grants, strict=True):
                    versions = self._left.setdefault(key, {})
                    versions[version] = versions.get(version, 0) + granted
                    self.reservations[key] = self.reservations.get(key, 0) + 1
                    if granted == 0 and self._meter is not None:
                        self._meter()
                    future = self._reserving.pop((key, version), None)
                    if future is not None and not future.done():
                        future.set_result(granted)
        finally:
            if self._flusher is asyncio.current_task():
                self._flusher = None

    def unused(self, key_identity: str) -> dict[int, int]:
        """Encryptions this process reserved of the key's versions and has not made yet."""
        return dict(self._left.get(key_identity, {}))

    async def made(self, key_identity: str) -> dict[int, int]:
        """Encryptions made per version of the key, as this process knows them: the database's
        counts (reserved by every process; read at most once a ``COUNTS_TTL_SECONDS``, and
        again after a reservation of this process's own) less what this process reserved and
        has not made. Other processes' blocks count as made until they are read again."""
        now = self._timer()
        mine = self.reservations.get(key_identity, 0)
        cached = self._counted.get(key_identity)
        if cached is None or cached[1] != mine or now - cached[0] >= COUNTS_TTL_SECONDS:
            counts = dict(await self._store.encryption_counts(key_identity))
            if len(self._counted) >= MAX_COUNTED_KEYS:
                self._counted.clear()
            cached = self._counted[key_identity] = (now, mine, counts)
        made = dict(cached[2])
        for version, left in self._left.get(key_identity, {}).items():
            made[version] = max(0, made.get(version, 0) - left)
        return made
