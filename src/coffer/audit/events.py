"""The audit record and the sink it is written to (spec §8).

A record holds identities, sizes and outcomes only: never plaintext, ciphertext, signatures,
MACs, key material or tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol


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


class AuditSink(Protocol):
    async def write(self, event: AuditEvent) -> None:
        """Persist ``event``; return only once it is durable. Raise if it cannot be written."""
        ...


class DiscardingSink:
    """Keeps nothing. The durable, hash-chained sink replaces it; until then, and in
    benchmarks that measure what the audit costs, requests pass through this one."""

    async def write(self, event: AuditEvent) -> None:
        return None
