"""The audit record's canonical form and the hash chain over records.

A record is stored as canonical JSON (sorted keys, no spaces, UTF-8) in the shape of spec §8, with
its sequence number inside. Record n links to record n-1: ``hash_n = SHA-256(hash_{n-1} ‖ json_n)``,
starting from 32 zero bytes. Changing, removing or reordering any record breaks every later link;
signed checkpoints of (seq, hash) make a cut-off tail or a rebuilt chain detectable too.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any

from coffer.audit.events import AuditEvent
from coffer.domain.audit import ChainRow, resource_type_of

GENESIS = b"\x00" * 32


def iso_utc(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def record_of(event: AuditEvent, seq: int) -> dict[str, Any]:
    """The spec §8 record of ``event`` (identities, sizes and outcomes; never secrets)."""
    is_user = event.principal_kind == "user"
    return {
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


def canonical(record: dict[str, Any]) -> bytes:
    return json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def link(prev_hash: bytes, record_json: bytes) -> bytes:
    return hashlib.sha256(prev_hash + record_json).digest()


def prune_message(seq: int) -> bytes:
    """What a prune mark signs: records up to ``seq`` were deleted on purpose."""
    return b"coffer/audit-pruned/v1\x00" + seq.to_bytes(8, "big")


def checkpoint_message(seq: int, chain_hash: bytes) -> bytes:
    """What a checkpoint signs: the chain had ``chain_hash`` after record ``seq``."""
    return b"coffer/audit-checkpoint/v1\x00" + seq.to_bytes(8, "big") + chain_hash


def row_of(event: AuditEvent, seq: int, prev_hash: bytes) -> ChainRow:
    record = record_of(event, seq)
    body = canonical(record)
    return ChainRow(
        seq=seq,
        event_id=event.event_id,
        created_at=event.created_at,
        organisation_identity=event.organisation_identity,
        action=event.action,
        principal_identity=event.principal_identity,
        resource_identity=event.resource_identity,
        status=event.status,
        record=body.decode(),
        prev_hash=prev_hash,
        hash=link(prev_hash, body),
    )
