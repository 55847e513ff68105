"""Walk the audit chain and report its first broken link.

Checks, in order: every checkpoint's signature, and that each checkpoint names the one before it
(a checkpoint deleted, edited or inserted breaks the next); that they agree on the first keyed
record; against the anchor file, that every checkpoint it holds is in the database as it was
written and not beyond the database's end (a wiped, truncated or rolled-back log), and that the
database holds no checkpoint of this anchor that the file lacks (an anchor truncated or replaced by
an older copy) but possibly the newest, which a crash between its commit and its append can leave
out; that records run 1, 2, 3, … without a gap (or start right after a checkpoint, where old
records were pruned); that each record links to the one before and its link covers its content
(with the audit link key: the root of trust); that the columns queries filter on say what the
content says; that every checkpoint matches the record at its sequence number; and that the
chain ends where its head says it does.

Without the link key (``coffer audit verify --public-key``) links are not checked: records are
checked by count and order against the signed checkpoints only.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from coffer.audit.anchor import AnchorContents
from coffer.audit.chain import (
    GENESIS,
    checkpoint_digest,
    iso_utc,
    legacy_link,
    prune_message,
    signed_message,
)
from coffer.audit.committer import Signer
from coffer.audit.lines import ExportedChain
from coffer.domain.audit import ChainRow, Checkpoint, PruneMark

PAGE = 5000


@dataclass(frozen=True, slots=True)
class Verification:
    records: int
    checkpoints: int
    last_seq: int
    problem: str | None = None
    #: Checkpoints found in the anchor file and in the database alike.
    anchored: int = 0
    #: The newest checkpoint of this anchor, if it is in the database but not yet in the file.
    unanchored: int | None = None
    #: Whether every record's link was checked (with the link key).
    links_checked: bool = True
    #: Whether there was an anchor to compare with (none: an empty log, nothing to anchor).
    anchor_found: bool = True
    #: A copy: the first record it holds (it may begin after record 1).
    first_seq: int = 1
    #: A copy: the anchor's checkpoints beyond the copy's end (it is older than the anchor, or
    #: was cut: the copy cannot tell which), and the record the newest of them covers.
    beyond: int = 0
    beyond_seq: int = 0
    #: A copy: records after its newest checkpoint (nothing signed covers them).
    unsigned_tail: int = 0

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
        and record.get("projectId") == row.project_identity
        and record.get("resourceIdentity") == row.resource_identity
        and principal == row.principal_identity
        and record.get("context", {}).get("status") == row.status
        and record.get("createdAt") == iso_utc(row.created_at)
    )


def _checkpoint_problem(checkpoints: list[Checkpoint], signer: Signer, partial: bool) -> str | None:
    before: Checkpoint | None = None
    for index, cp in enumerate(checkpoints):
        if not signer.verify(cp.signature, signed_message(cp)):
            return f"the checkpoint at record {cp.seq} has an invalid signature"
        if cp.prev is None and before is not None and before.prev is not None:
            return f"the checkpoint at record {cp.seq} is of the old format, after a new one"
        copy_begins = partial and index == 0  # a copy that begins later: its first follows one
        if cp.prev is not None and not copy_begins and cp.prev != checkpoint_digest(before):
            after = f"the one at record {before.seq}" if before is not None else "none"
            return (
                f"the checkpoint at record {cp.seq} does not follow the checkpoint before it in "
                f"the database ({after}): a checkpoint was deleted, edited or inserted"
            )
        before = cp
    return None


def _anchor_problem(
    checkpoints: list[Checkpoint],
    head_seq: int,
    anchor: AnchorContents,
    signer: Signer,
    window: tuple[int, datetime | None] | None,
) -> tuple[str | None, int | None, int, list[Checkpoint]]:
    """What is wrong between the database's checkpoints and the anchor's, the newest checkpoint
    of this anchor not yet appended to it (a crash between commit and append), and how many of
    the anchor's checkpoints were compared.

    ``window`` (a copy of the log: an export or a sink's file): the first record it holds and
    the time it was made (``None``: a sink's copy). The anchor's checkpoints before the copy
    begins are not its to hold; those beyond its end are returned (the last list), not failed:
    a copy made earlier and a copy cut short look the same, and ``verify`` says how many there
    are. One signed before an export was made must be in it."""
    by_seq = {cp.seq: cp for cp in checkpoints}
    compared = 0
    beyond: list[Checkpoint] = []
    for cp in anchor.checkpoints:
        if window is not None:
            first, made = window
            if cp.seq < first:
                continue
            if cp.seq > head_seq and (made is None or cp.created_at > made):
                if cp.anchor == anchor.identity and signer.verify(cp.signature,
                                                                   signed_message(cp)):  # fmt: skip
                    beyond.append(cp)
                continue
        compared += 1
        if cp.anchor != anchor.identity or not signer.verify(cp.signature, signed_message(cp)):
            return (
                f"the anchor's checkpoint at record {cp.seq} is not one it holds validly",
                None,
                0,
                [],
            )
        if cp.seq > head_seq:
            return (f"the anchor holds a checkpoint at record {cp.seq}, beyond the database's "
                    f"last record {head_seq}: records were deleted or the database was rolled "
                    "back"), None, 0, []  # fmt: skip
        if by_seq.get(cp.seq) != cp:
            problem = (
                f"the anchor's checkpoint at record {cp.seq} is missing from the database or "
                "differs there: the log was wiped, truncated or rewritten"
            )
            return problem, None, 0, []
    anchored = {cp.seq for cp in anchor.checkpoints}
    mine = [cp for cp in checkpoints if cp.anchor == anchor.identity]
    missing = [cp.seq for cp in mine if cp.seq not in anchored]
    if missing and missing != [mine[-1].seq]:
        shown = ", ".join(map(str, missing[:5]))
        return (f"the anchor lacks checkpoints the database holds of it (records {shown}): it "
                "was truncated or replaced by an older copy"), None, 0, []  # fmt: skip
    return None, missing[0] if missing else None, compared, beyond


def _copy_problem(copy: ExportedChain, checkpoints: list[Checkpoint]) -> str | None:
    """What makes a copy unverifiable on its face: no signed checkpoint at all (nothing in it
    would be proven), records superseded behind a checkpoint, or an export dated before its own
    newest checkpoint."""
    if not checkpoints:
        return "the copy holds no signed checkpoint: nothing in it can be proven"
    if copy.superseded_behind is not None:
        return (f"record {copy.superseded_behind} appears twice, behind a checkpoint: the copy "
                "was edited")  # fmt: skip
    if copy.exported_at is not None and copy.exported_at < max(c.created_at for c in checkpoints):
        return "the export's time is before its own newest checkpoint: the copy was edited"
    return None


class ChainSource(Protocol):
    """Where a chain is read from: the database (``AuditStore``) or a copy of it
    (``coffer.audit.lines.ExportedChain``)."""

    async def audit_head(self) -> tuple[int, bytes]: ...

    async def audit_checkpoints(self) -> Sequence[Checkpoint]: ...

    async def audit_keyed_from(self) -> int | None: ...

    async def audit_prune_marks(self) -> Sequence[PruneMark]: ...

    async def audit_rows(self, after_seq: int, limit: int) -> Sequence[ChainRow]: ...


async def verify_chain(
    store: ChainSource,
    signer: Signer,
    link: Callable[[bytes, bytes], bytes] | None,
    anchor: AnchorContents | None = None,
    *,
    copy: ExportedChain | None = None,
    keyed_from: int | None = None,
) -> Verification:
    """Verify the chain of ``store``. ``link``: the keyed link (``None``: records are checked by
    count and order only); ``anchor``: the anchor file's contents to compare with; ``copy``: the
    chain is a copy (``store`` is this): an export, or a sink's copy (``partial``), which may
    begin at any record. ``keyed_from``: the installation's first keyed record, from its
    database (a copy's own word for it is not taken when the link key checks links)."""
    partial = copy is not None and copy.partial
    checkpoints = list(await store.audit_checkpoints())
    head_seq, head_hash = await store.audit_head()
    unanchored = None
    anchored = 0
    beyond: list[Checkpoint] = []

    def result(records: int, last: int, problem: str | None = None) -> Verification:
        tail = 0
        if copy is not None and problem is None:
            newest = max((cp.seq for cp in checkpoints), default=0)
            tail = sum(1 for row in copy.rows if row.seq > newest)
        return Verification(records, len(checkpoints), last, problem, anchored, unanchored,
                            link is not None, anchor is not None,
                            copy.rows[0].seq if copy is not None and copy.rows else 1,
                            len(beyond), beyond[-1].seq if beyond else 0, tail)  # fmt: skip

    if copy is not None:
        problem = _copy_problem(copy, checkpoints)
        if problem is not None:
            return result(0, 0, problem)
    problem = _checkpoint_problem(checkpoints, signer, partial)
    if problem is not None:
        return result(0, 0, problem)
    signed_from = {cp.keyed_from for cp in checkpoints if cp.prev is not None}
    stored_from = await store.audit_keyed_from() if keyed_from is None else keyed_from
    if len(signed_from) > 1 or (signed_from and stored_from not in signed_from):
        return result(0, 0, "the first keyed record differs between the checkpoints and the "
                            "installation")  # fmt: skip
    keyed_from = signed_from.pop() if signed_from else stored_from
    if keyed_from is None:
        # Written before keyed links, and nothing since; a sink's copy, sent since: keyed.
        keyed_from = 0 if partial else head_seq + 1
    if anchor is not None:
        window = None
        if copy is not None:
            first = copy.rows[0].seq if partial and copy.rows else 0
            window = (first, copy.exported_at)
        problem, unanchored, anchored, beyond = _anchor_problem(
            checkpoints, head_seq, anchor, signer, window
        )
        if problem is not None:
            return result(0, 0, problem)
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
            if count == 0 and row.seq != 1 and partial:
                # Where the copy begins: after a checkpoint it holds, or anywhere.
                begins = by_seq.get(row.seq - 1)
                prev = begins.hash if begins is not None else row.prev_hash
                last = row.seq - 1
            elif count == 0 and row.seq != 1:
                start = by_seq.get(row.seq - 1)
                if start is None or pruned_through != row.seq - 1:
                    return result(count, last, f"records before {row.seq} are missing")
                prev, last = start.hash, row.seq - 1
            if row.seq != last + 1:
                return result(count, last, f"record {last + 1} is missing (next is {row.seq})")
            if row.prev_hash != prev:
                return result(count, last, f"record {row.seq} does not link to record {last}")
            if link is not None:
                linked = legacy_link if row.seq < keyed_from else link
                if linked(prev, row.record.encode()) != row.hash:
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
    covered = [cp.seq for cp in checkpoints if cp.seq > last]
    if covered:
        return result(count, last, f"records after {last} are missing: a checkpoint covers "
                                   f"record {covered[-1]}")  # fmt: skip
    if (head_seq, head_hash) != (last, prev):
        return result(count, last, f"the chain ends at record {last} but its head is at {head_seq}")
    return result(count, last)
