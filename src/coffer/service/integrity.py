"""``RowIntegrity``: what a server does with the MACs of authenticated rows.

Reads check every authenticated row's MAC before it becomes a domain object, and the version of
rows that a rollback would turn into a grant against the newest change the audit trail records
(``coffer.storage.verified``). A row that fails is treated as absent — it never grants — and is
reported: an error log line naming the table and the identity (never a value of the row), the
``coffer_integrity_failures_total`` metric, and an ``integrity.failure`` audit record (written
shortly after, by the server: the read that found it may run on a thread of its own).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from typing import Any

from coffer.metrics import count_integrity_failure
from coffer.service.operations import Operations
from coffer.storage.repositories import Macs

log = logging.getLogger(__name__)

#: How often reported failures are written to the audit log.
RECORD_SECONDS = 1.0


class RowIntegrity:
    def __init__(self, macs: Callable[[], Macs], *, metered: bool = True) -> None:
        """``macs``: the row MACs of the purpose key (``Sealed`` while it is not loaded)."""
        self._macs = macs
        self._metered = metered
        self._unrecorded: deque[tuple[str, str]] = deque(maxlen=10_000)
        # One writer of records at a time (the background job, and a caller that wants them
        # now): each failure is recorded once.
        self._recording = asyncio.Lock()

    def check(self, table: str, identity: str, values: tuple[Any, ...], mac: bytes | None) -> bool:
        if self._macs().verify(table, values, mac):
            return True
        self.report(table, identity, "its MAC is not its own" if mac else "it has no MAC")
        return False

    def report(self, table: str, identity: str, what: str) -> None:
        log.error("integrity: %s row %s is refused: %s", table, identity, what)
        if self._metered:
            count_integrity_failure(table)
        self._unrecorded.append((table, identity))

    async def record(self, operations: Operations) -> None:
        """Write an audit record of each failure reported since the last call."""
        async with self._recording:
            while self._unrecorded:
                table, identity = self._unrecorded[0]
                async with operations.begin_system("integrity.failure") as op:
                    op.event.resource_identity = identity
                    op.event.outcome = "failure"
                    op.event.error_code = f"integrity_{table}"
                self._unrecorded.popleft()  # only once its record is written

    async def record_forever(self, operations: Operations) -> None:
        while True:
            await asyncio.sleep(RECORD_SECONDS)
            try:
                await self.record(operations)
            except Exception:  # sealed, the log away: the next pass tries again
                log.debug("integrity failures could not be recorded yet", exc_info=True)
