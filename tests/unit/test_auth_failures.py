"""The token bucket that bounds how many failed authentications are recorded one by one."""

from __future__ import annotations

from coffer.service.operations import MAX_SOURCES, AuthFailures


class Timer:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_source_gets_its_rate_per_minute_then_is_counted() -> None:
    timer = Timer()
    failures = AuthFailures(60, timer)
    assert all(failures.admit("10.0.0.1") for _ in range(60))
    assert not any(failures.admit("10.0.0.1") for _ in range(40))
    assert failures.admit("10.0.0.2")  # another source has its own bucket
    timer.now += 1.0  # one more a second
    assert failures.admit("10.0.0.1")
    assert not failures.admit("10.0.0.1")
    assert failures.take() == {"10.0.0.1": 41}
    assert failures.take() == {}
    timer.now += 60.0
    assert sum(failures.admit("10.0.0.1") for _ in range(100)) == 60


def test_unknown_sources_share_one_bucket_and_the_table_stays_bounded() -> None:
    failures = AuthFailures(1, Timer())
    assert failures.admit(None)
    assert not failures.admit(None)
    for n in range(MAX_SOURCES + 50):
        failures.admit(f"10.{n // 65536}.{n // 256 % 256}.{n % 256}")
    assert len(failures._buckets) <= MAX_SOURCES
    assert failures.take() == {"unknown": 1}
