from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from coffer.domain.keys import KeySpec
from coffer.service.caches import Cache, KeyCache


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_entries_expire_after_the_ttl() -> None:
    clock = Clock()
    cache: Cache[str, int] = Cache(10, 30.0, clock)
    cache.put("a", 1)
    clock.now = 29.9
    assert cache.get("a") == 1
    clock.now = 30.0
    assert cache.get("a") is None


def test_cache_is_bounded_and_drops_the_oldest_first() -> None:
    cache: Cache[int, int] = Cache(3, 30.0, Clock())
    for i in range(5):
        cache.put(i, i)
    assert len(cache) == 3
    assert [cache.get(i) for i in range(5)] == [None, None, 2, 3, 4]


def test_a_key_change_invalidates_every_reference_to_it() -> None:
    key = KeySpec.build(name="k", key_type="aes256-gcm96").new_key(
        organisation_identity="org-a",
        region="nl-01",
        project_identity=None,
        imported=False,
        now=datetime.now(UTC),
    )
    cache = KeyCache(100, 30.0, Clock())
    by_slug = ("org-a", "nl-01", None, "k")
    by_identity = ("org-a", "nl-01", None, key.identity)
    cache.put(by_slug, key)
    cache.put(by_identity, key)
    assert cache.get(by_slug) is key
    cache.invalidate(key.identity)
    assert cache.get(by_slug) is None
    assert cache.get(by_identity) is None


def test_concurrent_misses_share_one_load() -> None:
    cache: Cache[str, int] = Cache(10, 30.0, Clock())
    calls = 0

    async def load() -> int:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.01)
        return 42

    async def main() -> list[int | None]:
        return list(await asyncio.gather(*(cache.get_or_load("k", load) for _ in range(50))))

    assert asyncio.run(main()) == [42] * 50
    assert calls == 1
    assert cache.get("k") == 42


def test_a_cancelled_waiter_does_not_cancel_the_load_of_the_others() -> None:
    cache: Cache[str, int] = Cache(10, 30.0, Clock())

    async def load() -> int:
        await asyncio.sleep(0.02)
        return 7

    async def main() -> int | None:
        first = asyncio.ensure_future(cache.get_or_load("k", load))
        second = asyncio.ensure_future(cache.get_or_load("k", load))
        await asyncio.sleep(0.005)
        first.cancel()
        return await second

    assert asyncio.run(main()) == 7


def test_failed_and_empty_loads_are_not_cached() -> None:
    cache: Cache[str, int] = Cache(10, 30.0, Clock())

    async def fail() -> int:
        raise RuntimeError("database down")

    async def nothing() -> int | None:
        return None

    async def main() -> None:
        with pytest.raises(RuntimeError):
            await cache.get_or_load("k", fail)
        assert await cache.get_or_load("k", nothing) is None
        assert await cache.get_or_load("k", lambda: asyncio.sleep(0, result=5)) == 5

    asyncio.run(main())
    assert cache.get("k") == 5
