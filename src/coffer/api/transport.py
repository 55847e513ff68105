"""HTTP transport limits that uvicorn's httptools protocol does not enforce itself.

``GuardedHttpToolsProtocol`` is uvicorn's httptools protocol with:

* **header size and count**: the bytes of a request line and headers are counted as they arrive
  (httptools would buffer a header of any size before handing it over), and past
  ``max_header_bytes`` or ``max_headers`` the answer is 431 and the connection is closed (checked
  per chunk received and once the headers are complete: no Python call per header);
* **slow clients**: a request's line and headers must arrive within ``header_timeout_seconds``
  of the connection (or of the previous response), its body within ``body_timeout_seconds`` of
  its headers; a connection that sends nothing is closed after the first (a slow one gets 408);
* **connections**: at most ``max_connections`` open per server process; when full, the oldest
  connection that is waiting for a request is closed to make room, and if every one is busy the
  newcomer gets 503 ``busy``;
* **requests in flight**: at most ``max_concurrent_requests``; beyond, 503 ``busy`` with
  ``Retry-After`` instead of an unbounded queue;
* **malformed HTTP**: 400 with the JSON error body (uvicorn answers in plain text).

Every answer it gives is the API's JSON error body. The limits are read when a connection is
made, from ``LIMITS`` (set by ``configure`` in each server process before it serves).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import resource
import secrets
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httptools
import msgspec
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from coffer.config import Settings
from coffer.schemas import ErrorBody

log = logging.getLogger(__name__)

#: File descriptors kept for everything but client connections (database, files, pipes).
FD_RESERVE = 128


@dataclass(frozen=True, slots=True)
class TransportLimits:
    """The limits, as ``Settings`` has them (their defaults are the settings')."""

    max_header_bytes: int
    max_headers: int
    header_timeout_seconds: float
    body_timeout_seconds: float
    max_connections: int
    max_concurrent_requests: int

    @classmethod
    def of(cls, settings: Settings) -> TransportLimits:
        return cls(
            max_header_bytes=settings.max_header_bytes,
            max_headers=settings.max_headers,
            header_timeout_seconds=settings.header_timeout_seconds,
            body_timeout_seconds=settings.body_timeout_seconds,
            max_connections=settings.max_connections,
            max_concurrent_requests=settings.max_concurrent_requests,
        )


LIMITS = TransportLimits.of(Settings(data_dir=Path()))

_REASONS = {400: b"Bad Request", 408: b"Request Timeout", 431: b"Request Header Fields Too Large",
            503: b"Service Unavailable"}  # fmt: skip


def _answer(status: int, code: str, message: str, retry_after: int | None = None) -> bytes:
    body = msgspec.json.encode(ErrorBody(message, code, secrets.token_hex(16)))
    head = [b"HTTP/1.1 %d %s" % (status, _REASONS[status]), b"content-type: application/json",
            b"content-length: %d" % len(body), b"connection: close"]  # fmt: skip
    if retry_after is not None:
        head.append(b"retry-after: %d" % retry_after)
    return b"\r\n".join(head) + b"\r\n\r\n" + body


async def _busy(scope: Any, receive: Any, send: Any) -> None:
    """The app of a request beyond ``max_concurrent_requests``."""
    body = msgspec.json.encode(
        ErrorBody("too many requests in progress: retry shortly", "busy", secrets.token_hex(16))
    )
    await send({"type": "http.response.start", "status": 503, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
        (b"retry-after", b"1"), (b"connection", b"close"),
    ]})  # fmt: skip
    await send({"type": "http.response.body", "body": body})


#: The order connections were made in (the oldest idle one makes room first).
_OPENED = itertools.count(1)


#: How often each server process looks for connections past their deadline.
SWEEP_SECONDS = 0.5
_WATCHED: dict[int, asyncio.TimerHandle] = {}  # id(connections) → the next sweep


def _watch(loop: asyncio.AbstractEventLoop, connections: set[Any]) -> None:
    """Sweep ``connections`` (a server's) twice a second, from now on, for deadlines passed."""
    if id(connections) in _WATCHED:
        return

    def sweep() -> None:
        now = loop.time()
        for connection in list(connections):
            deadline = getattr(connection, "_deadline", None)
            if deadline is not None and now >= deadline:
                connection._too_slow()
        _WATCHED[id(connections)] = loop.call_later(SWEEP_SECONDS, sweep)

    _WATCHED[id(connections)] = loop.call_later(SWEEP_SECONDS, sweep)


class _Refused(Exception):
    """Raised inside a parser callback to stop parsing: the request is refused."""


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """State kept by the parser's events: ``_in_head`` while bytes belong to a request line and
    headers not complete yet (from the connection, or a request's end, to its next headers),
    ``_pending`` the bytes of that head so far. A response may still be on its way meanwhile
    (pipelining, or a client slow to read): then the head's bytes count all the same."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._limits = LIMITS
        self._in_head = True
        self._pending = 0  # bytes of the head being received (what httptools holds of it)
        self._chunk = 0  # the size of the chunk being parsed
        #: A request ended inside the chunk being parsed: the bytes after it (the next head's
        #: first part, if any) cannot be told from its body, so the next head is measured whole.
        self._ended = False
        self._unmeasured = False
        self._opened = 0
        #: When this connection must have sent (or read) what it owes (``loop.time()``).
        self._deadline: float | None = None
        self._refusal: bytes | None = None

    # --- connections -----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        if len(self.connections) >= self._limits.max_connections and not self._make_room():
            self.transport = transport
            transport.write(_answer(503, "busy", "too many connections: retry shortly", 1))
            transport.close()
            return
        super().connection_made(transport)
        self._opened = next(_OPENED)
        self._next_deadline()
        _watch(self.loop, self.connections)

    def _idle(self) -> bool:
        """Waiting for a request it has not begun to send, with no response under way."""
        return (
            self._in_head
            and self._pending == 0
            and (self.cycle is None or self.cycle.response_complete)
            and self.transport is not None
            and not self.transport.is_closing()
        )

    def _make_room(self) -> bool:
        """Close the oldest idle connection."""
        idle = [
            c for c in self.connections if isinstance(c, GuardedHttpToolsProtocol) and c._idle()
        ]
        if not idle:
            return False
        oldest = min(idle, key=lambda other: other._opened)
        oldest.transport.close()
        self.connections.discard(oldest)
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self._deadline = None
        super().connection_lost(exc)

    # --- deadlines -------------------------------------------------------------------------

    # A deadline is a number, checked by one sweep of all connections twice a second: a timer
    # per request (armed and cancelled three times each) cost more than the request's routing.

    def _next_deadline(self) -> None:
        """A head must arrive within ``header_timeout_seconds``; a body, and a response (sent and
        read: a client that does not read holds a task), within ``body_timeout_seconds``."""
        responding = self.cycle is not None and not self.cycle.response_complete
        limits = self._limits
        seconds = (
            limits.header_timeout_seconds
            if self._in_head and not responding
            else limits.body_timeout_seconds
        )
        self._deadline = self.loop.time() + seconds

    def _too_slow(self) -> None:
        self._deadline = None
        if self.transport is None or self.transport.is_closing():
            return
        if self._in_head and self._pending and (self.cycle is None or self.cycle.response_complete):
            self.transport.write(_answer(408, "request_timeout", "the request came too slowly"))
        self.transport.close()  # a body or a response under way: the app sees the client leave

    # --- parsing ---------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self._refusal is not None:
            return
        self._unset_keepalive_if_required()
        self._chunk = len(data)
        self._ended = False
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        except httptools.HttpParserError:
            if self._refusal is None:
                self._refusal = _answer(400, "invalid_request", "malformed HTTP request")
        if self._ended:
            self._unmeasured = self._unmeasured or self._in_head
        elif self._refusal is None and self._in_head:
            # The chunk ended inside a head: count it before httptools holds more of it.
            self._pending += len(data)
            if self._pending > self._limits.max_header_bytes:
                self._refuse_headers()
        if self._refusal is not None:
            self._deadline = None
            self.transport.write(self._refusal)
            self.transport.close()

    def _refuse_headers(self) -> None:
        self._refusal = _answer(
            431,
            "request_header_fields_too_large",
            f"request headers must be at most {self._limits.max_header_bytes} bytes in "
            f"{self._limits.max_headers} fields",
        )

    def on_headers_complete(self) -> None:
        limits = self._limits
        if (
            len(self.headers) > limits.max_headers
            # Bytes of this chunk were not counted yet: measure the head itself if they could
            # have taken it over the limit.
            or (
                (self._unmeasured or self._pending + self._chunk > limits.max_header_bytes)
                and self._head_size() > limits.max_header_bytes
            )
        ):
            self._refuse_headers()
            raise _Refused
        self._in_head = False
        self._pending = 0
        self._unmeasured = False
        if len(self.tasks) >= limits.max_concurrent_requests:
            app, self.app = self.app, _busy
            try:
                super().on_headers_complete()
            finally:
                self.app = app
        else:
            super().on_headers_complete()
        self._next_deadline()

    def _head_size(self) -> int:
        return len(self.url) + sum(len(name) + len(value) for name, value in self.headers)

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._in_head = True  # what comes next is the next request's head
        self._ended = True  # ... and this chunk's bytes are not all of it: see data_received
        self._next_deadline()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._next_deadline()


def configure(limits: TransportLimits) -> TransportLimits:
    """Raise this process's soft limit of open files to its hard limit, and set ``LIMITS``
    with ``max_connections`` kept below it (``FD_RESERVE`` left for everything else). Returns
    the limits in force."""
    global LIMITS
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            log.info("open files: soft limit raised from %d to the hard limit %d", soft, hard)
            soft = hard
        except (ValueError, OSError):
            log.warning("open files: the soft limit %d could not be raised to %d", soft, hard)
    else:
        log.info("open files: soft limit %d, hard limit %d", soft, hard)
    ceiling = max(16, soft - FD_RESERVE)
    if limits.max_connections > ceiling:
        log.warning("max_connections %d is above what %d open files allow: %d",
                    limits.max_connections, soft, ceiling)  # fmt: skip
        limits = replace(limits, max_connections=ceiling)
    LIMITS = limits
    return limits
