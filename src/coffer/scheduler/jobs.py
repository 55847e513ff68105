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
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from coffer.audit.log import AuditLog
from coffer.errors import Conflict
from coffer.logs import dependency_of
from coffer.service.lifecycle import LifecycleService
from coffer.service.root import RootOfTrust
from coffer.service.rotation import RootRotation
from coffer.service.services import Lease
from coffer.storage.repositories import Store

log = logging.getLogger(__name__)

BATCH = 100
#: The longest a key whose scheduled job keeps failing waits between tries.
MAX_BACKOFF = timedelta(days=1)


@dataclass(slots=True)
class RunReport:
    rotated: list[str] = field(default_factory=list)
    purged: list[str] = field(default_factory=list)
    lost_races: int = 0
    failed: list[str] = field(default_factory=list)
    #: Keys due whose job failed before and waits out its back-off.
    deferred: list[str] = field(default_factory=list)
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
        #: Keys whose job failed: (failures in a row, not to be tried before).
        self._backoff: dict[str, tuple[int, datetime]] = {}

    async def run_once(self) -> RunReport:
        """One pass: every key due now is rotated or purged (in batches until none is left)."""
        report = RunReport()
        if self._root is not None and self._root.sealed:
            report.sealed = True  # nothing can be written or signed
            return report
        if self._rotation is not None:
            try:  # a root rotation that a stopped node left half done
                await self._rotation.run()
            except Exception as exc:
                if dependency_of(exc) is None:  # else the database is away, and said so
                    log.exception("the root rotation under way could not go on; next pass "
                                  "retries")  # fmt: skip
        now = self._clock()
        # Paged by identity: keys that fail (or rows the storage barrier refuses) never hide
        # the keys after them.
        after: str | None = ""
        while after is not None:
            batch, after = await self._store.keys_due_for_rotation(now, BATCH, after)
            for key in batch:
                if key.rotation_due(now) and self._may_try(key.identity, now, report):
                    await self._job(key.identity, "rotation", report.rotated, report,
                                    self._lifecycle.rotate_due(key, now), now)  # fmt: skip
        after = ""
        while after is not None:
            batch, after = await self._store.keys_due_for_purge(now, BATCH, after)
            for key in batch:
                if key.purge_due(now) and self._may_try(key.identity, now, report):
                    await self._job(key.identity, "purge", report.purged, report,
                                    self._lifecycle.purge(key), now)  # fmt: skip
        if self._audit_log is not None:
            report.audit_checkpoint = await self._audit_log.checkpoint()
            if self._audit_retention is not None:
                report.audit_pruned = await self._audit_log.prune(now - self._audit_retention)
        return report

    def _may_try(self, identity: str, now: datetime, report: RunReport) -> bool:
        """Whether a key whose job failed before is past its back-off."""
        held = self._backoff.get(identity)
        if held is not None and now < held[1]:
            report.deferred.append(identity)
            return False
        return True

    async def _job(
        self,
        identity: str,
        what: str,
        done: list[str],
        report: RunReport,
        job: Coroutine[Any, Any, object],
        now: datetime,
    ) -> None:
        try:
            await job
        except Conflict:
            report.lost_races += 1
        except Exception as exc:
            # One key that cannot rotate must not hold up every other key: it waits, twice as
            # long after each failure (from one interval up to a day), and is reported.
            failures = self._backoff.get(identity, (0, now))[0] + 1
            wait = min(MAX_BACKOFF, timedelta(seconds=self._interval) * 2 ** (failures - 1))
            self._backoff[identity] = (failures, now + wait)
            away = dependency_of(exc)
            log.log(logging.DEBUG if away else logging.ERROR,
                    "scheduled %s of %s failed (%d in a row); next try after %s",
                    what, identity, failures, wait, exc_info=None if away else exc)  # fmt: skip
            report.failed.append(identity)
        else:
            self._backoff.pop(identity, None)
            done.append(identity)

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
        except Exception as exc:
            # The next pass retries; a database that is briefly away must not end the job (its
            # outage is logged once, by its state).
            if dependency_of(exc) is None:
                log.exception("scheduler pass failed")
            else:
                log.debug("scheduler pass failed: %s is down", dependency_of(exc))
