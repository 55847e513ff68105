"""Expensive work on a bounded pool of its own: RSA key generation, BYOK unwrapping and RSA
private-key operations (milliseconds of CPU each).

The pool has ``threads`` workers and takes at most ``queue`` jobs at once (running or waiting);
a job beyond that is refused at once with 503 ``busy`` and ``Retry-After`` rather than queued
without bound. Database reads and the audit log keep their own threads, so a flood of RSA-4096
key creations cannot hold up a decryption with AES.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

from coffer.domain.keytypes import KeyType
from coffer.errors import Busy

#: Key types whose material takes milliseconds or more to make.
SLOW_TO_GENERATE = frozenset({KeyType.RSA_2048, KeyType.RSA_3072, KeyType.RSA_4096})

P = ParamSpec("P")
T = TypeVar("T")


class ExpensiveWork:
    def __init__(self, threads: int, queue: int, meter: Callable[[], None] | None = None) -> None:
        self._threads = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="coffer-work")
        self._room = queue
        self._meter = meter

    async def run(self, work: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """``work(*args)`` on the pool; ``Busy`` if the pool has as many jobs as it takes."""
        if self._room <= 0:
            if self._meter is not None:
                self._meter()
            raise Busy("too much expensive work in progress (key generation, RSA): retry shortly")
        self._room -= 1
        try:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._threads, lambda: work(*args, **kwargs))
        finally:
            self._room += 1

    async def generate(self, key_type: KeyType, generate: Callable[[], bytes]) -> bytes:
        """New key material: RSA on the pool, the rest (microseconds) on a plain thread."""
        if key_type in SLOW_TO_GENERATE:
            return await self.run(generate)
        return await asyncio.to_thread(generate)

    def close(self) -> None:
        self._threads.shutdown(wait=False, cancel_futures=True)
