"""``BatchCommitter``: turns a batch of audit events (and the key changes that go with them) into
hash-chained rows and commits them in one transaction.

Each batch's transaction locks the chain's head first and links the batch onto it, so writers
on several processes or nodes take turns without retries, in one lock order (no deadlocks).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Protocol

from coffer.audit.anchor import Anchor
from coffer.audit.chain import new_checkpoint, row_of
from coffer.audit.events import AuditEvent
from coffer.audit.sinks import RequiredSinks
from coffer.domain.audit import ChainRow, ChainTip, Checkpoint
from coffer.errors import CofferError
from coffer.storage.repositories import AuditStore, Change

#: One entry of a batch: the event, and the change committed with it (if any).
Entry = tuple[AuditEvent, Change | None]

#: The HTTP status a request's answer carries, for its record: given the action and the error.
StatusOf = Callable[[str, CofferError | None], int]


class Signer(Protocol):
    async def ready(self) -> None:
        """Load the signing key if needed (``Sealed`` while the root of trust is sealed)."""
        ...

    def sign(self, message: bytes) -> bytes: ...

    def verify(self, signature: bytes, message: bytes) -> bool: ...


class Committer(Protocol):
    async def commit(self, batch: Sequence[Entry]) -> Sequence[CofferError | None]:
        """Commit ``batch``; per entry, the refusal of its change (``None``: applied or none).
        Raises if nothing could be committed."""
        ...

    async def close(self) -> None: ...


#: Makes a link: ``(previous link, canonical record) → link`` (``AuditLinks.link``).
Link = Callable[[bytes, bytes], bytes]


class Anchored:
    """Checkpoints made and anchored: each is signed, follows the newest one, and is appended
    to the anchor file (if any) once its transaction committed."""

    def __init__(self, signer: Signer, anchor: Anchor | None, clock: Callable[[], datetime]):
        self._signer = signer
        self._anchor = anchor
        self._clock = clock

    def make(self, tip: ChainTip) -> Checkpoint:
        """A checkpoint of ``tip`` (inside the transaction that will store it)."""
        name = self._anchor.identity if self._anchor is not None else None
        return new_checkpoint(self._signer.sign, tip, name, self._clock())

    def anchor(self, checkpoint: Checkpoint | None) -> None:
        """Append a committed checkpoint to the anchor file (fsync)."""
        if checkpoint is not None and self._anchor is not None:
            self._anchor.append(checkpoint)


class BatchCommitter:
    def __init__(
        self,
        store: AuditStore,
        signer: Signer,
        link: Link,
        clock: Callable[[], datetime],
        status_of: StatusOf,
        *,
        checkpoint_every: int,
        anchor: Anchor | None = None,
        sinks: RequiredSinks | None = None,
    ) -> None:
        self._store = store
        self._signer = signer
        self._link = link
        self._status_of = status_of
        self._every = checkpoint_every
        self._checkpoints = Anchored(signer, anchor, clock)
        self._sinks = sinks

    async def close(self) -> None:
        if self._sinks is not None:
            self._sinks.close()

    async def commit(self, batch: Sequence[Entry]) -> Sequence[CofferError | None]:
        await self._signer.ready()
        made: list[Sequence[CofferError | None]] = []
        checkpoints: list[Checkpoint | None] = []

        def build(
            outcomes: Sequence[CofferError | None], start: ChainTip
        ) -> tuple[Sequence[ChainRow], Checkpoint | None]:
            # Runs inside the transaction, once the changes' outcomes are known and the head is
            # locked.
            seq, prev = start.seq, start.link
            rows: list[ChainRow] = []
            for (event, change), refused in zip(batch, outcomes, strict=True):
                if refused is not None and change is not None and change.quiet_if_refused:
                    continue  # a race another node won: nothing happened here
                if change is not None:
                    event.outcome = "success" if refused is None else "failure"
                    event.error_code = None if refused is None else refused.code
                    event.status = self._status_of(event.action, refused)
                seq += 1
                row = row_of(event, seq, prev, self._link)
                rows.append(row)
                prev = row.hash
            checkpoint = None
            if rows and seq // self._every > start.seq // self._every:
                checkpoint = self._checkpoints.make(replace(start, seq=seq, link=prev))
            if self._sinks is not None:
                # Every required sink takes the records before they commit (else nothing does).
                self._sinks.send(rows, checkpoint)
            made.append(outcomes)
            checkpoints.append(checkpoint)
            return rows, checkpoint

        await self._store.append_audit([change for _, change in batch], build)
        if checkpoints and checkpoints[-1] is not None:  # one batch in a thousand records
            await asyncio.to_thread(self._checkpoints.anchor, checkpoints[-1])
        return made[-1]
