"""The audit log: a durable, hash-chained ``AuditSink`` with group commit.

``write`` returns only once the record is committed (a response is never sent before its record
is durable). Records of concurrent requests share one transaction: while one commit is on its way
to disk, the records that arrive queue up and go together in the next, so a single durable commit
(a few milliseconds) carries as many records as arrived meanwhile. If a commit fails, every
request in it fails with ``Unavailable``: the log fails closed.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from datetime import datetime
from typing import Protocol

from coffer.audit.chain import checkpoint_message, row_of
from coffer.audit.events import AuditEvent
from coffer.domain.audit import ChainRow, Checkpoint
from coffer.errors import Conflict, Unavailable
from coffer.storage.repositories import AuditStore

log = logging.getLogger(__name__)

MAX_BATCH = 1000
_HEAD_RETRIES = 5


class Signer(Protocol):
    def sign(self, message: bytes) -> bytes: ...

    def verify(self, signature: bytes, message: bytes) -> bool: ...


class AuditLog:
    def __init__(
        self,
        store: AuditStore,
        signer: Signer,
        clock: Callable[[], datetime],
        *,
        checkpoint_every: int,
    ) -> None:
        self._store = store
        self._signer = signer
        self._clock = clock
        self._every = checkpoint_every
        self._queue: list[tuple[AuditEvent, asyncio.Future[None]]] = []
        self._flusher: asyncio.Task[None] | None = None
        self._head: tuple[int, bytes] | None = None
        #: Sizes of the latest batches committed (the group-commit figure for metrics).
        self.batches: deque[int] = deque(maxlen=1000)

    async def write(self, event: AuditEvent) -> None:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append((event, done))
        if self._flusher is None:
            self._flusher = asyncio.create_task(self._flush_all())
        await done

    async def close(self) -> None:
        """Let the records under way commit, then sign a checkpoint of the chain's end."""
        while self._flusher is not None:
            await asyncio.shield(self._flusher)
        await self.checkpoint()

    async def checkpoint(self) -> bool:
        """Sign a checkpoint of the chain as it stands, unless one covers it already (the
        scheduler calls this every pass: a cut-off tail is then detectable after one interval,
        however few records came). Returns whether one was written."""
        head = await self._store.audit_head()
        checkpoints = await self._store.audit_checkpoints()
        if not head[0] or (checkpoints and checkpoints[-1].seq >= head[0]):
            return False
        try:
            await self._store.add_audit_checkpoint(self._checkpoint(*head))
        except Conflict:
            return False  # a batch's own checkpoint landed on the same record meanwhile
        return True

    async def _flush_all(self) -> None:
        batch: list[tuple[AuditEvent, asyncio.Future[None]]] = []
        try:
            while self._queue:
                batch, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
                try:
                    await self._commit([event for event, _ in batch])
                except Exception as exc:  # every failure fails the batch closed
                    log.error(
                        "audit log: %d record(s) could not be written", len(batch), exc_info=exc
                    )
                    self._head = None
                    for _, done in batch:
                        if not done.done():
                            done.set_exception(Unavailable("the audit log cannot be written"))
                    continue
                self.batches.append(len(batch))
                for _, done in batch:
                    if not done.done():
                        done.set_result(None)
        finally:
            # Cancelled mid-commit (shutdown): nobody may wait for ever on a record in limbo.
            for _, done in [*batch, *self._queue]:
                if not done.done():
                    done.set_exception(Unavailable("the audit log is shutting down"))
            self._flusher = None

    async def _commit(self, events: list[AuditEvent]) -> None:
        for _ in range(_HEAD_RETRIES):
            if self._head is None:
                self._head = await self._store.audit_head()
            seq, prev = self._head
            rows: list[ChainRow] = []
            for event in events:
                seq += 1
                row = row_of(event, seq, prev)
                rows.append(row)
                prev = row.hash
            checkpoint = None
            if seq // self._every > self._head[0] // self._every:
                checkpoint = self._checkpoint(seq, prev)
            if await self._store.append_audit(rows, self._head[0], checkpoint):
                self._head = (seq, prev)
                return
            self._head = None  # another writer extended the chain: read its head and relink
        raise Unavailable("the audit chain head keeps moving")

    def _checkpoint(self, seq: int, chain_hash: bytes) -> Checkpoint:
        signature = self._signer.sign(checkpoint_message(seq, chain_hash))
        return Checkpoint(seq, chain_hash, self._clock(), signature)
