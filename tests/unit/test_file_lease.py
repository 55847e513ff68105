"""The background jobs' lease among workers on one SQLite file: an exclusive ``flock``."""

from __future__ import annotations

import asyncio
from pathlib import Path

from coffer.storage.sqlite_changes import FileLease


def test_one_holder_at_a_time_and_the_next_takes_over_when_it_lets_go(tmp_path: Path) -> None:
    async def scenario() -> None:
        first, second = FileLease(tmp_path / "jobs.lock"), FileLease(tmp_path / "jobs.lock")
        assert await first.held()
        assert not await second.held()
        assert await first.held()  # still the holder
        await first.release()
        assert await second.held()
        assert not await first.held()
        await second.release()

    asyncio.run(scenario())
