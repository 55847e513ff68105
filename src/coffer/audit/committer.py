"""``BatchCommitter``: turns a batch of audit events (and the key changes that go with them) into
hash-chained rows and commits them in one transaction.

Each batch's transaction locks the chain's head first and links the batch onto it, so writers
on several processes or nodes take turns without retries, in one lock order (no deadlocks).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Protocol

from coffer.audit.chain import checkpoint_message, row_of
from coffer.audit.events import AuditEvent
from coffer.domain.audit import ChainRow, Checkpoint
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


def checkpoint_of(signer: Signer, seq: int, chain_hash: bytes, now: datetime) -> Checkpoint:
    return Checkpoint(seq, chain_hash, now, signer.sign(checkpoint_message(seq, chain_hash)))


class BatchCommitter:
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

    async def close(self) -> None:
        return None

    async def commit(self, batch: Sequence[Entry]) -> Sequence[CofferError | None]:
        await self._signer.ready()
        made: list[Sequence[CofferError | None]] = []

        def build(
            outcomes: Sequence[CofferError | None], start: tuple[int, bytes]
        ) -> tuple[Sequence[ChainRow], Checkpoint | None]:
            # Runs inside the transaction, once the changes' outcomes are known and the head is
            # locked.
            seq, prev = start
            rows: list[ChainRow] = []
            for (event, change), refused in zip(batch, outcomes, strict=True):
                if refused is not None and change is not None and change.quiet_if_refused:
                    continue  # a race another node won: nothing happened here
                if change is not None:
                    event.outcome = "success" if refused is None else "failure"
                    event.error_code = None if refused is None else refused.code
                    event.status = self._status_of(event.action, refused)
                seq += 1
                row = row_of(event, seq, prev)
                rows.append(row)
                prev = row.hash
            checkpoint = None
            if rows and seq // self._every > start[0] // self._every:
                checkpoint = checkpoint_of(self._signer, seq, prev, self._clock())
            made.append(outcomes)
            return rows, checkpoint

        await self._store.append_audit([change for _, change in batch], build)
        return made[-1]
