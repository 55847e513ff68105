"""Everything the API and the CLI call, built together by ``coffer.bootstrap``."""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from coffer.audit.log import AuditLog
from coffer.config import Settings
from coffer.errors import CofferError, Unavailable
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


#: A data directory's disk with less room than this is reported full (``ready``).
MIN_FREE_BYTES = 1 << 20


def free_bytes(path: Path) -> int:
    stats = os.statvfs(path)
    return stats.f_bavail * stats.f_frsize


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
        """Raise ``Unavailable`` unless a request could be served and its writes stored now:
        the database read and written (a write that changes nothing), the root key usable
        (``Sealed`` while sealed), the audit log's writer and anchor able to take a batch, and
        (SQLite) room on the data directory's disk."""
        await self.store.ping()
        await self.root.check()
        await self.audit_store.probe_write()
        if self.audit_log is not None:
            await self.audit_log.probe()
        if self.settings.database_url is None:
            free = await asyncio.to_thread(free_bytes, self.settings.data_dir)
            if free < MIN_FREE_BYTES:
                raise Unavailable(f"the data directory's disk has {free} bytes free")

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
