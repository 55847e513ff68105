"""The one place every request passes through: who is calling, the audit record, and the change.

Each service method runs inside ``async with operations.begin(meta, action) as op``. The operation
authenticates the caller (spec §1.1 steps 1–4), collects what the request touched, and writes
exactly one audit record, success or failure. A request that changes anything hands its change
(``coffer.storage.changes``) to ``op.commit``: the change and the record are committed in one
transaction, so a change is never stored without its record, and a record that cannot be written
leaves no change. If the record cannot be written the request fails with ``Unavailable`` (fail
closed).
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from datetime import datetime
from types import TracebackType

from coffer.audit.events import AuditEvent, AuditSink
from coffer.domain.keys import Key
from coffer.domain.regions import Region
from coffer.domain.tenants import Organisation, Principal, Project
from coffer.errors import (
    CofferError,
    Forbidden,
    Internal,
    KmsNotEnabled,
    Unavailable,
)
from coffer.service.access import AccessService
from coffer.service.context import Caller, RequestMeta
from coffer.storage.repositories import Change

log = logging.getLogger(__name__)

#: The status a request's answer carries, for the audit record: given the action and the error
#: (``None`` on success). Supplied by the composition root, which knows the API's table.
StatusOf = Callable[[str, CofferError | None], int]


class Operation:
    __slots__ = ("_access", "_meta", "_recorded", "_sink", "_status_of", "event")

    def __init__(
        self,
        access: AccessService,
        sink: AuditSink | None,
        status_of: StatusOf,
        meta: RequestMeta,
        event: AuditEvent,
    ) -> None:
        self._access = access
        self._sink = sink
        self._status_of = status_of
        self._recorded = False
        self._meta = meta
        self.event = event

    async def authenticate(self) -> Principal:
        """Who is calling (spec §1.1 step 1), recorded in the audit event."""
        principal, _ = await self._authenticate()
        return principal

    async def authenticate_claims(self) -> tuple[Principal, str | None]:
        """Who is calling, and the project an OpenID Connect token limits them to (if any)."""
        return await self._authenticate()

    async def _authenticate(self) -> tuple[Principal, str | None]:
        principal, project = await self._access.authenticate_claims(self._meta.token)
        self.event.principal_identity = principal.identity
        self.event.principal_kind = principal.kind.value
        return principal, project

    def in_organisation(self, organisation: Organisation, project: Project | None = None) -> None:
        self.event.organisation_identity = organisation.identity
        self.event.project_identity = project.identity if project is not None else None

    async def authorise(self, *, require_feature: bool = True) -> Caller:
        principal, claimed_project = await self._authenticate()
        project_ref = self._meta.project_ref
        if claimed_project is not None:
            # An OpenID Connect token that names a project acts in that project only.
            if project_ref is not None and project_ref != claimed_project:
                raise Forbidden("the token is for another project")
            project_ref = claimed_project
        caller = await self._access.caller(principal, self._meta.organisation_ref, project_ref)
        self.in_organisation(caller.organisation, caller.project)
        if require_feature and not caller.organisation.kms_enabled:
            raise KmsNotEnabled()
        return caller

    async def commit(self, change: Change) -> None:
        """Apply ``change`` together with this operation's audit record: both are committed or
        neither (a change is never left without its record). Raises the change's refusal
        (``Conflict`` if what it changes moved since it was read, …), recorded as the
        request's failure, or ``Unavailable`` if the log cannot be written."""
        if self._sink is None:
            raise AssertionError("a change needs an operation with an audit action")
        self._recorded = True
        self.event.status = self._status_of(self.event.action, None)
        if change.object_version is not None:
            self.event.object_version = change.object_version
        try:
            await self._sink.write(self.event, change)
        except CofferError:
            raise
        except Exception as write_error:
            log.exception("audit record %s could not be written", self.event.event_id)
            raise Unavailable("the audit log cannot be written") from write_error

    def at_region(self, region: Region) -> None:
        self.event.region = region.slug

    def touch(self, key: Key) -> None:
        self.event.resource_identity = key.identity
        self.event.key_slug = key.slug
        self.event.key_type = key.key_type.value

    async def __aenter__(self) -> Operation:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        error = None
        if exc is not None:
            error = exc if isinstance(exc, CofferError) else Internal()
            self.event.outcome = "failure"
            self.event.error_code = error.code
        if self._sink is None or self._recorded:
            return
        self.event.status = self._status_of(self.event.action, error)
        try:
            await self._sink.write(self.event)
        except Exception as write_error:
            log.exception("audit record %s could not be written", self.event.event_id)
            raise Unavailable("the audit log cannot be written") from write_error


class Operations:
    def __init__(
        self,
        access: AccessService,
        sink: AuditSink,
        clock: Callable[[], datetime],
        status_of: StatusOf,
    ) -> None:
        self._access = access
        self._sink = sink
        self._clock = clock
        self._status_of = status_of

    def begin_system(self, action: str) -> Operation:
        """An operation the server performs by itself (scheduled rotation, purge)."""
        meta = RequestMeta(request_id=secrets.token_hex(16))
        operation = self.begin(meta, action)
        operation.event.principal_kind = "system"
        return operation

    def begin(self, meta: RequestMeta, action: str | None) -> Operation:
        """An operation for ``action`` (``None``: a read the audit table does not list)."""
        event = AuditEvent(
            event_id=secrets.token_hex(16),
            created_at=self._clock(),
            action=action or "",
            request_id=meta.request_id,
            client_ip=meta.client_ip,
            user_agent=meta.user_agent,
        )
        sink = self._sink if action else None
        return Operation(self._access, sink, self._status_of, meta, event)
