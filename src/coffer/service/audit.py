"""``AuditService``: reading an organisation's audit records (spec §8)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from coffer.domain.audit import AuditFilter
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
        """One page of the caller's organisation's records (of its project only, for a token
        limited to one); needs ``audit:ReadAccess`` on the organisation."""
        async with self._ops.begin(meta, None) as op:
            caller = await op.authorise(require_feature=False)
            if Action.AUDIT_READ not in caller.grants.organisation:
                raise Forbidden()
            given = query()
            if given.matches_nothing:
                return AuditPage([], 0, given.page, given.limit)
            audit_filter = given.audit_filter
            if op.limited_to_project:
                # A token limited to one project reads that project's records only, whatever
                # its user may read in the organisation.
                assert caller.project is not None
                audit_filter = replace(audit_filter, project_identity=caller.project.identity)
            records, total = await self._store.audit_page(
                caller.organisation.identity,
                audit_filter,
                (given.page - 1) * given.limit,
                given.limit,
            )
            return AuditPage(records, total, given.page, given.limit)
