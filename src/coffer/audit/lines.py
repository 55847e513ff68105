"""The audit log as JSON lines: what an export holds and what every audit sink receives.

One JSON object per line, each with a ``type``:

* ``record``: ``{"type": "record", "seq", "prev", "link", "record": {...}}``, the record (spec §8
  shape, as stored) with the links before and after it (hex), so a copy can be verified like
  the database;
* ``checkpoint``: ``{"type": "checkpoint", "checkpoint": {...}}``, a signed checkpoint in the
  anchor file's form;
* in an export only: a first ``export`` line (format, time), ``pruned`` marks, and a last
  ``head`` line (where the chain ended when it was exported, and its first keyed record).

A record's canonical form is what its link covers: the verifier takes the ``record`` object and
writes it canonically again (sorted keys, no spaces, UTF-8), which gives the stored bytes back.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from coffer.audit.anchor import checkpoint_fields, checkpoint_of_fields
from coffer.audit.chain import canonical, iso_utc
from coffer.domain.audit import ChainRow, Checkpoint, PruneMark

EXPORT_FORMAT = "coffer-audit-export/1"


def record_line(row: ChainRow) -> bytes:
    # The stored canonical JSON goes in as it is: nothing is parsed or written again.
    return (
        b'{"link":"' + row.hash.hex().encode() + b'","prev":"' + row.prev_hash.hex().encode()
        + b'","record":' + row.record.encode() + b',"seq":' + str(row.seq).encode()
        + b',"type":"record"}\n'
    )  # fmt: skip


def checkpoint_line(checkpoint: Checkpoint) -> bytes:
    return _line({"type": "checkpoint", "checkpoint": checkpoint_fields(checkpoint)})


def export_header(now: datetime) -> bytes:
    return _line({"type": "export", "format": EXPORT_FORMAT, "exportedAt": iso_utc(now)})


def pruned_line(mark: PruneMark) -> bytes:
    return _line({"type": "pruned", "seq": mark.seq, "createdAt": iso_utc(mark.created_at),
                  "signature": mark.signature.hex()})  # fmt: skip


def head_line(seq: int, link: bytes, keyed_from: int | None) -> bytes:
    return _line({"type": "head", "seq": seq, "link": link.hex(), "keyedFrom": keyed_from})


def _line(fields: dict[str, Any]) -> bytes:
    return json.dumps(fields, sort_keys=True, separators=(",", ":")).encode() + b"\n"


def lines_of(rows: Sequence[ChainRow], checkpoints: Iterable[Checkpoint]) -> list[bytes]:
    """The lines of ``rows``, each checkpoint right after the record it covers."""
    at = {cp.seq: cp for cp in checkpoints}
    lines = []
    for row in rows:
        lines.append(record_line(row))
        if row.seq in at:
            lines.append(checkpoint_line(at[row.seq]))
    return lines


class LinesError(ValueError):
    """A file of audit lines cannot be read (the message names the line)."""


@dataclass
class ExportedChain:
    """A chain read from audit lines (an export, or an audit sink's copy), with the reads of an
    ``AuditStore`` that verification needs.

    An export ends with a ``head`` line; a sink's copy has none, and may begin anywhere: it
    ends with its last record (``partial``)."""

    rows: list[ChainRow] = field(default_factory=list)
    checkpoints: list[Checkpoint] = field(default_factory=list)
    marks: list[PruneMark] = field(default_factory=list)
    head: tuple[int, bytes] | None = None
    keyed_from: int | None = None
    exported_at: datetime | None = None
    #: A record seen again behind a checkpoint already read (only records after the newest
    #: checkpoint may be superseded: a batch whose commit failed after a sink took it).
    superseded_behind: int | None = None

    @property
    def partial(self) -> bool:
        return self.head is None

    async def audit_head(self) -> tuple[int, bytes]:
        if self.head is not None:
            return self.head
        return (self.rows[-1].seq, self.rows[-1].hash) if self.rows else (0, b"\x00" * 32)

    async def audit_checkpoints(self) -> Sequence[Checkpoint]:
        return self.checkpoints

    async def audit_keyed_from(self) -> int | None:
        return self.keyed_from

    async def audit_prune_marks(self) -> Sequence[PruneMark]:
        return self.marks

    async def audit_rows(self, after_seq: int, limit: int) -> Sequence[ChainRow]:
        start = next((i for i, row in enumerate(self.rows) if row.seq > after_seq), len(self.rows))
        return self.rows[start : start + limit]


def _row(fields: dict[str, Any]) -> ChainRow:
    record = fields["record"]
    principal = record.get("userIdentity") or record.get("serviceAccountIdentity")
    return ChainRow(
        seq=int(fields["seq"]),
        event_id=record["eventId"],
        created_at=_time(record["createdAt"]),
        organisation_identity=record["organizationIdentity"],
        project_identity=record["projectId"],
        action=record["action"],
        principal_identity=principal,
        resource_identity=record["resourceIdentity"],
        status=record["context"]["status"],
        record=canonical(record).decode(),
        prev_hash=bytes.fromhex(fields["prev"]),
        hash=bytes.fromhex(fields["link"]),
    )


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def read_lines(lines: Iterator[bytes]) -> ExportedChain:
    """The chain held by ``lines`` (``LinesError`` naming the first line that is not one).

    A sequence number seen again starts over from there: a sink can hold records of a batch
    whose commit then failed (it accepted them first), and the next batch reused their numbers.
    """
    chain = ExportedChain()
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            fields = json.loads(raw)
            kind = fields["type"]
            if kind == "record":
                row = _row(fields)
                if chain.rows and chain.rows[-1].seq >= row.seq:  # a batch not committed:
                    newest = max((c.seq for c in chain.checkpoints), default=0)
                    if row.seq <= newest or chain.exported_at is not None:  # an export: never
                        chain.superseded_behind = chain.superseded_behind or row.seq
                    chain.rows = [r for r in chain.rows if r.seq < row.seq]  # superseded
                    chain.checkpoints = [c for c in chain.checkpoints if c.seq < row.seq]
                chain.rows.append(row)
            elif kind == "checkpoint":
                checkpoint = checkpoint_of_fields(fields["checkpoint"])
                chain.checkpoints = [c for c in chain.checkpoints if c.seq < checkpoint.seq]
                chain.checkpoints.append(checkpoint)
            elif kind == "pruned":
                sig = bytes.fromhex(fields["signature"])
                chain.marks.append(PruneMark(int(fields["seq"]), _time(fields["createdAt"]), sig))
            elif kind == "head":
                chain.head = (int(fields["seq"]), bytes.fromhex(fields["link"]))
                keyed = fields["keyedFrom"]
                if keyed is not None and (not isinstance(keyed, int) or isinstance(keyed, bool)):
                    raise ValueError
                chain.keyed_from = keyed
            elif kind == "export":
                if fields["format"] != EXPORT_FORMAT:
                    raise LinesError(f"line {number}: an export of another format")
                chain.exported_at = _time(fields["exportedAt"])
            else:
                raise LinesError(f"line {number}: unknown type {kind!r}")
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            if isinstance(exc, LinesError):
                raise
            raise LinesError(f"line {number} is not an audit line") from None
    if chain.keyed_from is None:
        signed = {cp.keyed_from for cp in chain.checkpoints if cp.prev is not None}
        chain.keyed_from = signed.pop() if len(signed) == 1 else None
    return chain
