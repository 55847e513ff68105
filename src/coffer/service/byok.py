"""``WrappingKeys``: each region's stable BYOK wrapping key (spec §5.11).

A region's RSA-4096 wrapping key is made the first time anyone asks for it, stored with its private
part wrapped by the root key, and kept loaded. When two nodes make one at the same moment, the
first to commit wins and the other adopts it, so the region keeps exactly one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime

from coffer.crypto.byok import WrappingKey
from coffer.crypto.wrapping import wrapping_key_aad
from coffer.domain.regions import Region
from coffer.domain.seal import Wrapped
from coffer.errors import Conflict
from coffer.service.caches import Cache
from coffer.service.root import RootOfTrust
from coffer.storage.repositories import Store


class WrappingKeys:
    def __init__(
        self,
        store: Store,
        root: RootOfTrust,
        clock: Callable[[], datetime],
        timer: Callable[[], float],
    ) -> None:
        self._store = store
        self._root = root
        self._clock = clock
        # A region's wrapping key never changes; the cache only gives single-flight loading.
        self._loaded: Cache[str, WrappingKey] = Cache(1024, 86_400.0, timer)

    def clear(self) -> None:
        """Forget the loaded keys (the root of trust sealed)."""
        self._loaded.clear()

    async def get(self, region: Region) -> WrappingKey:
        loaded = await self._loaded.get_or_load(region.identity, lambda: self._load(region))
        assert loaded is not None
        return loaded

    async def _load(self, region: Region) -> WrappingKey:
        aad = wrapping_key_aad(region.identity)
        if await self._store.wrapped_wrapping_key(region.identity) is None:
            material = await asyncio.to_thread(WrappingKey.generate)

            async def write(wrapped: Wrapped) -> None:
                await self._store.add_wrapping_key(region.identity, wrapped, self._clock())

            try:
                await self._root.write_wrapped(material, aad, write)
                return WrappingKey.load(material)
            except Conflict:  # another node stored the region's key first: use that one
                pass
        return WrappingKey.load(
            await self._root.unwrap_stored(
                lambda: self._store.wrapped_wrapping_key(region.identity), aad
            )
        )
