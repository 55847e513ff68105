"""``WrappingKeys``: each organisation's BYOK wrapping keys, per region (spec §5.11).

A blob wrapped for one organisation must not import into another, so every organisation has its
own RSA-4096 wrapping key in each region, made the first time it asks for one and stored with its
private part wrapped by the organisation's KEK (crypto-shredding the organisation destroys them
too). A wrapping key is handed out until it is ``lifetime`` old; the next request then makes its
successor, and the one before is still accepted for ``overlap`` (24 h), so that a blob a client
wrapped just before the change still imports. When two nodes make a successor at the same moment,
the first to commit wins and the other adopts it. A key is made by the request that asks for it,
in the transaction of that request's audit record (``kms.wrapping_key.read``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from coffer.crypto.byok import WrappingKey
from coffer.crypto.wrapping import organisation_wrapping_key_aad
from coffer.domain.identity import new_identity
from coffer.domain.regions import Region
from coffer.service.caches import Cache
from coffer.service.keyring import Keyring
from coffer.service.rotation import Commit
from coffer.storage.changes import AddWrappingKey
from coffer.storage.repositories import Store, WrappingKeyRecord

WRAPPING_KEY_PREFIX = "wk"
TABLE = "byok_wrapping_keys"


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _aad(record: WrappingKeyRecord) -> bytes:
    r = record
    return organisation_wrapping_key_aad(
        r.identity, r.organisation_identity, r.region, r.number, _iso(r.created_at),
        _iso(r.expires_at),
    )  # fmt: skip


class WrappingKeys:
    def __init__(
        self,
        store: Store,
        keyring: Keyring,
        clock: Callable[[], datetime],
        timer: Callable[[], float],
        *,
        lifetime: timedelta,
        overlap: timedelta,
    ) -> None:
        self._store = store
        self._keyring = keyring
        self._clock = clock
        self._lifetime = lifetime
        self._overlap = overlap
        # A wrapping key never changes once made: loaded ones are kept (by identity).
        self._loaded: Cache[str, WrappingKey] = Cache(1024, 86_400.0, timer)

    def clear(self) -> None:
        """Forget the loaded keys (the root of trust sealed)."""
        self._loaded.clear()

    async def current(
        self, organisation_identity: str, region: Region, commit: Commit
    ) -> tuple[WrappingKey, datetime]:
        """The key to hand out now, and when it stops being handed out; if the newest one is
        that old (or there is none), a successor is made and stored with ``commit`` (the
        request's operation)."""
        newest = await self._newest(organisation_identity, region)
        if newest is None or newest.expires_at <= self._clock():
            await self._make(organisation_identity, region, newest, commit)
            newest = await self._newest(organisation_identity, region)  # ours, or the winner's
            assert newest is not None
        return await self._open(newest), newest.expires_at

    async def accepted(self, organisation_identity: str, region: Region) -> list[WrappingKey]:
        """The keys an import may have been wrapped with: the newest (even past its lifetime,
        until a successor is made) and, for ``overlap`` after its successor was made, the one
        before."""
        found = await self._store.wrapping_keys(organisation_identity, region.identity, 2)
        if not found:
            return []
        keys = [found[0]]
        if len(found) > 1 and self._clock() < found[0].created_at + self._overlap:
            keys.append(found[1])
        return [await self._open(record) for record in keys]

    async def _newest(self, organisation_identity: str, region: Region) -> WrappingKeyRecord | None:
        found = await self._store.wrapping_keys(organisation_identity, region.identity, 1)
        return found[0] if found else None

    async def _make(
        self,
        organisation_identity: str,
        region: Region,
        newest: WrappingKeyRecord | None,
        commit: Commit,
    ) -> None:
        """Store the successor of ``newest`` (unless another node stores one first)."""
        material = await asyncio.to_thread(WrappingKey.generate)
        now = self._clock()
        unsealed = WrappingKeyRecord(
            identity=new_identity(WRAPPING_KEY_PREFIX),
            organisation_identity=organisation_identity,
            region=region.identity,
            number=newest.number + 1 if newest is not None else 1,
            wrapped_private=b"",
            created_at=now,
            expires_at=now + self._lifetime,
        )
        wrapped = await self._keyring.seal_for(organisation_identity, material, _aad(unsealed))
        record = replace(unsealed, wrapped_private=wrapped)
        await commit(AddWrappingKey(record))
        self._loaded.put(record.identity, WrappingKey.load(material))

    async def _open(self, record: WrappingKeyRecord) -> WrappingKey:
        async def load() -> WrappingKey:
            material = await self._keyring.open_for(
                record.organisation_identity, TABLE, record.identity, record.wrapped_private,
                _aad(record),
            )  # fmt: skip
            return await asyncio.to_thread(WrappingKey.load, material)

        loaded = await self._loaded.get_or_load(record.identity, load)
        assert loaded is not None
        return loaded
