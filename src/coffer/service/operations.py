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

import asyncio
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
    Unauthenticated,
    Unavailable,
)
from coffer.service.access import AccessService
from coffer.service.context import Caller, RequestMeta
from coffer.service.limits import RateLimits
from coffer.storage.repositories import Change

log = logging.getLogger(__name__)

#: The status a request's answer carries, for the audit record: given the action and the error
#: (``None`` on success). Supplied by the composition root, which knows the API's table.
StatusOf = Callable[[str, CofferError | None], int]


#: Sources tracked at once by ``AuthFailures`` (beyond: the longest-idle one is forgotten).
MAX_SOURCES = 10_000
#: The action of the record that stands for the failed authentications not recorded one by one.
SUPPRESSED_ACTION = "auth.failures.suppressed"


class AuthFailures:
    """Failed authentications (401) per source address, on a token bucket: the first
    ``per_minute`` of a source are recorded one by one (refilled at that rate), the rest are
    counted and recorded as one ``auth.failures.suppressed`` record per source each minute. A
    flood of bad tokens cannot fill the audit log's disk, and is still on record."""

    def __init__(self, per_minute: int, timer: Callable[[], float]) -> None:
        self._rate = float(per_minute)
        self._timer = timer
        self._buckets: dict[str, tuple[float, float]] = {}  # source → (tokens, when)
        self._suppressed: dict[str, int] = {}

    def admit(self, source: str | None) -> bool:
        """Whether this failure of ``source`` is recorded on its own (else it is counted)."""
        key = source or "unknown"
        now = self._timer()
        tokens, then = self._buckets.pop(key, (self._rate, now))
        tokens = min(self._rate, tokens + (now - then) * self._rate / 60.0)
        admitted = tokens >= 1.0
        self._buckets[key] = (tokens - 1.0 if admitted else tokens, now)  # newest last
        if len(self._buckets) > MAX_SOURCES:
            del self._buckets[next(iter(self._buckets))]
        if not admitted:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
        return admitted

    def take(self) -> dict[str, int]:
        """The failures counted since the last call, per source."""
        taken, self._suppressed = self._suppressed, {}
        return taken


class Operation:
    __slots__ = (
        "_access",
        "_auth_failed",
        "_failures",
        "_limits",
        "_meta",
        "_recorded",
        "_sink",
        "_status_of",
        "event",
        "limited_to_project",
    )

    def __init__(
        self,
        access: AccessService,
        sink: AuditSink | None,
        status_of: StatusOf,
        meta: RequestMeta,
        event: AuditEvent,
        failures: AuthFailures | None = None,
        limits: RateLimits | None = None,
    ) -> None:
        self._access = access
        self._sink = sink
        self._status_of = status_of
        self._recorded = False
        self._meta = meta
        self._failures = failures
        self._limits = limits
        self._auth_failed = False
        self.event = event
        #: Whether the caller's token limits it to one project (``authorise`` finds out).
        self.limited_to_project = False

    async def authenticate(self) -> Principal:
        """Who is calling (spec §1.1 step 1), recorded in the audit event; within its rate."""
        principal, _ = await self._authenticate()
        self._within_rate(principal)
        return principal

    async def authenticate_claims(self) -> tuple[Principal, str | None]:
        """Who is calling, and the project an OpenID Connect token limits them to (if any)."""
        principal, project = await self._authenticate()
        self._within_rate(principal)
        return principal, project

    def _within_rate(self, principal: Principal) -> None:
        if self._limits is not None:
            self._limits.principal(principal.identity)

    async def _authenticate(self) -> tuple[Principal, str | None]:
        try:
            principal, project = await self._access.authenticate_claims(self._meta.token)
        except Unauthenticated:
            self._auth_failed = True
            if self._limits is not None:
                self._limits.failed_authentication(self._meta.client_ip)  # 429 beyond the rate
            raise
        self.event.principal_identity = principal.identity
        self.event.principal_kind = principal.kind.value
        return principal, project

    def in_organisation(self, organisation: Organisation, project: Project | None = None) -> None:
        self.event.organisation_identity = organisation.identity
        self.event.project_identity = project.identity if project is not None else None

    async def authorise(self, *, require_feature: bool = True) -> Caller:
        principal, claimed_project = await self._authenticate()
        self.limited_to_project = claimed_project is not None
        project_ref = self._meta.project_ref
        if claimed_project is not None:
            # An OpenID Connect token that names a project acts in that project only.
            if project_ref is not None and project_ref != claimed_project:
                raise Forbidden("the token is for another project")
            project_ref = claimed_project
        caller = await self._access.caller(principal, self._meta.organisation_ref, project_ref)
        self.in_organisation(caller.organisation, caller.project)
        self._within_rate(principal)  # its record names the organisation
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
        if (
            (self._auth_failed or isinstance(error, Unauthenticated))  # 401, or 429 beyond
            and self._failures is not None
            and not self._failures.admit(self.event.client_ip)
        ):
            return  # counted, and recorded in the source's summary of the minute
        self.event.status = self._status_of(self.event.action, error)
        try:
            await self._sink.write(self.event)
        except CofferError:
            raise  # the log said why, once for the batch
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
        failures: AuthFailures | None = None,
        limits: RateLimits | None = None,
    ) -> None:
        self._access = access
        self._sink = sink
        self._clock = clock
        self._status_of = status_of
        self._failures = failures
        self._limits = limits

    async def record_suppressed(self) -> int:
        """Write one ``auth.failures.suppressed`` record per source whose failed
        authentications were counted rather than recorded; returns how many failures they
        stand for."""
        if self._failures is None:
            return 0
        total = 0
        for source, count in self._failures.take().items():
            event = AuditEvent(
                event_id=secrets.token_hex(16), created_at=self._clock(),
                action=SUPPRESSED_ACTION, request_id=secrets.token_hex(16),
                client_ip=None if source == "unknown" else source, principal_kind="anonymous",
                outcome="failure", status=401, error_code=Unauthenticated.code, count=count,
            )  # fmt: skip
            try:
                await self._sink.write(event)
            except Exception:
                log.exception("the summary of %d failed authentications of %s is lost", count,
                              source)  # fmt: skip
                continue
            total += count
        return total

    async def record_suppressed_forever(self, every: float = 60.0) -> None:
        """``record_suppressed`` every ``every`` seconds (a server's background job)."""
        while True:
            await asyncio.sleep(every)
            await self.record_suppressed()

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
        return Operation(
            self._access, sink, self._status_of, meta, event, self._failures, self._limits
        )
