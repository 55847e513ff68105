"""Audit records as stored: chain rows, checkpoints and query filters (spec §8)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True, slots=True)
class ChainRow:
    """One stored record with the columns queries use, as read back for verification."""

    seq: int
    event_id: str
    created_at: datetime
    organisation_identity: str | None
    project_identity: str | None
    action: str
    principal_identity: str | None
    resource_identity: str | None
    status: int
    record: str
    prev_hash: bytes
    hash: bytes


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A signed statement "the chain's link after record ``seq`` was ``hash``".

    Since keyed links (format 2) a checkpoint also names the digest of the checkpoint before it
    (``prev``: checkpoints form a chain of their own, so one deleted or edited breaks the next),
    the first record whose link is keyed (``keyed_from``), and the anchor file it was appended to
    (``anchor``). Format 1 checkpoints (``prev`` ``None``) are those of older versions."""

    seq: int
    hash: bytes
    created_at: datetime
    signature: bytes
    prev: bytes | None = None
    keyed_from: int | None = None
    anchor: str | None = None


@dataclass(frozen=True, slots=True)
class ChainTip:
    """The end of the chain as a writer finds it with the head locked: the newest record's
    sequence number and link, the first record with a keyed link, and how to read the newest
    checkpoint (only a writer that makes one needs it: the hot path reads nothing more)."""

    seq: int
    link: bytes
    keyed_from: int
    newest_checkpoint: Callable[[], Checkpoint | None]


@dataclass(frozen=True, slots=True)
class PruneMark:
    """Records up to ``seq`` were deleted on purpose (retention), signed like a checkpoint."""

    seq: int
    created_at: datetime
    signature: bytes


#: Each record's ``resourceType``, by the prefix of its action: KMS requests act on keys (spec §8);
#: administration (an extension) on the organisation's IAM objects.
RESOURCE_TYPES = {
    "kms_key": "kms.",
    "organisation": "iam.organisation.",
    "project": "iam.project.",
    "service_account": "iam.service_account.",
    "token": "iam.token.",
    "role_binding": "iam.role_binding.",
    # A row of the database refused by the storage barrier (``integrity.failure``, by the server).
    "storage_row": "integrity.",
    # Failed authentications of one source address, counted (``auth.failures.suppressed``).
    "source_address": "auth.",
}


def resource_type_of(action: str) -> str:
    for resource_type, prefix in RESOURCE_TYPES.items():
        if action.startswith(prefix):
            return resource_type
    return "kms_key"


@dataclass(frozen=True, slots=True)
class AuditFilter:
    """Query filters of ``GET /v1/audit``; every given one must match."""

    action: str | None = None
    #: Only actions starting with this (how ``resourceType`` is asked for).
    action_prefix: str | None = None
    resource_identity: str | None = None
    service_account: str | None = None
    user_identity: str | None = None
    status: int | None = None
    since: datetime | None = None
    until: datetime | None = None
    oldest_first: bool = False
    after_seq: int | None = None
    #: Only records of this project (a caller limited to one project sees no other).
    project_identity: str | None = None
