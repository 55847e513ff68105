"""The seal: while sealed nothing answers but health and the seal's own endpoints, nothing is
written or signed; the Shamir seal opens with the threshold of valid, distinct shares."""

from __future__ import annotations

import asyncio
import base64
import itertools
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from coffer.api.routes import ENDPOINTS, Endpoint
from coffer.bootstrap import SealChoice, migrate_seal
from coffer.config import ConfigError
from coffer.domain.seal import SealType
from coffer.service.rotation import RootRotation
from coffer.storage import schema
from tests.api.test_access import error
from tests.conftest import Kms, initialised, make_settings, open_kms, sync_engine

SHAMIR = SealChoice(SealType.SHAMIR, shares=5, threshold=3)
GUARDED = [e for e in ENDPOINTS if not e.sealed_ok]
PATH_VALUES = {"region": "nl-01", "key": "k", "organisation": "default", "token": "tok-x",
               "binding": "rb-x"}  # fmt: skip


def count(kms: Kms, table: Any) -> int:
    engine = sync_engine(kms.settings)
    try:
        with engine.connect() as conn:
            return int(conn.scalar(select(func.count()).select_from(table)) or 0)
    finally:
        engine.dispose()


def unseal(kms: Kms, share: str | None = None, **body: Any) -> Any:
    return kms.client.post("/v1/sys/unseal", json={"key": share, **body} if share else body)


def status(kms: Kms) -> dict[str, Any]:
    response = kms.client.get("/v1/sys/seal-status")
    assert response.status_code == 200, response.text
    found: dict[str, Any] = response.json()
    return found


@pytest.fixture(scope="module")
def sealed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kms]:
    settings = make_settings(tmp_path_factory.mktemp("sealed") / "data")
    yield from open_kms(settings, initialised(settings, SHAMIR))


@pytest.fixture
def shamir(tmp_path: Path) -> Iterator[Kms]:
    settings = make_settings(tmp_path / "data")
    yield from open_kms(settings, initialised(settings, SHAMIR))


@pytest.mark.parametrize("endpoint", GUARDED, ids=lambda e: f"{e.method} {e.path}")
def test_every_endpoint_answers_503_sealed_and_writes_nothing(
    sealed: Kms, endpoint: Endpoint
) -> None:
    before = count(sealed, schema.audit_events)
    path = endpoint.path.format(**PATH_VALUES)
    body = {} if endpoint.request is not None else None
    for headers in (sealed.headers, {}):  # with a token, and with none (not 401: sealed first)
        response = sealed.client.request(endpoint.method, path, headers=headers, json=body)
        error(response, 503, "sealed")
        assert "unseal" in response.json()["message"]
    assert count(sealed, schema.audit_events) == before


def test_while_sealed_health_answers_readiness_does_not(sealed: Kms) -> None:
    assert sealed.client.get("/healthz").json() == {"status": "ok"}
    error(sealed.client.get("/readyz"), 503, "sealed")
    assert sealed.client.get("/metrics").status_code == 200
    assert status(sealed) == {
        "sealed": True,
        "type": "shamir",
        "threshold": 3,
        "shares": 5,
        "progress": 0,
        "installation": sealed.boot.installation,
        "reason": "waiting for unseal key shares (coffer operator unseal)",
    }


def test_while_sealed_the_scheduler_and_the_audit_log_sign_nothing(sealed: Kms) -> None:
    before = count(sealed, schema.audit_checkpoints), count(sealed, schema.audit_events)
    report = sealed.run(sealed.scheduler.run_once)
    assert report.sealed
    assert not report.audit_checkpoint
    assert (count(sealed, schema.audit_checkpoints), count(sealed, schema.audit_events)) == before


def test_the_threshold_of_valid_distinct_shares_unseals(shamir: Kms) -> None:
    keys = shamir.boot.unseal_keys
    assert len(keys) == 5
    assert unseal(shamir, keys[4]).json()["progress"] == 1

    stranger = base64.b64encode(bytes([1]) + os.urandom(32)).decode()
    error(unseal(shamir, stranger), 400, "invalid_unseal_key")
    error(unseal(shamir, keys[4]), 400, "invalid_unseal_key")  # given already
    error(unseal(shamir, "not base64!"), 400, "invalid_unseal_key")
    error(unseal(shamir), 400, "invalid_unseal_key")
    assert status(shamir)["progress"] == 1, "refused shares do not count"

    answer = unseal(shamir, keys[1]).json()
    assert (answer["sealed"], answer["progress"]) == (True, 2)
    error(shamir.get("/v1/kms/summary"), 503, "sealed")
    answer = unseal(shamir, keys[3]).json()
    assert (answer["sealed"], answer["progress"]) == (False, 0)
    assert shamir.get("/v1/kms/summary").status_code == 200
    assert shamir.client.get("/readyz").status_code == 200


def test_shares_unseal_in_any_order_and_reset_forgets_progress(shamir: Kms) -> None:
    keys = shamir.boot.unseal_keys
    for trio in [*itertools.islice(itertools.permutations(keys, 3), 0, 60, 13)]:
        unseal(shamir, trio[0])
        assert unseal(shamir, reset=True).json()["progress"] == 0
        for share in trio:
            last = unseal(shamir, share)
        assert last.json()["sealed"] is False, trio
        assert shamir.post("/v1/sys/seal").json()["sealed"] is True


def test_sealing_takes_a_platform_administrator_and_shuts_everything(shamir: Kms) -> None:
    keys = shamir.boot.unseal_keys
    for share in keys[:3]:
        unseal(shamir, share)
    created = shamir.create_key("before-seal")
    ciphertext = shamir.post(f"/v1/kms/nl-01/keys/{created['identity']}/encrypt",
                             {"plaintext": "aGVsbG8="}).json()["ciphertext"]  # fmt: skip
    app = shamir.add_principal("kms:FullAccess")
    as_app = {"Authorization": f"Bearer {app}", "X-Organisation-Identity": shamir.org}
    error(shamir.client.post("/v1/sys/seal", headers=as_app), 403, "forbidden")
    assert shamir.post("/v1/sys/seal").json()["sealed"] is True
    assert shamir.services.keyring._keks.get(shamir.org) is None  # no KEK left in memory
    error(shamir.post("/v1/kms/nl-01/keys/before-seal/decrypt", {"ciphertext": ciphertext}),
          503, "sealed")  # fmt: skip
    assert status(shamir)["reason"] == "sealed by an operator"

    for share in reversed(keys[2:]):
        unseal(shamir, share)
    decrypted = shamir.post("/v1/kms/nl-01/keys/before-seal/decrypt", {"ciphertext": ciphertext})
    assert decrypted.json()["plaintext"] == "aGVsbG8="
    actions = [row["action"] for row in shamir.get("/v1/audit?limit=100").json()["items"]]
    assert "kms.decrypt" in actions
    engine = sync_engine(shamir.settings)
    table = schema.audit_events
    with engine.connect() as conn:
        recorded = [tuple(r) for r in conn.execute(select(table.c.action, table.c.status))]
    engine.dispose()
    assert recorded.count(("sys.unseal", 200)) == 2
    assert recorded.count(("sys.seal", 200)) == 1
    assert recorded.count(("sys.seal", 403)) == 1  # the application's attempt


def test_a_restart_comes_up_sealed(shamir: Kms) -> None:
    for share in shamir.boot.unseal_keys[:3]:
        unseal(shamir, share)
    assert shamir.get("/v1/kms/summary").status_code == 200
    for restarted in open_kms(shamir.settings, shamir.boot):
        assert status(restarted)["sealed"] is True
        error(restarted.get("/v1/kms/summary"), 503, "sealed")


def test_a_share_of_another_installation_is_refused(shamir: Kms, tmp_path: Path) -> None:
    other = make_settings(tmp_path / "other")
    foreign = initialised(other, SHAMIR).unseal_keys
    for share in foreign:
        error(unseal(shamir, share), 400, "invalid_unseal_key")
    assert status(shamir)["progress"] == 0


def test_the_file_seal_takes_no_shares(kms: Kms) -> None:
    assert status(kms)["sealed"] is False
    assert status(kms)["type"] == "file"
    share = base64.b64encode(os.urandom(33)).decode()
    error(unseal(kms, share), 400, "invalid_unseal_key")


def test_a_move_to_shamir_stopped_half_way_shows_its_shares_and_finishes_when_run_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = make_settings(tmp_path / "data")
    boot = initialised(settings)
    for kms in open_kms(settings, boot):
        kms.create_key("k")
        ciphertext = kms.post("/v1/kms/nl-01/keys/k/encrypt", {"plaintext": "aGk="}).json()
    shown: list[tuple[str, ...]] = []

    async def stops(self: RootRotation) -> bool:
        raise OSError("the disk is full")

    with monkeypatch.context() as patched:
        patched.setattr(RootRotation, "run", stops)
        with pytest.raises(OSError, match="disk is full"):
            asyncio.run(migrate_seal(settings, SHAMIR, show=shown.append))
    (shares,) = shown  # shown the moment the new seal was stored, before the rewrap
    assert len(shares) == 5
    with pytest.raises(ConfigError, match="still sealed"):  # the old key alone opens nothing
        asyncio.run(migrate_seal(settings, SHAMIR, lambda n: [], shown.append))
    asyncio.run(migrate_seal(settings, SHAMIR, lambda n: list(shares[:n]), shown.append))
    assert len(shown) == 1, "no new shares the second time"
    assert not list(settings.data_dir.glob("root.key*"))
    for kms in open_kms(settings, boot):
        for share in shares[2:]:
            unseal(kms, share)
        opened = kms.post("/v1/kms/nl-01/keys/k/decrypt", {"ciphertext": ciphertext["ciphertext"]})
        assert opened.json()["plaintext"] == "aGk="
