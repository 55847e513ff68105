"""Walk the audit chain and report its first broken link.

Checks, in order: every checkpoint's signature; that records run 1, 2, 3, … without a gap (or start
right after a checkpoint, where old records were pruned); that each record links to the one
before and its hash covers its content; that the columns queries filter on say what the hashed
content says; that every checkpoint matches the record at its sequence number; and that the chain
ends where its head and its checkpoints say it does.

Limit: a tail cut after the last checkpoint by someone who also rewrites the head row is not
detectable from the database alone; a checkpoint is written every N records, every scheduler
pass and at shutdown, and records exported to a SIEM keep their own copy.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from coffer.audit.chain import GENESIS, checkpoint_message, iso_utc, link, prune_message
from coffer.audit.committer import Signer
from coffer.domain.audit import ChainRow
from coffer.storage.repositories import AuditStore

PAGE = 5000


@dataclass(frozen=True, slots=True)
class Verification:
    records: int
    checkpoints: int
    last_seq: int
    problem: str | None = None

    @property
    def ok(self) -> bool:
        return self.problem is None


def _columns_match(row: ChainRow) -> bool:
    try:
        record = json.loads(row.record)
    except ValueError:
        return False
    principal = record.get("userIdentity") or record.get("serviceAccountIdentity")
    return bool(
        record.get("seq") == row.seq
        and record.get("eventId") == row.event_id
        and record.get("action") == row.action
        and record.get("organizationIdentity") == row.organisation_identity
        and record.get("resourceIdentity") == row.resource_identity
        and principal == row.principal_identity
        and record.get("context", {}).get("status") == row.status
        and record.get("createdAt") == iso_utc(row.created_at)
    )


async def verify_chain(store: AuditStore, signer: Signer) -> Verification:
    checkpoints = await store.audit_checkpoints()
    head_seq, head_hash = await store.audit_head()

    def result(records: int, last: int, problem: str | None = None) -> Verification:
        return Verification(records, len(checkpoints), last, problem)

    for cp in checkpoints:
        if not signer.verify(cp.signature, checkpoint_message(cp.seq, cp.hash)):
            return result(0, 0, f"the checkpoint at record {cp.seq} has an invalid signature")
    by_seq = {cp.seq: cp for cp in checkpoints}
    marks = await store.audit_prune_marks()
    for mark in marks:
        if not signer.verify(mark.signature, prune_message(mark.seq)):
            return result(0, 0, f"the prune mark at record {mark.seq} has an invalid signature")
    pruned_through = marks[-1].seq if marks else 0

    count = 0
    last = 0
    prev = GENESIS
    after = 0
    while rows := await store.audit_rows(after, PAGE):
        for row in rows:
            if count == 0 and row.seq != 1:
                anchor = by_seq.get(row.seq - 1)
                if anchor is None or pruned_through != row.seq - 1:
                    return result(count, last, f"records before {row.seq} are missing")
                prev, last = anchor.hash, row.seq - 1
            if row.seq != last + 1:
                return result(count, last, f"record {last + 1} is missing (next is {row.seq})")
            if row.prev_hash != prev:
                return result(count, last, f"record {row.seq} does not link to record {last}")
            if link(prev, row.record.encode()) != row.hash:
                return result(count, last, f"record {row.seq} was changed after it was written")
            if not _columns_match(row):
                return result(count, last, f"record {row.seq}'s columns differ from its content")
            checkpoint = by_seq.get(row.seq)
            if checkpoint is not None and checkpoint.hash != row.hash:
                return result(count, last, f"record {row.seq} does not match its checkpoint")
            prev, last = row.hash, row.seq
            count += 1
        after = last

    if (
        count == 0
        and pruned_through == head_seq
        and head_seq in by_seq
        and by_seq[head_seq].hash == head_hash
    ):
        last, prev = head_seq, head_hash  # every record was pruned up to a checkpoint
    beyond = [cp.seq for cp in checkpoints if cp.seq > last]
    if beyond:
        return result(count, last, f"records after {last} are missing: a checkpoint covers "
                                   f"record {beyond[-1]}")  # fmt: skip
    if (head_seq, head_hash) != (last, prev):
        return result(count, last, f"the chain ends at record {last} but its head is at {head_seq}")
    return result(count, last)
