"""The audit anchor: every checkpoint also appended to a file outside the database.

Whoever can write the database cannot reach this file (put it on another disk, or another
machine's mount, with ``audit_anchor_path``), so a wiped, truncated or rolled-back log no longer
matches the checkpoints it holds. The file is JSON lines: a header naming the anchor's own random
identity, then one signed checkpoint per line, each appended with ``O_APPEND`` under an exclusive
``flock`` and fsynced before the append returns. Several processes of one node (the server and
its audit writer, several workers) share the file; on PostgreSQL every node has its own, and each
checkpoint names the anchor it went to.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import secrets
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from coffer.audit.chain import iso_utc
from coffer.crypto.root import sync_directory
from coffer.domain.audit import Checkpoint

FORMAT = "coffer-audit-anchor/1"
#: A disk with less room than this is reported full (``probe``).
MIN_FREE_BYTES = 1 << 20
ANCHOR_PREFIX = "anc"


class AnchorError(Exception):
    """The anchor file cannot be read as one (its message says why)."""


@dataclass(frozen=True, slots=True)
class AnchorContents:
    identity: str
    checkpoints: list[Checkpoint]


def checkpoint_fields(checkpoint: Checkpoint) -> dict[str, Any]:
    """A checkpoint as JSON fields (an anchor's line; an audit line's ``checkpoint``)."""
    c = checkpoint
    return {"seq": c.seq, "link": c.hash.hex(), "prev": (c.prev or b"").hex(),
            "keyedFrom": c.keyed_from, "anchor": c.anchor, "createdAt": iso_utc(c.created_at),
            "signature": c.signature.hex()}  # fmt: skip


def _line(checkpoint: Checkpoint) -> bytes:
    fields = checkpoint_fields(checkpoint)
    return json.dumps(fields, sort_keys=True, separators=(",", ":")).encode() + b"\n"


def checkpoint_of_fields(fields: dict[str, Any]) -> Checkpoint:
    return Checkpoint(
        seq=int(fields["seq"]),
        hash=bytes.fromhex(fields["link"]),
        created_at=datetime.fromisoformat(fields["createdAt"].replace("Z", "+00:00")),
        signature=bytes.fromhex(fields["signature"]),
        prev=bytes.fromhex(fields["prev"]) if fields["prev"] else None,  # "": format 1
        keyed_from=fields["keyedFrom"],
        anchor=fields["anchor"],
    )


class Anchor:
    """The anchor file at ``path``, made (mode 0600) on first use."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._identity: str | None = None

    def __repr__(self) -> str:
        return f"Anchor({str(self.path)!r})"

    def _open(self) -> int:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        return os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)

    @property
    def identity(self) -> str:
        """The anchor's identity, from its header (written now if the file is new)."""
        return self.open()

    def open(self) -> str:
        """Make the file if it is new (a header with a fresh identity); its identity."""
        if self._identity is None:
            fd = self._open()
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                if os.fstat(fd).st_size == 0:
                    header = {"anchor": f"{ANCHOR_PREFIX}-{secrets.token_hex(8)}", "format": FORMAT}
                    os.write(fd, json.dumps(header, sort_keys=True).encode() + b"\n")
                    os.fsync(fd)
                    sync_directory(self.path.parent)
                self._identity = read_anchor(self.path).identity
            finally:
                os.close(fd)
        return self._identity

    def probe(self) -> None:
        """``OSError`` unless a checkpoint could be appended now: the file opens for writing
        and its disk has room (at least ``MIN_FREE_BYTES``)."""
        os.close(os.open(self.path, os.O_WRONLY | os.O_APPEND))
        stats = os.statvfs(self.path)
        if stats.f_bavail * stats.f_frsize < MIN_FREE_BYTES:
            raise OSError(errno.ENOSPC, f"less than {MIN_FREE_BYTES} bytes free", str(self.path))

    def append(self, checkpoint: Checkpoint) -> None:
        """Append ``checkpoint`` and fsync; raises ``OSError`` if it is not on disk."""
        fd = self._open()
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            os.write(fd, _line(checkpoint))
            os.fsync(fd)
        finally:
            os.close(fd)


def read_anchor(path: Path) -> AnchorContents:
    """The identity and checkpoints of the anchor file at ``path`` (``AnchorError`` if it is not
    one). A last line cut short by a crash mid-append is ignored: its checkpoint was never
    acknowledged as anchored."""
    try:
        lines = path.read_bytes().split(b"\n")
    except OSError as exc:
        raise AnchorError(f"the anchor {path} cannot be read ({exc.strerror})") from None
    try:
        header = json.loads(lines[0])
        identity = header["anchor"]
        if header.get("format") != FORMAT or not isinstance(identity, str):
            raise ValueError
    except (ValueError, KeyError, TypeError):
        raise AnchorError(f"{path} is not an audit anchor (no header line)") from None
    checkpoints = []
    last = len(lines) - 1
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        try:
            checkpoints.append(checkpoint_of_fields(json.loads(line)))
        except (ValueError, KeyError, TypeError):
            if number - 1 == last:
                continue  # a torn last line: the append that wrote it never returned
            raise AnchorError(f"{path}: line {number} is not a checkpoint") from None
    return AnchorContents(identity, checkpoints)
