"""Authentication, organisation, feature gate, region and permission checks, in spec §1.1 order."""

from __future__ import annotations

import pytest
from sqlalchemy import update

from coffer.domain.permissions import ScopeKind
from coffer.storage import schema
from tests.conftest import Kms, sync_engine

KEYS = "/v1/kms/nl-01/keys"


def error(response, status: int, code: str) -> dict[str, str]:  # type: ignore[no-untyped-def]
    assert response.status_code == status, response.text
    body: dict[str, str] = response.json()
    assert body["code"] == code
    assert body["message"]
    assert body["requestId"] == response.headers["x-request-id"]
    return body


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer coffer_not-a-token"},
        {"Authorization": "Bearer "},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"Authorization": "coffer_token-without-scheme"},
    ],
)
def test_missing_or_unknown_token_is_401(kms: Kms, headers: dict[str, str]) -> None:
    headers = {**headers, "X-Organisation-Identity": kms.org}
    for path in ("/v1/kms/summary", KEYS):
        response = kms.get(path, headers=headers)
        error(response, 401, "unauthenticated")
        assert response.headers["www-authenticate"] == "Bearer"


def test_token_scheme_of_the_go_client_is_accepted(kms: Kms) -> None:
    headers = {"Authorization": f"Token {kms.boot.token}", "X-Organisation-Identity": kms.org}
    assert kms.get(KEYS, headers=headers).status_code == 200
    headers["Authorization"] = f"bearer {kms.boot.token}"
    assert kms.get(KEYS, headers=headers).status_code == 200


def test_token_is_checked_before_the_organisation_header(kms: Kms) -> None:
    error(kms.get(KEYS, headers={}), 401, "unauthenticated")


def test_missing_organisation_header_is_400(kms: Kms) -> None:
    headers = {"Authorization": f"Bearer {kms.boot.token}"}
    for path in ("/v1/kms/summary", KEYS, f"{KEYS}/anything"):
        error(kms.get(path, headers=headers), 400, "organisation_required")


def test_organisation_may_be_named_by_slug(kms: Kms) -> None:
    headers = {**kms.headers, "X-Organisation-Identity": "default"}
    assert kms.get("/v1/kms/summary", headers=headers).status_code == 200


def test_unknown_and_foreign_organisations_get_the_same_403(kms: Kms) -> None:
    unknown = kms.get(KEYS, headers={**kms.headers, "X-Organisation-Identity": "org-nope"})
    # A principal with no binding in this organisation: not a member.
    outsider = kms.add_principal(None)
    foreign = kms.get(
        KEYS, headers={"Authorization": f"Bearer {outsider}", "X-Organisation-Identity": kms.org}
    )
    assert (
        error(unknown, 403, "forbidden")["message"] == error(foreign, 403, "forbidden")["message"]
    )


def test_kms_feature_gate_blocks_everything_but_the_summary(kms: Kms) -> None:
    kms.create_key("app-encryption")
    assert kms.post(f"/v1/organisations/{kms.org}/disable-kms").status_code == 200

    summary = kms.get("/v1/kms/summary")
    assert summary.status_code == 200
    assert summary.json()["featureEnabled"] is False
    assert all(r["totalKeys"] == 0 for r in summary.json()["regions"])
    error(kms.get(KEYS), 403, "kms_not_enabled")
    error(kms.get(f"{KEYS}/app-encryption"), 403, "kms_not_enabled")
    error(kms.post(f"{KEYS}/app-encryption/encrypt", {"plaintext": "AA=="}), 403, "kms_not_enabled")
    # The feature gate comes before the region check.
    error(kms.get("/v1/kms/xx-99/keys"), 403, "kms_not_enabled")


def test_unknown_region_is_404_and_region_without_kms_is_503(kms: Kms) -> None:
    error(kms.get("/v1/kms/xx-99/keys"), 404, "region_not_found")
    error(kms.post("/v1/kms/xx-99/keys", {"name": "k", "keyType": "aes256-gcm96"}), 404,
          "region_not_found")  # fmt: skip
    error(kms.get("/v1/kms/be-01/keys"), 503, "region_unavailable")
    error(kms.post("/v1/kms/be-01/keys/k/encrypt", {"plaintext": "AA=="}), 503,
          "region_unavailable")  # fmt: skip


def test_collection_actions_without_permission_are_403(kms: Kms) -> None:
    token = kms.add_principal("kms:Encrypt", ScopeKind.KEY, "kms-someone")
    headers = {"Authorization": f"Bearer {token}", "X-Organisation-Identity": kms.org}
    error(kms.get(KEYS, headers=headers), 403, "forbidden")
    error(
        kms.post(KEYS, {"name": "k", "keyType": "aes256-gcm96"}, headers=headers), 403, "forbidden"
    )
    reader = kms.add_principal("kms:ReadAccess")
    headers["Authorization"] = f"Bearer {reader}"
    assert kms.get(KEYS, headers=headers).status_code == 200
    error(
        kms.post(KEYS, {"name": "k", "keyType": "aes256-gcm96"}, headers=headers), 403, "forbidden"
    )


def test_key_without_any_permission_is_404_and_without_the_action_403(kms: Kms) -> None:
    key = kms.create_key("payments")
    other = kms.create_key("other")
    encrypt_only = kms.add_principal("kms:Encrypt", ScopeKind.KEY, key["identity"])
    headers = {"Authorization": f"Bearer {encrypt_only}", "X-Organisation-Identity": kms.org}

    assert (
        kms.post(f"{KEYS}/payments/encrypt", {"plaintext": "AA=="}, headers=headers).status_code
        == 200
    )
    assert kms.get(f"{KEYS}/payments", headers=headers).status_code == 200
    # It knows the key exists (it may read it) but may not decrypt: 403.
    error(kms.post(f"{KEYS}/payments/decrypt", {"ciphertext": "thalassa:v1:AAAA"}, headers=headers),
          403, "forbidden")  # fmt: skip
    # Another key of the same organisation: it has no permission at all, so the key "does not
    # exist", exactly like a key that really does not exist.
    hidden = error(kms.get(f"{KEYS}/{other['identity']}", headers=headers), 404, "key_not_found")
    missing = error(kms.get(f"{KEYS}/no-such-key", headers=headers), 404, "key_not_found")
    assert hidden["message"] == missing["message"]
    error(kms.post(f"{KEYS}/other/encrypt", {"plaintext": "AA=="}, headers=headers), 404,
          "key_not_found")  # fmt: skip


def test_read_access_cannot_use_keys(kms: Kms) -> None:
    kms.create_key("payments")
    reader = kms.add_principal("kms:ReadAccess")
    headers = {"Authorization": f"Bearer {reader}", "X-Organisation-Identity": kms.org}
    assert kms.get(f"{KEYS}/payments", headers=headers).status_code == 200
    error(kms.post(f"{KEYS}/payments/encrypt", {"plaintext": "AA=="}, headers=headers), 403,
          "forbidden")  # fmt: skip


def test_other_organisations_keys_are_invisible(kms: Kms) -> None:
    """Two organisations on one server: neither sees the other's keys, even by identity."""

    async def second_org() -> tuple[str, str]:
        boot = await kms.services.tenants.bootstrap(kms.services.audit_store.apply_change, "Second")
        return boot.organisation.identity, boot.token

    # The bootstrap helper names its organisation "default"; give the second one its own slug.
    engine = sync_engine(kms.settings)
    with engine.begin() as conn:
        conn.execute(update(schema.organisations).values(slug="first"))
    engine.dispose()
    org2, token2 = kms.run(second_org)
    headers2 = {"Authorization": f"Bearer {token2}", "X-Organisation-Identity": org2}

    key = kms.create_key("shared-name")
    assert kms.get(KEYS, headers=headers2).json() == []
    error(kms.get(f"{KEYS}/{key['identity']}", headers=headers2), 404, "key_not_found")
    # The same slug is free in another organisation.
    created = kms.post(KEYS, {"name": "shared-name", "keyType": "aes256-gcm96"}, headers=headers2)
    assert created.status_code == 201
    assert created.json()["identity"] != key["identity"]
    # And organisation 1's token is not a member of organisation 2.
    error(kms.get(KEYS, headers={**kms.headers, "X-Organisation-Identity": org2}), 403, "forbidden")


# --- validation comes after access (spec §1.1: validation is step 8) --------------------------


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", KEYS, b"{not json"),
        ("POST", KEYS, b'{"nam": 1}'),
        ("POST", f"{KEYS}/k/encrypt", b'{"plaintext": "not base64!"}'),
        ("POST", f"{KEYS}/k/decrypt", b"[]"),
        ("GET", f"{KEYS}?status=sleeping", None),
    ],
)
def test_a_bad_request_from_an_unauthenticated_caller_is_401(
    kms: Kms, method: str, path: str, body: bytes | None
) -> None:
    kms.create_key("k")
    response = kms.client.request(
        method, path, content=body, headers={"X-Organisation-Identity": kms.org}
    )
    error(response, 401, "unauthenticated")


def test_an_oversized_body_from_an_unauthenticated_caller_is_401(kms: Kms) -> None:
    response = kms.client.post(f"{KEYS}/k/encrypt", content=b"x" * (2 << 20), headers={})
    error(response, 401, "unauthenticated")


def test_a_bad_body_for_a_key_the_caller_cannot_see_is_404(kms: Kms) -> None:
    error(kms.post(f"{KEYS}/nope/encrypt", {"plaintext": "not base64!"}), 404, "key_not_found")
    error(kms.post(f"{KEYS}/nope/decrypt", {"wrong": 1}), 404, "key_not_found")
    error(kms.post("/v1/kms/xx-99/keys", {"nam": 1}), 404, "region_not_found")


def test_a_bad_create_request_without_create_permission_is_403(kms: Kms) -> None:
    reader = kms.add_principal("kms:ReadAccess")
    headers = {"Authorization": f"Bearer {reader}", "X-Organisation-Identity": kms.org}
    error(kms.post(KEYS, {"nam": 1}, headers=headers), 403, "forbidden")


def test_audit_readers_cannot_tell_whether_a_key_exists(kms: Kms) -> None:
    key = kms.create_key("payments")
    auditor = kms.add_principal("audit:ReadAccess")
    headers = {"Authorization": f"Bearer {auditor}", "X-Organisation-Identity": kms.org}
    existing = error(kms.get(f"{KEYS}/{key['identity']}", headers=headers), 404, "key_not_found")
    missing = error(kms.get(f"{KEYS}/no-such-key", headers=headers), 404, "key_not_found")
    assert existing["message"] == missing["message"]


def test_summary_counts_need_list_permission(kms: Kms) -> None:
    key = kms.create_key("payments")
    kms.create_key("other")
    key_user = kms.add_principal("kms:Encrypt", ScopeKind.KEY, key["identity"])
    headers = {"Authorization": f"Bearer {key_user}", "X-Organisation-Identity": kms.org}
    summary = kms.get("/v1/kms/summary", headers=headers)
    assert summary.status_code == 200
    assert summary.json()["featureEnabled"] is True
    assert all(r["totalKeys"] == 0 for r in summary.json()["regions"])
    own = {r["slug"]: r["totalKeys"] for r in kms.get("/v1/kms/summary").json()["regions"]}
    assert own["nl-01"] == 2


def test_very_long_references_are_refused_without_a_lookup(kms: Kms) -> None:
    error(kms.get(f"{KEYS}/{'k' * 5000}"), 404, "key_not_found")
    error(kms.get(KEYS, headers={**kms.headers, "X-Organisation-Identity": "o" * 5000}), 403,
          "forbidden")  # fmt: skip
    error(kms.get(KEYS, headers={**kms.headers, "Authorization": "Bearer " + "t" * 5000}), 401,
          "unauthenticated")  # fmt: skip
