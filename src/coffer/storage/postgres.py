"""What several nodes on one PostgreSQL share besides the tables: change notifications between
their caches (``LISTEN``/``NOTIFY``) and the lease that lets one node at a time run the background
jobs (a session-level advisory lock).

Both hold a connection of their own, outside the pools: a notification or a lock belongs to a
session, and dies with it. That is the point for the lease: when the node holding it dies, its
session ends and another node's next attempt takes the lock.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Callable

import psycopg
from sqlalchemy.engine import make_url

from coffer.storage.outages import DATABASE

log = logging.getLogger(__name__)

CHANNEL = "coffer_changes"
#: The advisory lock of the background jobs (an arbitrary constant, the same on every node).
JOBS_LOCK = 0x636F66666572  # "coffer"
RECONNECT_SECONDS = 1.0
CONNECT_TIMEOUT_SECONDS = 5


def conninfo(url: str) -> str:
    """A psycopg connection string from the server's SQLAlchemy URL."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


async def _connect(url: str, purpose: str) -> psycopg.AsyncConnection[tuple[object, ...]]:
    # The application name says which node holds a session (and so the jobs' lock).
    return await psycopg.AsyncConnection.connect(
        conninfo(url),
        autocommit=True,
        connect_timeout=CONNECT_TIMEOUT_SECONDS,
        application_name=f"coffer-{purpose}:{socket.gethostname()}:{os.getpid()}",
    )


class PgChangeBus:
    """Publishes this node's changes and hands other nodes' to ``on_change``."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._publisher: psycopg.AsyncConnection[tuple[object, ...]] | None = None
        self._lock = asyncio.Lock()

    async def publish(self, payload: str) -> None:
        """Tell every listening node (this one included). Best effort: a node that misses it
        still drops the entry when its cache TTL runs out."""
        async with self._lock:
            for attempt in range(2):
                try:
                    if self._publisher is None or self._publisher.closed:
                        self._publisher = await _connect(self._url, "changes")
                    await self._publisher.execute("SELECT pg_notify(%s, %s)", (CHANNEL, payload))
                    return
                except (psycopg.Error, OSError):
                    self._publisher = None
                    if attempt == 1:
                        log.warning("change notification %s could not be sent", payload)

    async def listen(self, on_change: Callable[[str], None], on_reset: Callable[[], None]) -> None:
        """Deliver notifications until cancelled, reconnecting after a lost connection. After
        every (re)connection ``on_reset`` runs: what changed meanwhile was not heard."""
        while True:
            try:
                connection = await _connect(self._url, "changes")
                async with connection:
                    await connection.execute(f"LISTEN {CHANNEL}")
                    DATABASE.ok()
                    on_reset()
                    async for notification in connection.notifies():
                        try:
                            on_change(notification.payload)
                        except Exception:  # one bad notification must not end listening
                            log.exception("change notification could not be applied")
            except (psycopg.OperationalError, psycopg.InterfaceError, OSError) as exc:
                DATABASE.failed(exc)  # the database is away: said once, and when it is back
            except psycopg.Error as exc:
                log.warning(
                    "change notifications interrupted (%s); reconnecting", type(exc).__name__
                )
            await asyncio.sleep(RECONNECT_SECONDS)

    async def close(self) -> None:
        if self._publisher is not None:
            await self._publisher.close()
            self._publisher = None


class PgLease:
    """The background jobs' lease: held while this node's session holds the advisory lock."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._connection: psycopg.AsyncConnection[tuple[object, ...]] | None = None

    async def held(self) -> bool:
        """Whether this node holds the lease now (taking it if it is free)."""
        try:
            if self._connection is not None and not self._connection.closed:
                # Still ours only if the session is alive.
                await self._connection.execute("SELECT 1")
                return True
            self._connection = await _connect(self._url, "changes")
            cursor = await self._connection.execute("SELECT pg_try_advisory_lock(%s)", (JOBS_LOCK,))
            row = await cursor.fetchone()
            if row is not None and row[0] is True:
                log.info("this node now runs the background jobs")
                return True
            await self._connection.close()
            self._connection = None
            return False
        except (psycopg.Error, OSError):
            if self._connection is not None:
                await self._connection.close()
            self._connection = None
            return False

    async def release(self) -> None:
        if self._connection is not None:
            await self._connection.close()  # the session ends: the lock goes with it
            self._connection = None
