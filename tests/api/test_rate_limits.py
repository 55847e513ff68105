"""Rate limits: per principal, and failed authentications per source address; 429
``rate_limited`` with ``Retry-After``, and nobody else held back."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from coffer.bootstrap import build_app
from tests.api.test_access import error
from tests.conftest import FakeClock, Kms, initialised, make_settings

KEYS = "/v1/kms/nl-01/keys"


class Timer:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def timer() -> Timer:
    return Timer()


@pytest.fixture
def limited(tmp_path: Path, timer: Timer) -> Iterator[Kms]:
    settings = make_settings(tmp_path / "data", rate_limit_per_principal=5,
                             rate_limit_auth_failures_per_second=3)  # fmt: skip
    boot = initialised(settings)
    clock = FakeClock()
    app = build_app(settings, clock=clock, run_scheduler=False, timer=timer)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield Kms(client, settings, boot, clock)


def limited_count(kms: Kms, limit: str) -> float:
    found = re.search(rf'coffer_rate_limited_total\{{limit="{limit}"\}} (\S+)',
                      kms.client.get("/metrics").text)  # fmt: skip
    return float(found.group(1)) if found else 0.0


def test_a_principal_over_its_rate_gets_429_with_retry_after_and_others_do_not(
    limited: Kms, timer: Timer
) -> None:
    other = {"Authorization": f"Bearer {limited.add_principal('kms:ReadAccess')}",
             "X-Organisation-Identity": limited.org}  # fmt: skip
    before = limited_count(limited, "principal")
    assert [limited.get(KEYS).status_code for _ in range(5)] == [200] * 5
    answer = limited.get(KEYS)
    error(answer, 429, "rate_limited")
    assert answer.headers["Retry-After"] == "1"
    assert limited.get(KEYS, headers=other).status_code == 200, "another principal is not held"
    assert limited_count(limited, "principal") == before + 1
    timer.now += 0.5  # two and a half tokens back
    assert [limited.get(KEYS).status_code for _ in range(3)] == [200, 200, 429]
    records = limited.get("/v1/audit?responseStatus=429")  # itself limited: wait a second
    timer.now += 1.0
    records = limited.get("/v1/audit?responseStatus=429&action=kms.key.list")
    assert records.status_code == 200, records.text
    assert len(records.json()["items"]) == 2, "a limited request is audited like any other"


def test_a_flood_of_bad_tokens_gets_429_and_a_valid_caller_is_served_meanwhile(
    limited: Kms, timer: Timer
) -> None:
    statuses = []
    served = []
    counted_before = limited_count(limited, "auth_failures")  # metrics are the process's
    for n in range(300):
        bad = limited.client.get(KEYS, headers={"Authorization": f"Bearer coffer_bad{n}"})
        statuses.append(bad.status_code)
        if n % 50 == 0:
            timer.now += 1.0  # the valid caller's own bucket refills; the flood goes on
            served.append(limited.get(KEYS).status_code)
    assert statuses.count(401) < 30
    assert statuses.count(429) > 270
    assert bad.headers["Retry-After"] == "1"
    assert bad.json()["code"] == "rate_limited"
    assert served == [200] * 6
    assert limited_count(limited, "auth_failures") - counted_before == statuses.count(429)


def test_the_limits_can_be_switched_off(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data", rate_limit_per_principal=0,
                             rate_limit_auth_failures_per_second=0)  # fmt: skip
    boot = initialised(settings)
    with TestClient(build_app(settings, run_scheduler=False)) as client:
        kms = Kms(client, settings, boot, FakeClock())
        assert {kms.get(KEYS).status_code for _ in range(50)} == {200}
        bad = {kms.client.get(KEYS, headers={"Authorization": "Bearer coffer_x"}).status_code
               for _ in range(50)}  # fmt: skip
        assert bad == {401}
