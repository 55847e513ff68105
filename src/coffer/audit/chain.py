"""The audit record's canonical form, the chain of links over records, and checkpoints.

A record is stored as canonical JSON (sorted keys, no spaces, UTF-8) in the shape of spec §8, with
its sequence number inside. Record n links to record n-1: ``link_n = HMAC-SHA-256(k_audit,
link_{n-1} ‖ json_n)`` under the audit link purpose key, starting from 32 zero bytes; records
written before keyed links (those before the installation's ``keyed_from``) were linked with
``SHA-256(link_{n-1} ‖ json_n)``. Changing, removing or reordering any record breaks every later
link, and without the key nobody can link again. Signed checkpoints of (seq, link, the previous
checkpoint's digest, keyed_from, anchor, time) form a chain of their own, and are also appended to
an anchor file outside the database (``coffer.audit.anchor``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from coffer.audit.events import AuditEvent
from coffer.domain.audit import ChainRow, ChainTip, Checkpoint, resource_type_of

GENESIS = b"\x00" * 32


def iso_utc(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def record_of(event: AuditEvent, seq: int) -> dict[str, Any]:
    """The spec §8 record of ``event`` (identities, sizes and outcomes; never secrets)."""
    is_user = event.principal_kind == "user"
    record: dict[str, Any] = {
        "seq": seq,
        "eventId": event.event_id,
        "createdAt": iso_utc(event.created_at),
        "userIdentity": event.principal_identity if is_user else None,
        "serviceAccountIdentity": None if is_user else event.principal_identity,
        "principalKind": event.principal_kind,
        "organizationIdentity": event.organisation_identity,
        "projectId": event.project_identity,
        "action": event.action,
        "resourceType": resource_type_of(event.action),
        "resourceIdentity": event.resource_identity,
        "context": {
            "region": event.region,
            "keySlug": event.key_slug,
            "keyType": event.key_type,
            "keyVersion": event.key_version,
            "outcome": event.outcome,
            "status": event.status,
            "errorCode": event.error_code,
            "plaintextBytes": event.plaintext_bytes,
            "ciphertextBytes": event.ciphertext_bytes,
            "objectVersion": event.object_version,
            "client_ip": event.client_ip,
            "user_agent": event.user_agent,
            "requestId": event.request_id,
        },
    }
    if event.count is not None:
        record["context"]["suppressedCount"] = event.count
    return record


def canonical(record: dict[str, Any]) -> bytes:
    return json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def legacy_link(prev_hash: bytes, record_json: bytes) -> bytes:
    """The unkeyed link of records written before keyed links."""
    return hashlib.sha256(prev_hash + record_json).digest()


def prune_message(seq: int) -> bytes:
    """What a prune mark signs: records up to ``seq`` were deleted on purpose."""
    return b"coffer/audit-pruned/v1\x00" + seq.to_bytes(8, "big")


def checkpoint_message(seq: int, chain_hash: bytes) -> bytes:
    """What a format 1 checkpoint signed: the chain had ``chain_hash`` after record ``seq``."""
    return b"coffer/audit-checkpoint/v1\x00" + seq.to_bytes(8, "big") + chain_hash


def signed_message(checkpoint: Checkpoint) -> bytes:
    """What ``checkpoint`` signs (format 2: canonical JSON of every field but the signature)."""
    c = checkpoint
    if c.prev is None:
        return checkpoint_message(c.seq, c.hash)
    fields = {
        "seq": c.seq, "link": c.hash.hex(), "prev": c.prev.hex(), "keyedFrom": c.keyed_from,
        "anchor": c.anchor, "createdAt": iso_utc(c.created_at),
    }  # fmt: skip
    return b"coffer/audit-checkpoint/v2\x00" + canonical(fields)


def checkpoint_digest(checkpoint: Checkpoint | None) -> bytes:
    """What the next checkpoint names as ``prev``: SHA-256 of the message and its signature (32
    zero bytes before the first)."""
    if checkpoint is None:
        return GENESIS
    return hashlib.sha256(signed_message(checkpoint) + checkpoint.signature).digest()


def new_checkpoint(
    sign: Callable[[bytes], bytes], tip: ChainTip, anchor: str | None, now: datetime
) -> Checkpoint:
    """A signed checkpoint of the chain's end ``tip``, following the newest checkpoint."""
    unsigned = Checkpoint(tip.seq, tip.link, now, b"", checkpoint_digest(tip.newest_checkpoint()),
                          tip.keyed_from, anchor)  # fmt: skip
    return replace(unsigned, signature=sign(signed_message(unsigned)))


def row_of(
    event: AuditEvent, seq: int, prev_hash: bytes, link: Callable[[bytes, bytes], bytes]
) -> ChainRow:
    record = record_of(event, seq)
    body = canonical(record)
    return ChainRow(
        seq=seq,
        event_id=event.event_id,
        created_at=event.created_at,
        organisation_identity=event.organisation_identity,
        project_identity=event.project_identity,
        action=event.action,
        principal_identity=event.principal_identity,
        resource_identity=event.resource_identity,
        status=event.status,
        record=body.decode(),
        prev_hash=prev_hash,
        hash=link(prev_hash, body),
    )
