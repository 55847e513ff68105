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
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Protocol

from coffer.audit.chain import checkpoint_message, prune_message, row_of
from coffer.audit.events import AuditEvent
from coffer.domain.audit import ChainRow, Checkpoint, PruneMark
from coffer.errors import CofferError, Conflict, Unavailable
from coffer.storage.repositories import AuditStore, KeyWrite

log = logging.getLogger(__name__)

MAX_BATCH = 1000
_HEAD_RETRIES = 5


class Signer(Protocol):
    def sign(self, message: bytes) -> bytes: ...

    def verify(self, signature: bytes, message: bytes) -> bool: ...


#: The HTTP status a request's answer carries, for its record: given the action and the error.
StatusOf = Callable[[str, CofferError | None], int]

_Entry = tuple[AuditEvent, KeyWrite | None, "asyncio.Future[None]"]


class AuditLog:
    def __init__(
        self,
        store: AuditStore,
        signer: Signer,
        clock: Callable[[], datetime],
        status_of: StatusOf,
        *,
        checkpoint_every: int,
    ) -> None:
        self._store = store
        self._signer = signer
        self._clock = clock
        self._status_of = status_of
        self._every = checkpoint_every
        self._queue: list[_Entry] = []
        self._flusher: asyncio.Task[None] | None = None
        self._head: tuple[int, bytes] | None = None
        #: Sizes of the latest batches committed (the group-commit figure for metrics).
        self.batches: deque[int] = deque(maxlen=1000)

    async def write(self, event: AuditEvent, change: KeyWrite | None = None) -> None:
        """Return once ``event`` is durable. With a ``change``, the change is applied in the
        same transaction: both or neither. If the change is refused (``Conflict``: the key
        moved), the event is recorded as that failure and the error is raised here."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append((event, change, done))
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

    async def prune(self, cutoff: datetime) -> int:
        """Delete records older than ``cutoff``, but only up to the newest checkpoint made before
        it, so that the chain stays verifiable from that signed anchor; a signed prune mark says
        the records before it were removed on purpose. Returns how many went."""
        anchors = [cp for cp in await self._store.audit_checkpoints() if cp.created_at < cutoff]
        pruned = await self._store.audit_prune_marks()
        if not anchors or (pruned and pruned[-1].seq >= anchors[-1].seq):
            return 0
        seq = anchors[-1].seq
        mark = PruneMark(seq, self._clock(), self._signer.sign(prune_message(seq)))
        return await self._store.prune_audit(mark)

    async def _flush_all(self) -> None:
        batch: list[_Entry] = []
        try:
            while self._queue:
                batch, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
                try:
                    outcomes = await self._commit(batch)
                except Exception as exc:  # every failure fails the batch closed
                    log.error(
                        "audit log: %d record(s) could not be written", len(batch), exc_info=exc
                    )
                    self._head = None
                    for _, _, done in batch:
                        if not done.done():
                            done.set_exception(Unavailable("the audit log cannot be written"))
                    continue
                self.batches.append(len(batch))
                for (_, _, done), refused in zip(batch, outcomes, strict=True):
                    if done.done():
                        continue
                    if refused is None:
                        done.set_result(None)
                    else:
                        done.set_exception(refused)
        finally:
            # Cancelled mid-commit (shutdown): nobody may wait for ever on a record in limbo.
            for _, _, done in [*batch, *self._queue]:
                if not done.done():
                    done.set_exception(Unavailable("the audit log is shutting down"))
            self._flusher = None

    async def _commit(self, batch: list[_Entry]) -> Sequence[CofferError | None]:
        """Commit the batch; the outcome of each entry's change (``None``: applied or none)."""
        for _ in range(_HEAD_RETRIES):
            if self._head is None:
                self._head = await self._store.audit_head()
            start = self._head
            made: list[tuple[int, bytes, Sequence[CofferError | None]]] = []

            def build(
                outcomes: Sequence[CofferError | None],
                start: tuple[int, bytes] = start,
                made: list[tuple[int, bytes, Sequence[CofferError | None]]] = made,
            ) -> tuple[Sequence[ChainRow], Checkpoint | None]:
                # Runs inside the transaction, once the changes' outcomes are known.
                seq, prev = start
                rows: list[ChainRow] = []
                for (event, change, _), refused in zip(batch, outcomes, strict=True):
                    if refused is not None and change is not None and change.quiet_if_refused:
                        continue  # a race another node won: nothing happened here
                    if change is not None:  # decided now (again, on a retry)
                        event.outcome = "success" if refused is None else "failure"
                        event.error_code = None if refused is None else refused.code
                        event.status = self._status_of(event.action, refused)
                    seq += 1
                    row = row_of(event, seq, prev)
                    rows.append(row)
                    prev = row.hash
                checkpoint = None
                if rows and seq // self._every > start[0] // self._every:
                    checkpoint = self._checkpoint(seq, prev)
                made.append((seq, prev, outcomes))
                return rows, checkpoint

            changes = [change for _, change, _ in batch]
            if await self._store.append_audit(start[0], changes, build):
                seq, prev, outcomes = made[-1]
                self._head = (seq, prev)
                return outcomes
            self._head = None  # another writer extended the chain: read its head and relink
        raise Unavailable("the audit chain head keeps moving")

    def _checkpoint(self, seq: int, chain_hash: bytes) -> Checkpoint:
        signature = self._signer.sign(checkpoint_message(seq, chain_hash))
        return Checkpoint(seq, chain_hash, self._clock(), signature)
