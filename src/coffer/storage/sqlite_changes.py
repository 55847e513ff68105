"""Several server processes on one SQLite file (``coffer serve --workers N``): change
notifications through a table that every process polls, and the background jobs' lease as an
exclusive lock on a file of the data directory.

SQLite has no ``NOTIFY``; a table with an increasing id does the same job at the cost of one
indexed read per process every ``POLL_SECONDS``. Rows older than ``KEEP_SECONDS`` are deleted by
the publishers, so the table stays small.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import func, insert, select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from coffer.storage import schema

log = logging.getLogger(__name__)

POLL_SECONDS = 0.1
KEEP_SECONDS = 600.0


class SqliteChangeBus:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def publish(self, payload: str) -> None:
        table = schema.change_events
        now = datetime.now(UTC)
        try:
            async with self._engine.begin() as conn:
                await conn.execute(insert(table).values(payload=payload, created_at=now))
                await conn.execute(
                    table.delete().where(table.c.created_at < now - timedelta(seconds=KEEP_SECONDS))
                )
        except DBAPIError:
            log.warning("change notification %s could not be stored", payload)

    async def listen(self, on_change: Callable[[str], None], on_reset: Callable[[], None]) -> None:
        table = schema.change_events
        last: int | None = None
        while True:
            try:
                async with self._engine.connect() as conn:
                    if last is None:
                        last = await conn.scalar(select(func.coalesce(func.max(table.c.id), 0)))
                        on_reset()
                    rows = (
                        await conn.execute(
                            select(table.c.id, table.c.payload)
                            .where(table.c.id > last)
                            .order_by(table.c.id)
                        )
                    ).all()
                for row in rows:
                    try:
                        on_change(row.payload)
                    except Exception:  # one bad notification must not end listening
                        log.exception("change notification could not be applied")
                    last = row.id
            except DBAPIError:
                log.warning("change notifications interrupted; reading them again")
                last = None
            await asyncio.sleep(POLL_SECONDS)

    async def close(self) -> None:
        return None


class FileLease:
    """Held by the process that holds an exclusive ``flock`` on ``path`` (released by the
    kernel when the process dies)."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._fd: int | None = None

    async def held(self) -> bool:
        if self._fd is not None:
            return True
        fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._fd = fd
        log.info("this process now runs the background jobs")
        return True

    async def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the lock
            self._fd = None
