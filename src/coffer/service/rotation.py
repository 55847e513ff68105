"""``RootRotation``: a new root key generation, everything the root wraps rewrapped, the old
generations retired — online, resumable, and the same on every node.

1. ``start`` makes the next generation's key with the seal (the same seal, or another one for
   ``coffer operator migrate-seal``), stores it with its check value and makes it the active one,
   in one transaction. From then on every node wraps new blobs with it (a node that has not heard
   yet is turned back by ``sql_root.guard_generation``), and still opens blobs of the previous one.
2. ``run`` rewraps organisation KEKs, BYOK wrapping keys and purpose keys in batches, each batch
   one transaction that only replaces a blob still under the old generation (so two nodes running
   it at once do no harm). A crash loses at most the batch under way: the next ``run`` — started
   by the scheduler's next pass on whichever node holds the jobs' lease, and at every start —
   goes on where the database says it stands.
3. Once nothing is wrapped by them, the old generations are retired: their check values stay (to
   name a retired key that is offered again), their sealed copies are deleted, and each node
   destroys what it holds of them (``root.key.old``, the HSM object). With the file seal this waits
   ``grace_seconds`` after the start, so that other nodes, which hold only the old key, can take
   the new one from its transit copy first.

Old ciphertexts are untouched: key versions are wrapped by organisation KEKs, which are the same
keys before and after, only wrapped anew.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime

from coffer.crypto.root import generation_of
from coffer.crypto.wrapping import kek_aad, purpose_key_aad
from coffer.domain.seal import (
    RootGeneration,
    RootStatus,
    RootWrappedRow,
    SealConfig,
    SealType,
)
from coffer.errors import Conflict, KeyIntegrityError, Sealed
from coffer.service.changes import Changes
from coffer.service.operations import Operations
from coffer.service.root import RootOfTrust
from coffer.storage.changes import BeginRootRotation, FinishRootRotation
from coffer.storage.repositories import Change, RootStore
from coffer.storage.sql_root import RotationIncomplete

#: Commits a change with an operation's audit record.
Commit = Callable[[Change], Awaitable[None]]

log = logging.getLogger(__name__)

#: The associated data each table's blobs were wrapped with.
AAD_OF: dict[str, Callable[[str], bytes]] = {
    "organisation_keks": kek_aad,
    "purpose_keys": purpose_key_aad,
}


def _generation(row: RootWrappedRow) -> int:
    """The generation a stored blob's own header names (a malformed blob counts as current:
    nothing can rewrap it, and it must not hold a rotation up for ever)."""
    try:
        return generation_of(row.wrapped.blob)
    except KeyIntegrityError:
        log.error("integrity: the %s blob of %s is not a root-wrapped blob", row.table, row.ref)
        return 1 << 31


class RootRotation:
    def __init__(
        self,
        root: RootOfTrust,
        store: RootStore,
        changes: Changes,
        operations: Operations,
        clock: Callable[[], datetime],
        *,
        batch_size: int = 500,
        grace_seconds: float = 10.0,
    ) -> None:
        self._root = root
        self._store = store
        self._changes = changes
        self._operations = operations
        self._clock = clock
        self._batch = batch_size
        self._grace = grace_seconds
        self._running = asyncio.Lock()
        self._starting = asyncio.Lock()
        self._task: asyncio.Task[bool] | None = None

    async def status(self) -> RootStatus:
        installation = await self._store.installation()
        if installation is None:
            raise Conflict("this database holds no Coffer installation")
        active = installation.active_generation
        previous = tuple(
            g.generation
            for g in await self._store.root_generations()
            if g.live and g.generation != active
        )
        remaining = await self._store.count_wrapped_by_root_below(active) if previous else 0
        return RootStatus(installation.identity, installation.seal.type, active, previous,
                          remaining)  # fmt: skip

    async def start(self, commit: Commit, seal: SealConfig | None = None) -> RootStatus:
        """Make the next generation and store it with ``commit`` (an operation's: the change
        and its audit record together). ``seal``: move to another seal; default: the
        installation's own. ``Conflict`` if a rotation is under way."""
        async with self._starting:
            await self._root.refresh()
            if self._root.sealed:
                raise self._root.sealed_error()
            if (await self.status()).rotating:
                raise Conflict(
                    "a root rotation is already under way: see coffer operator root-status"
                )
            target = seal if seal is not None else self._root.installation.seal

            async def store(generation: RootGeneration) -> None:
                await commit(BeginRootRotation(generation, target))

            generation = await self._root.rotate(target, store)
        await self._changes.root_changed()
        log.warning(
            "root rotation to generation %d (%s seal) begun", generation.generation,
            target.type.value,
        )  # fmt: skip
        return await self.status()

    async def run(self) -> bool:
        """Drive the rotation under way (if any) to its end; ``True`` once no rotation is
        under way. One run at a time on this node; other nodes may run theirs meanwhile."""
        async with self._running:
            while True:
                status = await self.status()
                if not status.rotating:
                    return True
                if self._root.sealed:
                    return False
                if self._root.active_generation != status.active_generation:
                    await self._root.refresh()
                active = status.active_generation
                rows = await self._store.wrapped_by_root_below(active, self._batch)
                if not rows:
                    # What the columns say is done; what the blobs say counts: a blob whose
                    # own header names an old generation (a column a writer changed) is
                    # rewrapped too, before the old generation may go.
                    rows = [r for r in await self._store.all_root_wrapped()
                            if _generation(r) < active][: self._batch]  # fmt: skip
                if rows:
                    rewrapped = [
                        (row, await self._root.rewrap(row.wrapped, AAD_OF[row.table](row.ref)))
                        for row in rows
                    ]
                    await self._store.rewrap_root(rewrapped)
                    continue
                wait = self._grace_left(status)
                if wait > 0:
                    await asyncio.sleep(wait)
                    continue
                if not await self._finish(status):
                    continue  # a blob was written under an old generation meanwhile
                return True

    def _grace_left(self, status: RootStatus) -> float:
        if status.seal_type is not SealType.FILE:
            return 0.0
        active = next(g for g in self._root.generations if g.generation == status.active_generation)
        return self._grace - (self._clock() - active.created_at).total_seconds()

    async def _finish(self, status: RootStatus) -> bool:
        """Retire the old generations, with the audit record that says so; ``False`` if a blob
        is still wrapped by one of them (then nothing changed, and nothing is recorded)."""
        async with self._operations.begin_system("sys.root.rotate.complete") as op:
            op.event.resource_identity = self._root.identity
            try:
                await op.commit(FinishRootRotation(self._clock()))
            except RotationIncomplete:
                return False
        await self._store.forget_deleted()
        await self._root.refresh()
        await self._changes.root_changed()
        log.warning("root rotation complete: generation %d is the root key",
                    status.active_generation)  # fmt: skip
        return True

    def kick(self) -> None:
        """Run the rotation under way in the background on this node (if it is not running)."""
        if self._task is not None and not self._task.done():
            return
        self._task = asyncio.create_task(self._run_logged())

    async def _run_logged(self) -> bool:
        try:
            return await self.run()
        except Sealed:
            return False  # it goes on once the root is unsealed
        except Exception:
            log.exception("root rotation stopped; the next scheduler pass resumes it")
            return False

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
