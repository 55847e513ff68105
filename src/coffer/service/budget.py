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
from collections.abc import Callable

from coffer.domain.keytypes import KeyType
from coffer.storage.repositories import Store

#: Key types whose versions have a budget.
BUDGETED = frozenset({KeyType.AES128_GCM96, KeyType.AES256_GCM96, KeyType.CHACHA20_POLY1305})
#: The most a budget may be (NIST SP 800-38D §8.3, random 96-bit nonces).
MAX_BUDGET = 1 << 32
#: The largest block a process reserves at once.
MAX_BLOCK = 4096


class EncryptionBudget:
    def __init__(self, store: Store, budget: int, meter: Callable[[], None] | None = None) -> None:
        self._store = store
        self.budget = budget
        #: Blocks small against the budget: a crash never wastes more than 1/1024 of it.
        self.block = max(1, min(MAX_BLOCK, budget // 1024))
        self._left: dict[tuple[str, int], int] = {}
        self._reserving: dict[tuple[str, int], asyncio.Future[int]] = {}
        self._meter = meter

    def take_reserved(self, key_identity: str, version: int) -> bool:
        """Count one encryption from this process's reservation, if it has one left (the hot
        path: no await)."""
        which = (key_identity, version)
        left = self._left.get(which, 0)
        if left > 0:
            self._left[which] = left - 1
            return True
        return False

    async def take(self, key_identity: str, version: int) -> bool:
        """Count one encryption of the version; ``False`` if its budget is spent."""
        which = (key_identity, version)
        while True:
            left = self._left.get(which, 0)
            if left > 0:
                self._left[which] = left - 1
                return True
            if await self._reserve(which) == 0:
                return False

    async def _reserve(self, which: tuple[str, int]) -> int:
        """Reserve a block (one request does it; the others of the moment wait for it)."""
        pending = self._reserving.get(which)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._reserving[which] = future
        try:
            granted = await self._store.reserve_encryptions(*which, self.block, self.budget)
            self._left[which] = self._left.get(which, 0) + granted
            if granted == 0 and self._meter is not None:
                self._meter()
            future.set_result(granted)
            return granted
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: those waiting get it, nobody else must
            raise
        finally:
            del self._reserving[which]

    def unused(self, key_identity: str) -> dict[int, int]:
        """Encryptions this process reserved of the key's versions and has not made yet."""
        return {v: left for (k, v), left in self._left.items() if k == key_identity}
