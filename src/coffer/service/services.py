"""Everything the API and the CLI call, built together by ``coffer.bootstrap``."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Protocol

from coffer.audit.log import AuditLog
from coffer.config import Settings
from coffer.errors import CofferError
from coffer.service.access import AccessService
from coffer.service.audit import AuditService
from coffer.service.changes import Changes
from coffer.service.crypto import CryptoService
from coffer.service.iam import IamService
from coffer.service.integrity import RowIntegrity
from coffer.service.keyring import Keyring
from coffer.service.keys import KeyService
from coffer.service.lifecycle import LifecycleService
from coffer.service.operations import Operations
from coffer.service.purposes import PurposeKeys
from coffer.service.root import RootOfTrust
from coffer.service.rotation import RootRotation
from coffer.service.sys import SysService
from coffer.service.tenants import TenantService
from coffer.storage.repositories import AuditStore, Store

log = logging.getLogger(__name__)


class Lease(Protocol):
    async def held(self) -> bool:
        """Whether this node holds the lease now (taking it if it is free)."""
        ...

    async def release(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Services:
    settings: Settings
    store: Store
    root: RootOfTrust
    purposes: PurposeKeys
    #: What reads do with authenticated rows; its failures are audited by a background job.
    integrity: RowIntegrity
    rotation: RootRotation
    sys: SysService
    operations: Operations
    access: AccessService
    keyring: Keyring
    keys: KeyService
    crypto: CryptoService
    lifecycle: LifecycleService
    audit: AuditService
    audit_log: AuditLog | None
    audit_store: AuditStore
    tenants: TenantService
    changes: Changes
    #: The background jobs' lease among nodes (``None``: a single node, always the one).
    lease: Lease | None
    iam: IamService

    async def ready(self) -> None:
        """Raise ``Unavailable`` unless the database and the root key can be used (``Sealed``
        while sealed)."""
        await self.store.ping()
        await self.root.check()

    async def close(self) -> None:
        try:
            await self.rotation.close()
            if self.audit_log is not None:
                await self.operations.record_suppressed()
                await self.audit_log.close()
        except CofferError as exc:
            log.warning("the closing audit checkpoint could not be written: %s", exc.code)
        finally:
            self.root.close()
            await self.changes.close()
            if self.lease is not None:
                await self.lease.release()
            await self.audit_store.close()
            await self.store.close()
