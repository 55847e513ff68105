"""Key versions' material: wrapped on the way in, unwrapped and parsed once on the way out.

Handles (ready-to-use algorithm objects) are cached per (key, version). A version's material never
changes and identities are never reused, so these entries need no invalidation.
"""

from __future__ import annotations

from collections.abc import Callable

from coffer.crypto.algorithms import KeyHandle, algorithm_for
from coffer.crypto.wrapping import Wrapper, kek_aad, key_version_aad
from coffer.domain.keys import Key
from coffer.errors import IntegrityFailure, KeyIntegrityError
from coffer.metrics import CacheMeter
from coffer.service.caches import Cache
from coffer.service.root import RootOfTrust
from coffer.storage.repositories import Store


class Keyring:
    def __init__(
        self,
        store: Store,
        root: RootOfTrust,
        *,
        cache_size: int,
        timer: Callable[[], float],
        metered: bool = False,
        report: Callable[[str, str, str], None] | None = None,
    ) -> None:
        """``report(table, identity, what)``: an integrity failure of a stored blob (a KEK, a
        version's material), as ``RowIntegrity.report``."""
        self._store = store
        self._root = root
        self._report = report
        # Material does not expire; the TTL only bounds how long an unused handle stays.
        self._handles: Cache[tuple[str, int], KeyHandle] = Cache(
            cache_size, 3600.0, timer, CacheMeter("key_handle") if metered else None
        )
        self._keks: Cache[str, Wrapper] = Cache(
            cache_size, 3600.0, timer, CacheMeter("kek") if metered else None
        )

    async def _kek(self, organisation_identity: str) -> Wrapper:
        async def load() -> Wrapper:
            try:
                kek = await self._root.unwrap_stored(
                    lambda: self._store.wrapped_kek(organisation_identity),
                    kek_aad(organisation_identity),
                )
            except KeyIntegrityError:
                raise self._refused("organisation_keks", organisation_identity) from None
            return Wrapper(kek)

        wrapper = await self._keks.get_or_load(organisation_identity, load)
        assert wrapper is not None
        return wrapper

    async def wrap(self, key: Key, version: int, material: bytes) -> bytes:
        """``material`` wrapped by the key's organisation KEK, bound to its row."""
        kek = await self._kek(key.organisation_identity)
        aad = key_version_aad(key.organisation_identity, key.identity, version, key.key_type.value)
        return kek.wrap(material, aad)

    async def seal_for(self, organisation_identity: str, plaintext: bytes, aad: bytes) -> bytes:
        """``plaintext`` wrapped by the organisation's KEK (its BYOK wrapping keys)."""
        return (await self._kek(organisation_identity)).wrap(plaintext, aad)

    async def open_for(
        self, organisation_identity: str, table: str, identity: str, blob: bytes, aad: bytes
    ) -> bytes:
        """A blob wrapped by the organisation's KEK (``seal_for``); one that does not open (moved
        to another row, replaced) is reported as row ``identity`` of ``table`` and answers 503."""
        kek = await self._kek(organisation_identity)
        try:
            return kek.unwrap(blob, aad)
        except KeyIntegrityError:
            raise self._refused(table, identity) from None

    def remember(self, key: Key, version: int, handle: KeyHandle) -> None:
        self._handles.put((key.identity, version), handle)

    def forget(self, key_identity: str, latest_version: int) -> None:
        """Drop every cached handle of a destroyed key."""
        for version in range(1, latest_version + 1):
            self._handles.pop((key_identity, version))

    def forget_organisation(self, organisation_identity: str) -> None:
        """Drop a shredded organisation's KEK (its keys' handles go with ``forget``)."""
        self._keks.pop(organisation_identity)

    def clear(self) -> None:
        """Drop every KEK and handle: the root of trust sealed."""
        self._keks.clear()
        self._handles.clear()

    async def material(self, key: Key, version: int) -> bytes:
        """One version's material, read from storage and unwrapped (never cached as bytes)."""
        blob = await self._store.wrapped_version(key.identity, version)
        if blob is None:
            raise self._refused("key_versions", f"{key.identity}/{version}", "it is missing")
        kek = await self._kek(key.organisation_identity)
        aad = key_version_aad(key.organisation_identity, key.identity, version, key.key_type.value)
        try:
            return kek.unwrap(blob, aad)
        except KeyIntegrityError:
            raise self._refused("key_versions", f"{key.identity}/{version}") from None

    def _refused(
        self, table: str, identity: str, what: str = "its blob does not open under its key"
    ) -> IntegrityFailure:
        """A stored blob (moved, replaced, deleted) reported; the request answers 503."""
        if self._report is not None:
            self._report(table, identity, what)
        return IntegrityFailure()

    async def handle(self, key: Key, version: int) -> KeyHandle:
        async def load() -> KeyHandle:
            return algorithm_for(key.key_type).load(await self.material(key, version))

        handle = await self._handles.get_or_load((key.identity, version), load)
        assert handle is not None
        return handle
