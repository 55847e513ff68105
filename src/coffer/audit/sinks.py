"""Audit sinks: copies of the log outside the database, like Vault's audit devices.

Three destinations take audit lines (``coffer.audit.lines``: every record with its links, every
checkpoint): a ``file`` (JSON lines, mode 0600, fsynced, rotated by size), ``syslog`` (RFC 5424
over a local socket, UDP or TCP) and ``http`` (batches POSTed as JSON lines with a bearer token).

A **required** sink takes a batch's lines inside the batch's transaction, after its records are
built and before it commits (``RequiredSinks``): if it refuses, the transaction rolls back, the
requests answer 503 and nothing changed. A required sink therefore may hold the records of a
batch whose commit failed after it accepted them; the next batch reuses their sequence numbers,
and a reader of the copy takes the later ones (``read_lines``).

An **optional** sink is fed from the database after the commit (``SinkDelivery``): its buffer is
the log itself, with a cursor file saying how far the sink got. While the sink is down, requests
go on, the lag metric grows, and delivery retries with back-off; once it is back the records
arrive in order from the cursor on, none lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import json
import logging
import os
import socket
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit

import httpx

from coffer.audit.lines import checkpoint_line, lines_of
from coffer.config import SYSLOG_FACILITIES, AuditSinkSettings, ConfigError
from coffer.crypto.root import sync_directory
from coffer.domain.audit import ChainRow, Checkpoint
from coffer.logs import dependency, dependency_of

log = logging.getLogger(__name__)

#: Syslog severity of every message: informational.
_INFO = 6
_BOM = b"\xef\xbb\xbf"


class SinkError(Exception):
    """A sink did not accept lines (the message names the sink and why)."""

    #: The sink's name as a dependency (``audit sink <name>``), once its state has the failure.
    dependency: str | None = None


def sink_state(name: str, *, required: bool) -> str:
    """The name of the dependency state of the sink ``name`` (made now if new: its down line an
    error if the sink is required, since requests then fail, else a warning)."""
    state = f"audit sink {name}"
    dependency(state, level=logging.ERROR if required else logging.WARNING)
    return state


class Destination(Protocol):
    """Where a sink's lines go. ``close`` lets go of connections; a later ``send`` opens them
    again (the server closes its sinks when it seals, and uses them again once unsealed)."""

    name: str

    def send(self, lines: Sequence[bytes]) -> None:
        """Deliver ``lines`` in order; return once the destination accepted them, else raise
        ``SinkError``."""
        ...

    def close(self) -> None: ...


class FileDestination:
    """A JSON-lines file (mode 0600, fsynced), rotated to ``<path>.1`` … ``<path>.<keep>`` when
    it would grow past ``max_bytes``. Processes of one node take turns under a lock file."""

    def __init__(self, settings: AuditSinkSettings) -> None:
        assert settings.path is not None
        self.name = settings.name
        self.path = settings.path
        self._max = settings.max_bytes
        self._keep = settings.keep
        self._lock = self.path.with_name(self.path.name + ".lock")

    def send(self, lines: Sequence[bytes]) -> None:
        data = b"".join(lines)
        try:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            lock = os.open(self._lock, os.O_WRONLY | os.O_CREAT, 0o600)
            try:
                fcntl.flock(lock, fcntl.LOCK_EX)
                self._append(data)
            finally:
                os.close(lock)
        except OSError as exc:
            raise SinkError(f"audit sink {self.name}: {self.path}: {exc.strerror}") from None

    def _append(self, data: bytes) -> None:
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            size = 0
        if size and size + len(data) > self._max:
            self._rotate()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)

    def _rotate(self) -> None:
        for number in range(self._keep - 1, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{number}")
            if older.exists():
                older.rename(self.path.with_name(f"{self.path.name}.{number + 1}"))
        self.path.rename(self.path.with_name(f"{self.path.name}.1"))
        sync_directory(self.path.parent)

    def close(self) -> None:
        return None


def _kind(line: bytes) -> bytes:
    return b"checkpoint" if line.endswith(b'"type":"checkpoint"}\n') else b"record"


class SyslogDestination:
    """RFC 5424 messages (one per line; MSGID ``record`` or ``checkpoint``) to a local socket
    (``unix:/dev/log``), UDP, or TCP with octet-counting frames (RFC 6587)."""

    def __init__(self, settings: AuditSinkSettings) -> None:
        assert settings.address is not None
        self.name = settings.name
        self._address = settings.address
        self._timeout = settings.timeout_seconds
        facility = SYSLOG_FACILITIES.index(settings.facility)  # listed in code order
        self._pri = f"<{facility * 8 + _INFO}>1".encode()
        host = socket.gethostname().encode("ascii", "replace")[:255] or b"-"
        self._tail = b" ".join([host, settings.app_name.encode(), str(os.getpid()).encode()])
        self._socket: socket.socket | None = None
        self._stream = False

    def _message(self, line: bytes) -> bytes:
        now = datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
        body = line.rstrip(b"\n")
        return b" ".join([self._pri, now.encode(), self._tail, _kind(line), b"-", _BOM + body])

    def _connect(self) -> socket.socket:
        if self._socket is None:
            self._socket, self._stream = self._open()
        return self._socket

    def _open(self) -> tuple[socket.socket, bool]:
        """A connected socket, and whether it is a stream (framed) or datagrams."""
        if self._address.startswith("unix:"):
            path = self._address[5:]
            for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):  # /dev/log is datagrams
                sock = socket.socket(socket.AF_UNIX, kind)
                sock.settimeout(self._timeout)
                try:
                    sock.connect(path)
                except OSError as exc:
                    sock.close()
                    if exc.errno != errno.EPROTOTYPE or kind == socket.SOCK_STREAM:
                        raise
                    continue
                return sock, kind == socket.SOCK_STREAM
        parsed = urlsplit(self._address)
        host, port = parsed.hostname or "", parsed.port or 0
        if parsed.scheme == "tcp":
            return socket.create_connection((host, port), self._timeout), True
        family = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)[0][0]
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.settimeout(self._timeout)
            sock.connect((host, port))
        except OSError:
            sock.close()
            raise
        return sock, False

    def send(self, lines: Sequence[bytes]) -> None:
        try:
            sock = self._connect()
            for line in lines:
                message = self._message(line)
                if self._stream:
                    sock.sendall(str(len(message)).encode() + b" " + message)
                else:
                    sock.send(message)
        except OSError as exc:
            self.close()
            reason = exc.strerror or type(exc).__name__
            raise SinkError(f"audit sink {self.name}: {self._address}: {reason}") from None

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None


class HttpDestination:
    """Batches of lines POSTed as ``application/x-ndjson`` with ``Authorization: Bearer``; any
    2xx answer is acceptance."""

    def __init__(self, settings: AuditSinkSettings) -> None:
        assert settings.url is not None
        self.name = settings.name
        self._url = settings.url
        self._batch = settings.batch_records
        headers = {"Content-Type": "application/x-ndjson"}
        if settings.token_env is not None:
            token = os.environ.get(settings.token_env)
            if not token:
                raise ConfigError(
                    f"audit sink {settings.name}: the environment variable {settings.token_env} "
                    "(its bearer token) is not set"
                )
            headers["Authorization"] = f"Bearer {token}"
        self._headers = headers
        self._timeout = settings.timeout_seconds
        self._client: httpx.Client | None = None  # opened on use: a closed sink opens again

    def send(self, lines: Sequence[bytes]) -> None:
        if self._client is None:
            self._client = httpx.Client(timeout=self._timeout, headers=self._headers)
        for start in range(0, len(lines), self._batch):
            body = b"".join(lines[start : start + self._batch])
            try:
                answer = self._client.post(self._url, content=body)
            except httpx.HTTPError as exc:
                raise SinkError(f"audit sink {self.name}: {type(exc).__name__}") from None
            if not answer.is_success:
                raise SinkError(f"audit sink {self.name}: HTTP {answer.status_code}")

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


def destination_of(settings: AuditSinkSettings) -> Destination:
    kinds: dict[str, Callable[[AuditSinkSettings], Destination]] = {
        "file": FileDestination, "syslog": SyslogDestination, "http": HttpDestination,
    }  # fmt: skip
    return kinds[settings.type](settings)


class RequiredSinks:
    """The required sinks: each must accept a batch's lines before the batch commits."""

    def __init__(self, sinks: Sequence[AuditSinkSettings]) -> None:
        self._destinations = [destination_of(s) for s in sinks if s.required]

    def __bool__(self) -> bool:
        return bool(self._destinations)

    def send(self, rows: Sequence[ChainRow], checkpoint: Checkpoint | None) -> None:
        """Deliver the lines of ``rows`` (and ``checkpoint``) to every required sink, or raise
        ``SinkError`` (the caller's transaction then rolls back)."""
        if not self._destinations or (not rows and checkpoint is None):
            return
        lines = lines_of(rows, [checkpoint] if checkpoint is not None else [])
        if checkpoint is not None and (not rows or rows[-1].seq != checkpoint.seq):
            lines.append(checkpoint_line(checkpoint))  # a checkpoint made on its own
        for destination in self._destinations:
            state = dependency(sink_state(destination.name, required=True))
            try:
                destination.send(lines)
            except SinkError as exc:
                # Down (once) until it accepts lines again; every batch meanwhile fails (503).
                state.failed(exc)
                exc.dependency = state.name
                raise
            state.ok()

    def close(self) -> None:
        for destination in self._destinations:
            destination.close()


class ChainReader(Protocol):
    async def audit_head(self) -> tuple[int, bytes]: ...

    async def audit_rows(self, after_seq: int, limit: int) -> Sequence[ChainRow]: ...

    async def audit_checkpoints(self) -> Sequence[Checkpoint]: ...


class SinkDelivery:
    """Feeds one optional sink from the database, after the cursor in ``state_dir``.

    Only one process of a node delivers to a sink at a time (a lock file); the others skip their
    turn. A sink new to the installation starts at the newest checkpoint (its copy then begins at
    a signed point) or at the first record."""

    def __init__(
        self,
        store: ChainReader,
        destination: Destination,
        state_dir: Path,
        *,
        batch: int = 500,
        lag: Callable[[int], None] | None = None,
        failed: Callable[[], None] | None = None,
        poll_seconds: float = 0.5,
        max_backoff_seconds: float = 30.0,
    ) -> None:
        self._store = store
        self._destination = destination
        self._cursor = state_dir / f"{destination.name}.cursor"
        self._lock = state_dir / f"{destination.name}.lock"
        self._batch = batch
        self._lag = lag
        self._failed = failed
        self._poll = poll_seconds
        self._max_backoff = max_backoff_seconds
        self.name = destination.name

    def _read_cursor(self) -> tuple[int, int] | None:
        """(the last record sent, the last checkpoint sent), or ``None`` for a new sink."""
        try:
            fields = json.loads(self._cursor.read_bytes())
            return int(fields["seq"]), int(fields.get("checkpoint", 0))
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError):
            log.warning("audit sink %s: its cursor file %s is unreadable; the sink starts again "
                        "from the newest checkpoint", self.name, self._cursor)  # fmt: skip
            return None

    def _write_cursor(self, seq: int, checkpoint: int) -> None:
        temporary = self._cursor.with_suffix(".tmp")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, json.dumps({"seq": seq, "checkpoint": checkpoint}).encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        temporary.replace(self._cursor)

    async def deliver(self) -> int:
        """Deliver what the sink lacks, a batch at a time; the records still to go (the lag).
        Raises ``SinkError`` if the sink refused."""
        self._cursor.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        lock = os.open(self._lock, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return 0  # another process of this node delivers
            return await self._deliver_locked()
        finally:
            os.close(lock)

    async def _deliver_locked(self) -> int:
        head, _ = await self._store.audit_head()
        checkpoints = await self._store.audit_checkpoints()
        found = await asyncio.to_thread(self._read_cursor)
        if found is None:  # a new sink: from the newest checkpoint (sent first), or the start
            start = checkpoints[-1].seq if checkpoints else 0
            cursor, signed = start, (start - 1 if checkpoints else 0)
        else:
            cursor, signed = found
        while True:
            self._report(head - cursor)
            # Checkpoints made on their own sign records already sent (a scheduler pass, a
            # shutdown): they go first.
            lines = [checkpoint_line(c) for c in checkpoints if signed < c.seq <= cursor]
            rows: Sequence[ChainRow] = []
            if cursor < head:
                rows = await self._store.audit_rows(cursor, self._batch)
                if rows and rows[0].seq != cursor + 1:
                    log.warning("audit sink %s: records %d to %d were pruned before it got them",
                                self.name, cursor + 1, rows[0].seq - 1)  # fmt: skip
                lines += lines_of(rows, [c for c in checkpoints if cursor < c.seq])
            if not lines:
                if found is None:  # a new sink, caught up: it goes on from here from now on
                    await asyncio.to_thread(self._write_cursor, cursor, signed)
                return max(head - cursor, 0)  # caught up (or the head moved back: a restore)
            await asyncio.to_thread(self._destination.send, lines)
            if rows:
                cursor = rows[-1].seq
            signed = max([signed, *(c.seq for c in checkpoints if c.seq <= cursor)])
            await asyncio.to_thread(self._write_cursor, cursor, signed)
            found = (cursor, signed)

    def _report(self, lag: int) -> None:
        if self._lag is not None:
            self._lag(max(lag, 0))

    async def run_forever(self) -> None:
        try:
            await self._run()
        finally:
            self.close()  # the server stops: its connections to the sink go

    async def _run(self) -> None:
        # Down (a warning, once: requests go on) until it accepts lines again (then back, once).
        state = dependency(sink_state(self.name, required=False))
        failures = 0
        while True:
            try:
                await self.deliver()
            except SinkError as exc:
                failures += 1
                if self._failed is not None:
                    self._failed()
                state.failed(exc)
                await asyncio.sleep(min(self._max_backoff, self._poll * 2**failures))
                continue
            except Exception as exc:  # the database away, …: try again later, never stop
                if dependency_of(exc) is None:  # (the database's outage is said by its state)
                    log.exception("audit sink %s: delivery failed", self.name)
                await asyncio.sleep(self._max_backoff)
                continue
            state.ok()
            failures = 0
            await asyncio.sleep(self._poll)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._destination.close()
