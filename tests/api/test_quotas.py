"""Quotas: keys per organisation and versions per key; 409 ``quota_exceeded``, nothing stored,
other organisations untouched, and scheduled rotation reports a key at its quota."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from tests.api.test_access import error
from tests.conftest import Kms, initialised, make_settings, open_kms, sync_engine

KEYS = "/v1/kms/nl-01/keys"


@pytest.fixture
def small(tmp_path: Path) -> Iterator[Kms]:
    settings = make_settings(tmp_path / "data", max_keys_per_organisation=3,
                             max_versions_per_key=3)  # fmt: skip
    yield from open_kms(settings, initialised(settings))


def stored_keys(kms: Kms) -> int:
    engine = sync_engine(kms.settings)
    try:
        with engine.connect() as conn:
            return int(conn.execute(text("SELECT count(*) FROM keys")).scalar_one())
    finally:
        engine.dispose()


def test_an_organisation_at_its_key_quota_gets_409_and_nothing_is_stored(small: Kms) -> None:
    for n in range(3):
        small.create_key(f"k{n}")
    assert small.client.delete(f"{KEYS}/k0", headers=small.headers).status_code == 200
    answer = small.post(KEYS, {"name": "one-more", "keyType": "aes256-gcm96"})
    error(answer, 409, "quota_exceeded")
    assert "its quota is 3" in answer.json()["message"]
    assert "they count until purged" in answer.json()["message"]
    assert stored_keys(small) == 3
    record = small.get("/v1/audit?limit=1").json()["items"][0]
    assert (record["action"], record["context"]["status"]) == ("kms.key.create", 409)

    other = small.post("/v1/organisations", {"name": "Organisation B"}).json()["identity"]
    in_b = {**small.headers, "X-Organisation-Identity": other}
    bound = small.post("/v1/iam/role-bindings", {"principal": small.boot.principal.identity,
                                                 "policy": "kms:FullAccess"}, headers=in_b)  # fmt: skip
    assert bound.status_code == 201
    created = small.post(KEYS, {"name": "b", "keyType": "aes256-gcm96"}, headers=in_b)
    assert created.status_code == 201, "another organisation has its own quota"


def test_a_key_at_its_version_quota_cannot_rotate_by_hand_or_by_schedule(small: Kms) -> None:
    small.create_key("k", keyRotationEnabled=True, rotationPeriodInDays=1)
    for _ in range(2):
        assert small.post(f"{KEYS}/k/rotate").status_code == 200
    answer = small.post(f"{KEYS}/k/rotate")
    error(answer, 409, "quota_exceeded")
    assert "3 versions, its quota is 3" in answer.json()["message"]
    assert small.get(f"{KEYS}/k").json()["latestVersion"] == 3
    small.clock.advance(days=1, seconds=1)
    report = small.run(small.scheduler.run_once)
    assert report.rotated == []
    assert len(report.failed) == 1, "reported (and backed off), not counted as a lost race"
    assert report.lost_races == 0
    encrypted = small.post(f"{KEYS}/k/encrypt", {"plaintext": "AA=="})
    assert encrypted.status_code == 200, "the key keeps working"
