"""Everything the API and the CLI call, built together by ``coffer.bootstrap``."""

from __future__ import annotations

from dataclasses import dataclass

from coffer.config import Settings
from coffer.crypto.root import RootKeyProvider
from coffer.service.access import AccessService
from coffer.service.keyring import Keyring
from coffer.service.keys import KeyService
from coffer.service.lifecycle import LifecycleService
from coffer.service.tenants import TenantService
from coffer.storage.repositories import Store


@dataclass(frozen=True, slots=True)
class Services:
    settings: Settings
    store: Store
    root: RootKeyProvider
    access: AccessService
    keyring: Keyring
    keys: KeyService
    lifecycle: LifecycleService
    tenants: TenantService

    async def ready(self) -> None:
        """Raise ``Unavailable`` unless the database and the root key can be used."""
        await self.store.ping()
        self.root.check()

    async def close(self) -> None:
        await self.store.close()
