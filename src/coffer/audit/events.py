"""The audit record and the sink it is written to (spec §8).

A record holds identities, sizes and outcomes only: never plaintext, ciphertext, signatures,
MACs, key material or tokens.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from coffer.storage.repositories import Change


@dataclass(slots=True)
class AuditEvent:
    event_id: str
    created_at: datetime
    action: str
    request_id: str
    client_ip: str | None = None
    user_agent: str | None = None
    principal_identity: str | None = None
    principal_kind: str | None = None
    organisation_identity: str | None = None
    project_identity: str | None = None
    resource_identity: str | None = None
    region: str | None = None
    key_slug: str | None = None
    key_type: str | None = None
    key_version: int | None = None
    outcome: str = "success"
    status: int = 200
    error_code: str | None = None
    plaintext_bytes: int | None = None
    ciphertext_bytes: int | None = None
    #: The version of the row the action changed, after it (the storage barrier compares a
    #: row's version with the newest change recorded of it: docs/security.md).
    object_version: int | None = None
    #: ``auth.failures.suppressed``: how many failed authentications the record stands for.
    count: int | None = None


class AuditSink(Protocol):
    async def write(self, event: AuditEvent, change: Change | None = None) -> None:
        """Persist ``event`` and apply ``change`` with it, both or neither; return only once
        both are durable. Raise if the record cannot be written (then the change is not
        applied either), or the change's refusal (then the record says so)."""
        ...


class ApplyingSink:
    """Keeps no record: applies each change on its own, and shows the event to ``observe`` if
    given. For the benchmark that measures what the audit log costs (``audit_sink =
    "discard"``) and for tests that look at events; never what a server records with."""

    def __init__(
        self,
        apply: Callable[[Change], Awaitable[None]],
        observe: Callable[[AuditEvent], Awaitable[None]] | None = None,
    ) -> None:
        self._apply = apply
        self._observe = observe

    async def write(self, event: AuditEvent, change: Change | None = None) -> None:
        if change is not None:
            await self._apply(change)
        if self._observe is not None:
            await self._observe(event)
