"""Audit batches committed by a separate writer process.

Building a batch's records (canonical JSON, hashes, signatures) and driving the database take
Python time. In the server's own process that work competes with the event loop for the GIL, and
both slow down; in a writer process of its own it runs on another core. The server sends each
batch over a pipe and waits for the writer's answer, so a record is still durable before its
request is answered, and a failure of the writer fails the batch closed (503) like a failed commit.

Frames are a 4-byte big-endian length and a pickle. Both ends are this program, on the private
pipes of a child process: nothing else can write to them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pickle
import struct
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import IO, Any

from coffer.audit.committer import Committer, Entry
from coffer.config import Settings
from coffer.errors import CofferError, Unavailable
from coffer.logs import Throttled, dependency, dependency_of

log = logging.getLogger(__name__)
failures = Throttled(log)

_LENGTH = struct.Struct(">I")
#: How long a batch may take (a stuck disk or database) before the writer is replaced and the
#: batch's requests answer 503.
ANSWER_TIMEOUT_SECONDS = 30.0
#: How long a writer may take to finish its batch and exit when the server stops.
_CLOSE_TIMEOUT = 10.0


@dataclass(frozen=True, slots=True)
class WriterStartup:
    """A writer's first frame: the server's settings, the checkpoint signing key, the row MAC
    key (the changes it applies write authenticated rows) and the audit link key."""

    settings: Settings
    signing_seed: bytes = field(repr=False)
    row_mac_key: bytes = field(repr=False)
    link_key: bytes = field(repr=False)


#: What a writer process must not inherit: it opens no seal.
_NOT_FOR_THE_WRITER = ("COFFER_PKCS11_PIN",)


def writer_environment() -> dict[str, str]:
    """The server's environment without the secrets only the server needs (the HSM's PIN)."""
    return {k: v for k, v in os.environ.items() if k not in _NOT_FOR_THE_WRITER}


def frame(payload: object) -> bytes:
    data = pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL)
    return _LENGTH.pack(len(data)) + data


def read_frame(stream: IO[bytes]) -> Any:
    """The next frame's object, or ``None`` at the end of the stream."""
    header = stream.read(_LENGTH.size)
    if len(header) < _LENGTH.size:
        return None
    (size,) = _LENGTH.unpack(header)
    data = stream.read(size)
    if len(data) < size:
        return None
    return pickle.loads(data)  # noqa: S301 - our own child's private pipe (see above)


class ProcessCommitter:
    """The server's end: a ``Committer`` that hands each batch to a writer process, started on
    first use and again after it died. ``startup`` makes the writer's first frame (what it
    needs to commit and sign: the settings and the checkpoint signing key), when it starts."""

    def __init__(self, command: Sequence[str], startup: Callable[[], Awaitable[object]]) -> None:
        self._command = list(command)
        self._startup = startup
        self._process: asyncio.subprocess.Process | None = None
        self._lock = asyncio.Lock()
        #: The dependencies the writer found away (down here until a batch commits).
        self._away: set[str] = set()

    async def _writer(self) -> asyncio.subprocess.Process:
        process = self._process
        if process is None or process.returncode is not None:
            startup = await self._startup()
            process = await asyncio.create_subprocess_exec(
                *self._command,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                env=writer_environment(),
            )
            assert process.stdin is not None
            process.stdin.write(frame(startup))
            self._process = process
        return process

    async def commit(self, batch: Sequence[Entry]) -> Sequence[CofferError | None]:
        async with self._lock:
            process = await self._writer()
            assert process.stdin is not None
            assert process.stdout is not None
            try:
                async with asyncio.timeout(ANSWER_TIMEOUT_SECONDS):
                    process.stdin.write(frame(list(batch)))
                    await process.stdin.drain()
                    (size,) = _LENGTH.unpack(await process.stdout.readexactly(_LENGTH.size))
                    answer = await process.stdout.readexactly(size)
                kind, value = pickle.loads(answer)  # noqa: S301 - our own child's private pipe
            except (ConnectionError, asyncio.IncompleteReadError, TimeoutError) as exc:
                log.error("the audit writer process stopped or hangs; a new one starts on next use")
                await _kill(process)
                self._process = None
                raise Unavailable("the audit log cannot be written") from exc
        if kind != "ok":
            name, away, cause = value
            if away is None:
                raise Unavailable(f"the audit log cannot be written ({name})")
            # The writer met a dependency away (it logs no line of its own): said here, once.
            dependency(away).failed(cause or name)
            self._away.add(away)
            raise Unavailable("the audit log cannot be written", dependency=away)
        for away in list(self._away):
            if batch or away == "database":  # an empty batch reaches the database alone
                dependency(away).ok()
                self._away.discard(away)
        outcomes: Sequence[CofferError | None] = value
        return outcomes

    async def close(self) -> None:
        async with self._lock:
            if self._process is not None:
                await self._stop(self._process)
                self._process = None

    @staticmethod
    async def _stop(process: asyncio.subprocess.Process) -> None:
        if process.stdin is not None:
            process.stdin.close()  # the writer finishes its batch, sees the end and exits
        try:
            await asyncio.wait_for(process.wait(), _CLOSE_TIMEOUT)
        except TimeoutError:
            await _kill(process)


async def _kill(process: asyncio.subprocess.Process) -> None:
    """Kill ``process`` unless it has already exited (then killing it would raise)."""
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):  # exited between the check and the kill
            process.kill()
    await process.wait()


async def serve(committer: Committer, requests: IO[bytes], replies: IO[bytes]) -> None:
    """The writer's end: commit each batch read from ``requests``, answer on ``replies``, until
    the server closes the pipe (or dies: then the pipe closes too)."""
    while (batch := read_frame(requests)) is not None:
        try:
            reply: tuple[str, object] = ("ok", list(await committer.commit(batch)))
        except Exception as exc:
            away = dependency_of(exc)
            if away is None:
                failures.failure(logging.ERROR, type(exc).__name__,
                                 "audit writer: %d record(s) could not be written", len(batch),
                                 exc_info=exc)  # fmt: skip
            # A dependency away is the server's to log (once): it gets the cause.
            reply = ("error", (type(exc).__name__, away, away and dependency(away).cause))
        replies.write(frame(reply))
        replies.flush()
