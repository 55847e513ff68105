"""``LifecycleService``: versions, rotation, disable/enable, deletion and purge (spec §5.9, §5.12).

Every change follows one pattern, as Vault Transit's rotation does: the domain computes the
changed key in memory, one transaction writes it together with its audit record (guarded by
``objectVersion``, so a concurrent change makes this one fail instead of overwriting it), and
only after the commit do the caches learn of it. A failed write leaves the key exactly as it
was, stored and cached, and a change is never stored without its record.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from coffer.crypto.algorithms import algorithm_for
from coffer.domain.keys import Key
from coffer.domain.permissions import Action
from coffer.errors import Conflict, EncryptionBudgetExhausted, QuotaExceeded
from coffer.service.changes import Changes
from coffer.service.context import Input, RequestMeta
from coffer.service.keyring import Keyring
from coffer.service.keys import Scoped
from coffer.service.operations import Operation, Operations
from coffer.service.scope import KeyScope
from coffer.service.work import ExpensiveWork
from coffer.storage.changes import KeyWrite


@dataclass(frozen=True, slots=True)
class RotationSettings:
    enabled: bool | None
    period_days: int | None


Change = Callable[[Key, datetime], Key]


class LifecycleService:
    def __init__(
        self,
        operations: Operations,
        keyring: Keyring,
        scope: KeyScope,
        clock: Callable[[], datetime],
        retention: timedelta,
        changes: Changes,
        *,
        max_versions: int = 1_000,
        budget: int = 1 << 30,
        work: ExpensiveWork | None = None,
    ) -> None:
        self._work = work or ExpensiveWork(threads=2, queue=64)
        self._max_versions = max_versions
        self._budget = budget
        self._spent = asyncio.Lock()
        self._changes = changes
        self._ops = operations
        self._keyring = keyring
        self._scope = scope
        self._clock = clock
        self._retention = retention

    # --- writes shared by every change ----------------------------------------------------------

    async def _rotate(self, op: Operation, key: Key, now: datetime, *, quiet: bool = False) -> Key:
        if key.latest_version >= self._max_versions:
            raise QuotaExceeded(
                f"the key has {key.latest_version} versions, its quota is {self._max_versions}: "
                "create a new key and move to it, or ask the operator to raise "
                "max_versions_per_key"
            )
        rotated = key.rotate(now)
        version = rotated.latest_version
        op.event.key_version = version
        algorithm = algorithm_for(rotated.key_type)
        material = await self._work.generate(rotated.key_type, algorithm.generate)
        handle = algorithm.load(material)
        wrapped = await self._keyring.wrap(rotated, version, material)
        # One transaction, with the audit record: the key row moves to version N+1 only together
        # with the new version's row; the (key, version) primary key makes a concurrent rotation
        # to N+1 fail as a whole.
        try:
            await op.commit(
                KeyWrite(update=rotated, new_version=(version, wrapped), quiet_if_refused=quiet)
            )
        finally:
            # Also when the commit's outcome is unknown (it may have landed): an extra
            # invalidation costs one read, a missing one leaves every node stale.
            await self._changes.key_changed(rotated)
        self._keyring.remember(rotated, version, handle)
        return rotated

    async def _change(
        self,
        meta: RequestMeta,
        audit_action: str,
        region_ref: str,
        key_ref: str,
        action: Action,
        change: Change,
    ) -> Scoped:
        async with self._ops.begin(meta, audit_action) as op:
            caller = await op.authorise()
            region = self._scope.region(op, region_ref)
            key = await self._scope.authorised_key(op, caller, region, key_ref, action)
            changed = change(key, self._clock())
            try:
                await op.commit(KeyWrite(update=changed))
            finally:
                await self._changes.key_changed(changed)
            return Scoped(changed, caller)

    # --- operations -----------------------------------------------------------------------------

    async def rotate(self, meta: RequestMeta, region_ref: str, key_ref: str) -> Scoped:
        async with self._ops.begin(meta, "kms.rotate") as op:
            caller = await op.authorise()
            region = self._scope.region(op, region_ref)
            key = await self._scope.authorised_key(op, caller, region, key_ref, Action.ROTATE)
            rotated = await self._rotate(op, key, self._clock())
            return Scoped(rotated, caller)

    async def update_rotation(
        self, meta: RequestMeta, region_ref: str, key_ref: str, settings: Input[RotationSettings]
    ) -> Scoped:
        def change(key: Key, now: datetime) -> Key:
            given = settings()
            return key.update_rotation(now, enabled=given.enabled, period_days=given.period_days)

        return await self._change(
            meta, "kms.rotation.update", region_ref, key_ref, Action.UPDATE_ROTATION, change
        )

    async def disable(self, meta: RequestMeta, region_ref: str, key_ref: str) -> Scoped:
        return await self._change(
            meta, "kms.key.disable", region_ref, key_ref, Action.DISABLE, Key.disable
        )

    async def enable(self, meta: RequestMeta, region_ref: str, key_ref: str) -> Scoped:
        return await self._change(
            meta, "kms.key.enable", region_ref, key_ref, Action.ENABLE, Key.enable
        )

    async def schedule_deletion(self, meta: RequestMeta, region_ref: str, key_ref: str) -> Scoped:
        def change(key: Key, now: datetime) -> Key:
            return key.schedule_deletion(now, self._retention)

        return await self._change(
            meta, "kms.key.delete", region_ref, key_ref, Action.DELETE, change
        )

    async def cancel_deletion(self, meta: RequestMeta, region_ref: str, key_ref: str) -> Scoped:
        return await self._change(
            meta,
            "kms.key.cancel_deletion",
            region_ref,
            key_ref,
            Action.CANCEL_DELETION,
            Key.cancel_deletion,
        )

    async def set_min_decryption_version(
        self, meta: RequestMeta, region_ref: str, key_ref: str, version: Input[int]
    ) -> Scoped:
        def change(key: Key, now: datetime) -> Key:
            return key.set_min_decryption_version(now, version())

        return await self._change(
            meta, "kms.versions.update", region_ref, key_ref, Action.ROTATE, change
        )

    # --- the scheduler's operations (no caller: the server itself acts) --------------------------

    async def rotate_due(self, key: Key, now: datetime) -> Key:
        """Rotate ``key`` because its period elapsed. ``Conflict`` (and no audit record) if
        another node did it first."""
        async with self._ops.begin_system("kms.rotate.scheduled") as op:
            op.touch(key)
            return await self._rotate(op, key, now, quiet=True)

    async def rotate_spent(self, key: Key, version: int) -> Key:
        """Rotate ``key`` because ``version`` spent its encryption budget, even with automatic
        rotation off (``kms.rotate.budget``, by the system). Returns the key as it is now:
        rotated here, or already by another request or node. ``EncryptionBudgetExhausted`` if
        the key may not rotate (imported material without ``allowRotation``)."""
        async with self._spent:
            current = await self._scope.current(key) or key
            if current.latest_version > version:
                return current  # rotated meanwhile
            if current.imported and not current.allow_rotation:
                raise EncryptionBudgetExhausted(
                    f"version {version} of this imported key has made its {self._budget} "
                    "encryptions (random nonces allow no more); import new material as a new "
                    "key, or create the key with allowRotation"
                )
            try:
                async with self._ops.begin_system("kms.rotate.budget") as op:
                    op.touch(current)
                    return await self._rotate(op, current, self._clock(), quiet=True)
            except Conflict:
                return await self._scope.current(key) or key  # another node rotated it

    async def purge(self, key: Key) -> None:
        """Destroy a key whose retention elapsed: its row, every version, all wrapped material.
        ``Conflict`` (and no audit record) if it changed since it was read."""
        async with self._ops.begin_system("kms.key.purge") as op:
            op.touch(key)
            try:
                await op.commit(KeyWrite(delete=key, quiet_if_refused=True))
            finally:
                await self._changes.key_destroyed(key)
