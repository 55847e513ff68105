"""``AuditService``: reading an organisation's audit records (spec §8)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from coffer.audit.chain import prune_message
from coffer.audit.log import Signer
from coffer.domain.audit import AuditFilter, PruneMark
from coffer.domain.permissions import Action
from coffer.errors import Forbidden
from coffer.service.context import Input, RequestMeta
from coffer.service.operations import Operations
from coffer.storage.repositories import AuditStore


@dataclass(frozen=True, slots=True)
class AuditQuery:
    audit_filter: AuditFilter
    page: int
    limit: int
    matches_nothing: bool = False


@dataclass(frozen=True, slots=True)
class AuditPage:
    records: Sequence[str]  # canonical JSON, newest first
    total: int
    page: int
    limit: int


class AuditService:
    def __init__(self, store: AuditStore, operations: Operations) -> None:
        self._store = store
        self._ops = operations

    async def list(self, meta: RequestMeta, query: Input[AuditQuery]) -> AuditPage:
        """One page of the caller's organisation's records; needs ``audit:ReadAccess`` on it."""
        async with self._ops.begin(meta, None) as op:
            caller = await op.authorise(require_feature=False)
            if Action.AUDIT_READ not in caller.grants.organisation:
                raise Forbidden()
            given = query()
            if given.matches_nothing:
                return AuditPage([], 0, given.page, given.limit)
            records, total = await self._store.audit_page(
                caller.organisation.identity,
                given.audit_filter,
                (given.page - 1) * given.limit,
                given.limit,
            )
            return AuditPage(records, total, given.page, given.limit)


async def prune_before(store: AuditStore, signer: Signer, cutoff: datetime, now: datetime) -> int:
    """Delete records older than ``cutoff``, but only up to the newest checkpoint made before it,
    so that the chain stays verifiable from that signed anchor; a signed prune mark says the
    records before it were removed on purpose. Returns how many went."""
    anchors = [cp for cp in await store.audit_checkpoints() if cp.created_at < cutoff]
    pruned = await store.audit_prune_marks()
    if not anchors or (pruned and pruned[-1].seq >= anchors[-1].seq):
        return 0
    seq = anchors[-1].seq
    return await store.prune_audit(PruneMark(seq, now, signer.sign(prune_message(seq))))
