"""Versions, rotation, disable/enable, deletion and purge (spec §5.9, §5.12)."""

from __future__ import annotations

import base64
import time
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from coffer.domain.permissions import ScopeKind
from coffer.errors import Unavailable
from coffer.storage import changes, schema
from tests.api.test_access import error
from tests.conftest import Kms, sync_engine

KEYS = "/v1/kms/nl-01/keys"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def encrypt(kms: Kms, key: str, plaintext: bytes = b"data", **extra: Any) -> str:
    response = kms.post(f"{KEYS}/{key}/encrypt", {"plaintext": b64(plaintext), **extra})
    assert response.status_code == 200, response.text
    ciphertext: str = response.json()["ciphertext"]
    return ciphertext


def decrypts(kms: Kms, key: str, ciphertext: str, plaintext: bytes = b"data") -> bool:
    response = kms.post(f"{KEYS}/{key}/decrypt", {"ciphertext": ciphertext})
    if response.status_code == 200:
        assert base64.b64decode(response.json()["plaintext"]) == plaintext
        return True
    assert (response.status_code, response.json()["code"]) == (400, "invalid_ciphertext")
    return False


def call(kms: Kms, method: str, key: str, op: str = "", body: Any = None) -> Any:
    path = f"{KEYS}/{key}" + (f"/{op}" if op else "")
    return kms.client.request(method, path, json=body, headers=kms.headers)


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def stored_version_rows(kms: Kms, identity: str) -> int:
    engine = sync_engine(kms.settings)
    try:
        with engine.connect() as conn:
            count = conn.scalar(
                select(func.count())
                .select_from(schema.key_versions)
                .where(schema.key_versions.c.key_identity == identity)
            )
    finally:
        engine.dispose()
    return int(count or 0)


# --- rotation ---------------------------------------------------------------------------------


def test_rotate_adds_a_version_and_old_ciphertexts_still_decrypt(kms: Kms) -> None:
    created = kms.create_key("k")
    old = encrypt(kms, "k")
    kms.clock.advance(seconds=5)
    response = call(kms, "POST", "k", "rotate")
    assert response.status_code == 200, response.text
    rotated = response.json()
    assert rotated["latestVersion"] == 2
    assert rotated["minDecryptionVersion"] == 1
    assert [(v["version"], v["status"]) for v in rotated["versions"]] == [
        (1, "active"),
        (2, "active"),
    ]
    assert rotated["objectVersion"] == created["objectVersion"] + 1
    assert parse_time(rotated["updatedAt"]) > parse_time(created["updatedAt"])
    assert rotated["createdAt"] == created["createdAt"]
    assert stored_version_rows(kms, created["identity"]) == 2

    new = encrypt(kms, "k")
    assert new.startswith("thalassa:v2:")
    assert decrypts(kms, "k", old)
    assert decrypts(kms, "k", new)
    assert encrypt(kms, "k", keyVersion="1").startswith("thalassa:v1:")
    shown = kms.get(f"{KEYS}/k").json()
    # GET of one key adds each version's encryptions (an extension) to what rotate showed.
    assert [v.pop("encryptions") for v in shown["versions"]] == [2, 1]
    assert shown == rotated


def test_old_ciphertexts_decrypt_after_100_rotations(kms: Kms) -> None:
    kms.create_key("k")
    sealed = {1: encrypt(kms, "k", b"v1")}
    for version in range(2, 102):
        assert call(kms, "POST", "k", "rotate").status_code == 200
        if version % 25 == 0:
            sealed[version] = encrypt(kms, "k", f"v{version}".encode())
    kms.services.keyring._handles.clear()  # as after a restart: every version from storage
    for version, ciphertext in sealed.items():
        assert ciphertext.startswith(f"thalassa:v{version}:")
        assert decrypts(kms, "k", ciphertext, f"v{version}".encode())
    assert kms.get(f"{KEYS}/k").json()["latestVersion"] == 101


def test_get_of_a_key_with_1000_versions(kms: Kms, capsys: pytest.CaptureFixture[str]) -> None:
    created = kms.create_key("k")
    for _ in range(999):
        assert call(kms, "POST", "k", "rotate").status_code == 200
    kms.services.lifecycle._scope.keys.invalidate(created["identity"])
    start = time.perf_counter()
    response = kms.get(f"{KEYS}/k")
    cold = time.perf_counter() - start
    start = time.perf_counter()
    kms.get(f"{KEYS}/k")
    warm = time.perf_counter() - start
    assert response.status_code == 200
    assert len(response.json()["versions"]) == 1000
    with capsys.disabled():
        print(f"\nget, key with 1000 versions: {cold * 1e3:.1f} ms cold, {warm * 1e3:.1f} ms warm")


def test_rotation_settings_validation(kms: Kms) -> None:
    kms.create_key("k")
    error(call(kms, "PATCH", "k", "rotation", {"keyRotationEnabled": True}), 400, "invalid_request")
    error(call(kms, "PATCH", "k", "rotation", {"rotationPeriodInDays": 0}), 400, "invalid_request")
    error(call(kms, "PATCH", "k", "rotation", {"rotationPeriodInDays": 3651}), 400,
          "invalid_request")  # fmt: skip
    error(call(kms, "PATCH", "k", "rotation", {"period": 5}), 400, "invalid_request")
    unchanged = kms.get(f"{KEYS}/k").json()
    assert unchanged["objectVersion"] == 1

    updated = call(kms, "PATCH", "k", "rotation", {"rotationPeriodInDays": 30}).json()
    assert (updated["keyRotationEnabled"], updated["rotationPeriodInDays"]) == (False, 30)
    # Enabling may use the period stored before; absent fields stay as they are.
    enabled = call(kms, "PATCH", "k", "rotation", {"keyRotationEnabled": True}).json()
    assert (enabled["keyRotationEnabled"], enabled["rotationPeriodInDays"]) == (True, 30)
    same = call(kms, "PATCH", "k", "rotation", {}).json()
    assert (same["keyRotationEnabled"], same["rotationPeriodInDays"]) == (True, 30)
    assert same["objectVersion"] == 4
    off = call(kms, "PATCH", "k", "rotation", {"keyRotationEnabled": False}).json()
    assert (off["keyRotationEnabled"], off["rotationPeriodInDays"]) == (False, 30)


# --- states -----------------------------------------------------------------------------------


def test_disable_takes_effect_at_once_even_with_warm_caches(kms: Kms) -> None:
    kms.create_key("k")
    sealed = encrypt(kms, "k")
    assert decrypts(kms, "k", sealed)  # every cache is warm now
    disabled = call(kms, "POST", "k", "disable")
    assert disabled.status_code == 200
    assert disabled.json()["status"] == "disabled"
    error(kms.post(f"{KEYS}/k/encrypt", {"plaintext": "AA=="}), 400, "key_disabled")
    error(kms.post(f"{KEYS}/k/decrypt", {"ciphertext": sealed}), 400, "key_disabled")
    assert call(kms, "POST", "k", "enable").json()["status"] == "active"
    assert decrypts(kms, "k", sealed)


def test_delete_schedules_deletion_after_the_retention_and_cancel_restores(kms: Kms) -> None:
    kms.create_key("k")
    sealed = encrypt(kms, "k")
    before = kms.clock()
    deleted = call(kms, "DELETE", "k")
    assert deleted.status_code == 200
    body = deleted.json()
    assert body["status"] == "pending_deletion"
    scheduled = parse_time(body["deletionScheduledAt"])
    assert timedelta(days=30) <= scheduled - before < timedelta(days=30, seconds=5)
    error(kms.post(f"{KEYS}/k/encrypt", {"plaintext": "AA=="}), 400, "key_pending_deletion")
    error(kms.post(f"{KEYS}/k/decrypt", {"ciphertext": sealed}), 400, "key_pending_deletion")
    summary = {r["slug"]: r for r in kms.get("/v1/kms/summary").json()["regions"]}
    assert summary["nl-01"]["pendingDeletionKeys"] == 1

    cancelled = call(kms, "DELETE", "k", "cancel-deletion")
    assert cancelled.status_code == 200
    assert cancelled.json()["status"] == "active"
    assert cancelled.json()["deletionScheduledAt"] is None
    assert decrypts(kms, "k", sealed)


def test_purge_after_retention_destroys_the_key_and_every_version(kms: Kms) -> None:
    key = kms.create_key("k")
    call(kms, "POST", "k", "rotate")
    sealed = encrypt(kms, "k")
    call(kms, "DELETE", "k")
    kms.clock.advance(days=29, hours=23)
    assert kms.run(kms.scheduler.run_once).purged == []
    assert kms.get(f"{KEYS}/k").status_code == 200

    kms.clock.advance(hours=1, seconds=1)
    assert kms.run(kms.scheduler.run_once).purged == [key["identity"]]
    error(kms.get(f"{KEYS}/k"), 404, "key_not_found")
    error(kms.get(f"{KEYS}/{key['identity']}"), 404, "key_not_found")
    error(kms.post(f"{KEYS}/k/decrypt", {"ciphertext": sealed}), 404, "key_not_found")
    assert kms.get(KEYS).json() == []
    assert stored_version_rows(kms, key["identity"]) == 0
    # The slug is free again; the identity is never reused.
    again = kms.create_key("k")
    assert again["identity"] != key["identity"]
    assert not decrypts(kms, "k", sealed)


STATES = ["active", "disabled", "pending_deletion"]
# (operation, method, path suffix): the result for each starting state — a new status, or the
# error code of the 400.
TRANSITIONS: dict[tuple[str, str, str], dict[str, str]] = {
    ("disable", "POST", "disable"): {
        "active": "disabled", "disabled": "key_disabled",
        "pending_deletion": "key_pending_deletion"},
    ("enable", "POST", "enable"): {
        "active": "key_active", "disabled": "active", "pending_deletion": "key_pending_deletion"},
    ("delete", "DELETE", ""): {
        "active": "pending_deletion", "disabled": "pending_deletion",
        "pending_deletion": "key_pending_deletion"},
    ("cancel", "DELETE", "cancel-deletion"): {
        "active": "key_active", "disabled": "key_disabled", "pending_deletion": "active"},
    ("rotate", "POST", "rotate"): {
        "active": "active", "disabled": "key_disabled", "pending_deletion": "key_pending_deletion"},
}  # fmt: skip


def bring_to(kms: Kms, key: str, state: str) -> None:
    if state == "disabled":
        assert call(kms, "POST", key, "disable").status_code == 200
    elif state == "pending_deletion":
        assert call(kms, "DELETE", key).status_code == 200


@pytest.mark.parametrize("state", STATES)
@pytest.mark.parametrize("operation", list(TRANSITIONS), ids=[op[0] for op in TRANSITIONS])
def test_every_transition_of_the_lifecycle_table(
    kms: Kms, state: str, operation: tuple[str, str, str]
) -> None:
    kms.create_key("k")
    bring_to(kms, "k", state)
    before = kms.get(f"{KEYS}/k").json()
    expected = TRANSITIONS[operation][state]
    response = call(kms, operation[1], "k", operation[2])
    if expected in STATES:
        assert response.status_code == 200, response.text
        assert response.json()["status"] == expected
        assert response.json()["objectVersion"] == before["objectVersion"] + 1
    else:
        error(response, 400, expected)
        assert kms.get(f"{KEYS}/k").json() == before


def test_min_decryption_version_retires_old_versions(kms: Kms) -> None:
    kms.create_key("k")
    v1 = encrypt(kms, "k")
    call(kms, "POST", "k", "rotate")
    v2 = encrypt(kms, "k")
    raised = call(kms, "PATCH", "k", "versions", {"minDecryptionVersion": 2})
    assert raised.status_code == 200
    assert raised.json()["minDecryptionVersion"] == 2
    assert [v["status"] for v in raised.json()["versions"]] == ["archived", "active"]
    assert not decrypts(kms, "k", v1)
    assert decrypts(kms, "k", v2)
    error(kms.post(f"{KEYS}/k/encrypt", {"plaintext": "AA==", "keyVersion": 1}), 400,
          "invalid_key_version")  # fmt: skip
    other = kms.post(f"{KEYS}/k/decrypt", {"ciphertext": "thalassa:v9:" + v2.split(":")[2]})
    assert (
        other.json()["message"]
        == kms.post(f"{KEYS}/k/decrypt", {"ciphertext": v1}).json()["message"]
    )
    error(call(kms, "PATCH", "k", "versions", {"minDecryptionVersion": 3}), 400,
          "invalid_key_version")  # fmt: skip
    error(call(kms, "PATCH", "k", "versions", {"minDecryptionVersion": 0}), 400,
          "invalid_key_version")  # fmt: skip
    error(call(kms, "PATCH", "k", "versions", {}), 400, "invalid_request")
    # Material is kept until the key is purged: lowering the minimum brings v1 back.
    assert call(kms, "PATCH", "k", "versions", {"minDecryptionVersion": 1}).status_code == 200
    assert decrypts(kms, "k", v1)


def test_lifecycle_permissions_follow_the_policies(kms: Kms) -> None:
    key = kms.create_key("k")
    admin = kms.add_principal("kms:KeyAdministrator")
    user = kms.add_principal("kms:CryptoUser", ScopeKind.KEY, key["identity"])
    as_admin = {"Authorization": f"Bearer {admin}", "X-Organisation-Identity": kms.org}
    as_user = {"Authorization": f"Bearer {user}", "X-Organisation-Identity": kms.org}
    for method, op in [("POST", "rotate"), ("POST", "disable"), ("POST", "enable"),
                       ("DELETE", ""), ("DELETE", "cancel-deletion")]:  # fmt: skip
        path = f"{KEYS}/k" + (f"/{op}" if op else "")
        error(kms.client.request(method, path, headers=as_user), 403, "forbidden")
    assert kms.client.post(f"{KEYS}/k/rotate", headers=as_admin).status_code == 200
    assert kms.client.post(f"{KEYS}/k/disable", headers=as_admin).status_code == 200
    error(kms.client.post(f"{KEYS}/k/encrypt", json={"plaintext": "AA=="}, headers=as_admin),
          403, "forbidden")  # fmt: skip


def test_a_failed_write_during_rotation_leaves_the_key_as_it_was(
    kms: Kms, monkeypatch: pytest.MonkeyPatch
) -> None:
    kms.create_key("k")
    sealed = encrypt(kms, "k")
    before = kms.get(f"{KEYS}/k").json()

    def failing_add_version(*args: Any) -> Any:
        raise Unavailable()  # after the key row's update ran in the same transaction

    monkeypatch.setattr(changes, "add_version_statement", failing_add_version)
    error(call(kms, "POST", "k", "rotate"), 503, "unavailable")
    monkeypatch.undo()

    assert kms.get(f"{KEYS}/k").json() == before
    kms.services.lifecycle._scope.keys.invalidate(before["identity"])
    assert kms.get(f"{KEYS}/k").json() == before  # what is stored, not only what is cached
    assert stored_version_rows(kms, before["identity"]) == 1
    assert encrypt(kms, "k").startswith("thalassa:v1:")
    assert decrypts(kms, "k", sealed)
    assert call(kms, "POST", "k", "rotate").json()["latestVersion"] == 2
