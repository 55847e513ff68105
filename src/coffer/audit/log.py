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

from coffer.audit.anchor import Anchor
from coffer.audit.chain import prune_message
from coffer.audit.committer import Anchored, Committer, Signer
from coffer.audit.events import AuditEvent
from coffer.audit.sinks import RequiredSinks
from coffer.domain.audit import ChainTip, Checkpoint, PruneMark
from coffer.errors import Unavailable
from coffer.logs import Throttled, dependency_of
from coffer.storage.repositories import AuditStore, Change

log = logging.getLogger(__name__)
#: A disk that stays full fails every batch: its traceback once, then a count a minute.
failures = Throttled(log)

MAX_BATCH = 1000

_Entry = tuple[AuditEvent, Change | None, "asyncio.Future[None]"]


class AuditLog:
    def __init__(
        self,
        store: AuditStore,
        signer: Signer,
        clock: Callable[[], datetime],
        committer: Committer,
        *,
        anchor: Anchor | None = None,
        batch_meter: Callable[[int], None] | None = None,
        sinks: RequiredSinks | None = None,
    ) -> None:
        self._store = store
        self._signer = signer
        self._clock = clock
        self._committer = committer
        self._checkpoints = Anchored(signer, anchor, clock)
        self._anchor = anchor
        self._batch_meter = batch_meter
        self._sinks = sinks
        self._queue: list[_Entry] = []
        self._flusher: asyncio.Task[None] | None = None
        #: Sizes of the latest batches committed (the group-commit figure for metrics).
        self.batches: deque[int] = deque(maxlen=1000)

    async def write(self, event: AuditEvent, change: Change | None = None) -> None:
        """Return once ``event`` is durable. With a ``change``, the change is applied in the
        same transaction: both or neither. If the change is refused (``Conflict``, …), the
        event is recorded as that failure and the error is raised here."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append((event, change, done))
        if self._flusher is None:
            self._flusher = asyncio.create_task(self._flush_all())
        await done

    async def probe(self) -> None:
        """``Unavailable`` unless a batch could be committed now: an empty batch goes the whole
        way (the writer process, started again if it died; its database connection; the
        chain's head locked), and the anchor file can be appended to."""
        try:
            await self._committer.commit([])
        except Unavailable:
            raise
        except Exception as exc:
            raise Unavailable("the audit log cannot be written") from exc
        if self._anchor is not None:
            try:
                await asyncio.to_thread(self._anchor.probe)
            except OSError as exc:
                raise Unavailable("the audit anchor cannot be written") from exc

    async def close(self) -> None:
        """Let the records under way commit, then sign a checkpoint of the chain's end."""
        while self._flusher is not None:
            await asyncio.shield(self._flusher)
        await self._committer.close()
        try:
            await self.checkpoint()
        except Exception as exc:  # the records are stored; the tail waits for the next start
            log.error("audit log: the closing checkpoint could not be written", exc_info=exc)
        finally:
            if self._sinks is not None:
                self._sinks.close()

    async def checkpoint(self) -> bool:
        """Sign a checkpoint of the chain as it stands, unless one covers it already (the
        scheduler calls this every pass: a cut-off tail is then detectable after one interval,
        however few records came). Returns whether one was written."""
        await self._signer.ready()

        def build(tip: ChainTip) -> Checkpoint | None:
            newest = tip.newest_checkpoint()
            if not tip.seq or (newest is not None and newest.seq >= tip.seq):
                return None  # nothing new since the newest checkpoint
            checkpoint = self._checkpoints.make(tip)
            if self._sinks is not None:
                self._sinks.send([], checkpoint)  # refused: the checkpoint is not stored
            return checkpoint

        made = await self._store.add_audit_checkpoint(build)
        if made is None:
            return False
        await asyncio.to_thread(self._checkpoints.anchor, made)
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
        await self._signer.ready()
        mark = PruneMark(seq, self._clock(), self._signer.sign(prune_message(seq)))
        return await self._store.prune_audit(mark)

    async def _flush_all(self) -> None:
        batch: list[_Entry] = []
        try:
            while self._queue:
                batch, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
                try:
                    outcomes = await self._committer.commit(
                        [(event, change) for event, change, _ in batch]
                    )
                except Exception as exc:  # every failure fails the batch closed
                    away = dependency_of(exc)  # the database or a sink: its state said so
                    if away is None:
                        failures.failure(logging.ERROR, type(exc).__name__,
                                         "audit log: %d record(s) could not be written",
                                         len(batch), exc_info=exc)  # fmt: skip
                    for _, _, done in batch:
                        if not done.done():
                            done.set_exception(
                                Unavailable("the audit log cannot be written", dependency=away)
                            )
                    continue
                self.batches.append(len(batch))
                if self._batch_meter is not None:
                    self._batch_meter(len(batch))
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
