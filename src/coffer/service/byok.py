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
from coffer.crypto.root import RootKeyProvider
from coffer.crypto.wrapping import wrapping_key_aad
from coffer.domain.regions import Region
from coffer.errors import Conflict, KeyIntegrityError
from coffer.service.caches import Cache
from coffer.storage.repositories import Store


class WrappingKeys:
    def __init__(
        self,
        store: Store,
        root: RootKeyProvider,
        clock: Callable[[], datetime],
        timer: Callable[[], float],
    ) -> None:
        self._store = store
        self._root = root
        self._clock = clock
        # A region's wrapping key never changes; the cache only gives single-flight loading.
        self._loaded: Cache[str, WrappingKey] = Cache(1024, 86_400.0, timer)

    async def get(self, region: Region) -> WrappingKey:
        loaded = await self._loaded.get_or_load(region.identity, lambda: self._load(region))
        assert loaded is not None
        return loaded

    async def _load(self, region: Region) -> WrappingKey:
        aad = wrapping_key_aad(region.identity)
        blob = await self._store.wrapped_wrapping_key(region.identity)
        if blob is None:
            material = await asyncio.to_thread(WrappingKey.generate)
            try:
                async with self._store.transaction() as tx:
                    await tx.add_wrapping_key(
                        region.identity, self._root.wrap(material, aad), self._clock()
                    )
                return WrappingKey.load(material)
            except Conflict:  # another node stored the region's key first: use that one
                blob = await self._store.wrapped_wrapping_key(region.identity)
                if blob is None:
                    raise KeyIntegrityError() from None
        return WrappingKey.load(self._root.unwrap(blob, aad))
