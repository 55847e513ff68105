"""Where every key operation starts: the region, the key, and whether the caller may act on it
(spec §1.1 steps 5–7)."""

from __future__ import annotations

from collections.abc import Sequence

from coffer.domain.keys import Key
from coffer.domain.permissions import Action
from coffer.domain.regions import Region
from coffer.errors import Forbidden, KeyNotFound, RegionNotFound, RegionUnavailable
from coffer.service.caches import KeyCache
from coffer.service.context import Caller
from coffer.service.operations import Operation
from coffer.storage.repositories import Store

#: Longest key reference looked up (identities are 24 characters, slugs at most 63).
MAX_KEY_REF = 255


class KeyScope:
    def __init__(self, store: Store, key_cache: KeyCache, regions: Sequence[Region]) -> None:
        self._store = store
        self.keys = key_cache
        self.regions = tuple(regions)
        self._region_refs = {ref: r for r in regions for ref in (r.identity, r.slug)}

    def region(self, op: Operation, ref: str) -> Region:
        region = self._region_refs.get(ref)
        if region is None:
            raise RegionNotFound()
        op.at_region(region)
        if not region.kms_available:
            raise RegionUnavailable()
        return region

    async def find_key(self, caller: Caller, region: Region, ref: str) -> Key | None:
        if len(ref) > MAX_KEY_REF:
            return None
        organisation = caller.organisation.identity
        project = caller.project_identity
        return await self.keys.get_or_load(
            (organisation, region.identity, project, ref),
            lambda: self._store.find_key(organisation, region.identity, project, ref),
        )

    async def current(self, key: Key) -> Key | None:
        """``key`` as the database has it now (no cache)."""
        return await self._store.find_key(
            key.organisation_identity, key.region, key.project_identity, key.identity
        )

    async def authorised_key(
        self, op: Operation, caller: Caller, region: Region, ref: str, action: Action
    ) -> Key:
        """The key ``ref`` if the caller may ``action`` it (spec §1.1 step 7)."""
        key = await self.find_key(caller, region, ref)
        if key is None:
            raise KeyNotFound()
        allowed = caller.grants.on_key(key.identity, key.project_identity)
        if Action.READ not in allowed:
            # Without any KMS permission on the key, the key does not exist for this caller.
            raise KeyNotFound()
        op.touch(key)
        if action not in allowed:
            raise Forbidden()
        return key

    @staticmethod
    def require_collection(caller: Caller, action: Action) -> None:
        if action not in caller.grants.in_scope(caller.project_identity):
            raise Forbidden()
