"""Token buckets of the rate limits: refill, the wait they give, and bounded memory."""

from __future__ import annotations

import pytest

from coffer.errors import RateLimited
from coffer.service.limits import MAX_KEYS, RateLimits, TokenBuckets


class Timer:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_bucket_holds_one_seconds_worth_and_refills_at_the_rate() -> None:
    timer = Timer()
    buckets = TokenBuckets(4, timer)
    assert [buckets.take("a") for _ in range(4)] == [0.0] * 4
    assert buckets.take("a") == pytest.approx(0.25)  # one token comes back in a quarter second
    timer.now += 10  # idle for long: full again, never more than the rate
    assert [buckets.take("a") == 0.0 for _ in range(5)] == [True] * 4 + [False]
    assert buckets.take("b") == 0.0, "each key has its own bucket"


def test_memory_is_bounded_by_forgetting_the_oldest_bucket() -> None:
    timer = Timer()
    buckets = TokenBuckets(1, timer)
    assert buckets.take("first") == 0.0
    assert buckets.take("first") > 0.0
    for n in range(MAX_KEYS):
        buckets.take(f"address-{n}")
    assert len(buckets._buckets) == MAX_KEYS
    assert buckets.take("first") == 0.0, "forgotten: a new, full bucket"


def test_rate_limited_carries_whole_seconds_and_is_counted() -> None:
    counted: list[str] = []
    limits = RateLimits(0.5, None, Timer(), counted.append)
    limits.principal("p")
    with pytest.raises(RateLimited) as raised:
        limits.principal("p")
    assert raised.value.retry_after == 2
    assert counted == ["principal"]
    limits.failed_authentication("10.0.0.1")  # that limit is off: nothing raised
