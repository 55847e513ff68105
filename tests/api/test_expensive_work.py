"""Expensive work (RSA key generation, BYOK unwrapping, RSA private-key operations) runs on a
bounded pool: beyond its queue, 503 ``busy`` with ``Retry-After`` at once, and cheap requests are
served meanwhile."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.conftest import Kms, initialised, make_settings, open_kms

KEYS = "/v1/kms/nl-01/keys"


@pytest.fixture
def narrow(tmp_path: Path) -> Iterator[Kms]:
    settings = make_settings(tmp_path / "data", expensive_work_threads=1,
                             expensive_work_queue=2)  # fmt: skip
    yield from open_kms(settings, initialised(settings))


def test_rsa_key_creations_beyond_the_queue_get_503_busy_and_aes_is_served_meanwhile(
    narrow: Kms,
) -> None:
    narrow.create_key("fast")

    def create(n: int) -> tuple[int, str | None, str | None]:
        answer = narrow.post(KEYS, {"name": f"rsa-{n}", "keyType": "rsa-4096"})
        return answer.status_code, answer.headers.get("retry-after"), answer.json().get("code")

    with ThreadPoolExecutor(max_workers=8) as threads:
        creating = [threads.submit(create, n) for n in range(8)]
        time.sleep(0.05)
        started = time.perf_counter()
        encrypted = narrow.post(f"{KEYS}/fast/encrypt", {"plaintext": "AA=="})
        latency = time.perf_counter() - started
        answers = [f.result() for f in creating]
    assert encrypted.status_code == 200
    assert latency < 0.5, f"AES waited {latency:.3f} s behind RSA key generation"
    created = [a for a in answers if a[0] == 201]
    refused = [a for a in answers if a[0] == 503]
    assert len(created) + len(refused) == 8
    assert 2 <= len(created) < 8
    assert {(retry, code) for _, retry, code in refused} == {("1", "busy")}
    listed = narrow.get(KEYS).json()
    assert len([k for k in listed if k["keyType"] == "rsa-4096"]) == len(created)
