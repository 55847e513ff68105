"""Rate limits: token buckets in memory, per server process (each worker has its own).

Two limits, each answered with 429 ``rate_limited`` and ``Retry-After``:

* **per principal**: every authenticated request (KMS and administration) takes a token from its
  principal's bucket, refilled at ``rate_limit_per_principal`` per second (the bucket holds one
  second's worth);
* **per source address, failed authentications**: a request whose token is not valid takes a
  token from its address's bucket (``rate_limit_auth_failures_per_second``); beyond it the
  answer is 429 rather than 401. Valid tokens from the same address are not held back.

Buckets are kept for at most ``MAX_KEYS`` principals or addresses at once (beyond, the oldest
bucket is forgotten: it starts full again if its key comes back), so a flood of new addresses
cannot grow memory without bound.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from coffer.errors import RateLimited

MAX_KEYS = 10_000


class TokenBuckets:
    """One token bucket per key: ``rate`` tokens a second, holding one second's worth (at
    least one token)."""

    def __init__(self, rate: float, timer: Callable[[], float]) -> None:
        self._rate = float(rate)
        self._capacity = max(1.0, self._rate)
        self._timer = timer
        self._buckets: dict[str, tuple[float, float]] = {}  # key → (tokens, when)

    def take(self, key: str) -> float:
        """Take a token for ``key``: 0.0 if there was one, else the seconds until there is."""
        now = self._timer()
        buckets = self._buckets
        tokens, then = buckets.get(key) or (self._capacity, now)
        tokens = min(self._capacity, tokens + (now - then) * self._rate)
        if tokens >= 1.0:
            buckets[key] = (tokens - 1.0, now)
            wait = 0.0
        else:
            buckets[key] = (tokens, now)
            wait = (1.0 - tokens) / self._rate
        if len(buckets) > MAX_KEYS:  # the first made goes (it comes back full if still used)
            del buckets[next(iter(buckets))]
        return wait


class RateLimits:
    """The limits a server process applies (``None`` rate: that limit is off)."""

    def __init__(
        self,
        per_principal: float | None,
        auth_failures_per_source: float | None,
        timer: Callable[[], float],
        meter: Callable[[str], None] | None = None,
    ) -> None:
        self._principals = TokenBuckets(per_principal, timer) if per_principal else None
        self._sources = (
            TokenBuckets(auth_failures_per_source, timer) if auth_failures_per_source else None
        )
        self._meter = meter

    def principal(self, identity: str) -> None:
        """Raise ``RateLimited`` if ``identity`` is over its rate."""
        if self._principals is not None:
            self._check(self._principals.take(identity), "principal")

    def failed_authentication(self, source: str | None) -> None:
        """Raise ``RateLimited`` if ``source`` failed to authenticate too often."""
        if self._sources is not None:
            self._check(self._sources.take(source or "unknown"), "auth_failures")

    def _check(self, wait: float, limit: str) -> None:
        if wait > 0.0:
            if self._meter is not None:
                self._meter(limit)
            raise RateLimited(retry_after=max(1, math.ceil(wait)))
