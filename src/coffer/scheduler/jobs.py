"""The scheduler: rotates every due key exactly once and purges keys whose retention elapsed.

Exactly once, also with several nodes on one database: a key is due while its stored
``next_rotation_at`` is not after now. Rotating it writes version N+1 and moves
``next_rotation_at`` a period ahead in one transaction, guarded twice: the update only applies to
the key row as it was read (``objectVersion``), and the (key, version) primary key admits one
version N+1. Of two schedulers that read the same due key, one commits and the other's whole
transaction fails with ``Conflict``, which it counts as done by someone else.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from coffer.audit.log import AuditLog
from coffer.errors import Conflict
from coffer.service.lifecycle import LifecycleService
from coffer.service.root import RootOfTrust
from coffer.service.rotation import RootRotation
from coffer.service.services import Lease
from coffer.storage.repositories import Store

log = logging.getLogger(__name__)

BATCH = 100


@dataclass(slots=True)
class RunReport:
    rotated: list[str] = field(default_factory=list)
    purged: list[str] = field(default_factory=list)
    lost_races: int = 0
    failed: list[str] = field(default_factory=list)
    audit_pruned: int = 0
    audit_checkpoint: bool = False
    #: The pass did nothing: the root of trust is sealed.
    sealed: bool = False


class Scheduler:
    def __init__(
        self,
        store: Store,
        lifecycle: LifecycleService,
        clock: Callable[[], datetime],
        interval_seconds: float,
        *,
        audit_log: AuditLog | None = None,
        audit_retention: timedelta | None = None,
        lease: Lease | None = None,
        takeover_seconds: float = 10.0,
        root: RootOfTrust | None = None,
        rotation: RootRotation | None = None,
    ) -> None:
        self._root = root
        self._rotation = rotation
        self._lease = lease
        self._takeover = takeover_seconds
        self._store = store
        self._lifecycle = lifecycle
        self._clock = clock
        self._interval = interval_seconds
        self._audit_log = audit_log
        self._audit_retention = audit_retention

    async def run_once(self) -> RunReport:
        """One pass: every key due now is rotated or purged (in batches until none is left)."""
        report = RunReport()
        if self._root is not None and self._root.sealed:
            report.sealed = True  # nothing can be written or signed
            return report
        if self._rotation is not None:
            try:  # a root rotation that a stopped node left half done
                await self._rotation.run()
            except Exception:
                log.exception("the root rotation under way could not go on; next pass retries")
        now = self._clock()
        seen: set[str] = set()
        while batch := [k for k in await self._store.keys_due_for_rotation(now, BATCH)
                        if k.identity not in seen]:  # fmt: skip
            for key in batch:
                seen.add(key.identity)
                if not key.rotation_due(now):
                    continue
                try:
                    await self._lifecycle.rotate_due(key, now)
                    report.rotated.append(key.identity)
                except Conflict:
                    report.lost_races += 1
                except Exception:
                    # One key that cannot rotate must not hold up every other key.
                    log.exception("scheduled rotation of %s failed", key.identity)
                    report.failed.append(key.identity)
        while batch := [k for k in await self._store.keys_due_for_purge(now, BATCH)
                        if k.identity not in seen]:  # fmt: skip
            for key in batch:
                seen.add(key.identity)
                if not key.purge_due(now):
                    continue
                try:
                    await self._lifecycle.purge(key)
                    report.purged.append(key.identity)
                except Conflict:
                    report.lost_races += 1
                except Exception:
                    log.exception("purge of %s failed", key.identity)
                    report.failed.append(key.identity)
        if self._audit_log is not None:
            report.audit_checkpoint = await self._audit_log.checkpoint()
            if self._audit_retention is not None:
                report.audit_pruned = await self._audit_log.prune(now - self._audit_retention)
        return report

    async def run_forever(self) -> None:
        """Run a pass every interval until cancelled; a failed pass is logged and retried.

        With several nodes, only the node holding the lease runs passes; the others ask for it
        every ``takeover_seconds``, so when the holder dies another node takes over within
        that time and runs a pass at once."""
        next_pass = 0.0
        loop = asyncio.get_running_loop()
        while True:
            try:
                leader = self._lease is None or await self._lease.held()
            except Exception:
                log.exception("the background jobs' lease could not be checked")
                leader = False
            if not leader:
                next_pass = 0.0  # when the lease comes, run at once: the jobs may be late
            elif loop.time() >= next_pass:
                await self._pass()
                next_pass = loop.time() + self._interval
            wait = self._interval if self._lease is None else min(self._interval, self._takeover)
            await asyncio.sleep(wait)

    async def _pass(self) -> None:
        try:
            report = await self.run_once()
            if report.rotated or report.purged:
                log.info(
                    "scheduler: rotated %d, purged %d key(s)",
                    len(report.rotated),
                    len(report.purged),
                )
        except Exception:
            # The next pass retries; a database that is briefly away must not end the job.
            log.exception("scheduler pass failed")
