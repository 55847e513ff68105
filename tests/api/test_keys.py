"""``/v1/kms/{region}/keys``: create, list and get (spec §5.2–5.4)."""

from __future__ import annotations

import re

import pytest

from tests.api.test_access import error
from tests.conftest import Kms

KEYS = "/v1/kms/nl-01/keys"
RFC3339_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z")


def test_create_returns_201_and_the_full_key_object(kms: Kms) -> None:
    response = kms.post(
        KEYS,
        {
            "name": "App Encryption",
            "description": "Envelope encryption for application secrets",
            "keyType": "aes256-gcm96",
            "labels": {"team": "payments"},
            "annotations": {"owner/email": "ops@example.com"},
            "exportAllowed": False,
            "keyRotationEnabled": True,
            "rotationPeriodInDays": 90,
        },
    )
    assert response.status_code == 201, response.text
    key = response.json()
    assert re.fullmatch(r"kms-[a-z2-7]{20}", key["identity"])
    assert key["name"] == "App Encryption"
    assert key["slug"] == "app-encryption"
    assert key["description"] == "Envelope encryption for application secrets"
    assert key["keyType"] == "aes256-gcm96"
    assert key["status"] == "active"
    assert key["labels"] == {"team": "payments"}
    assert key["annotations"] == {"owner/email": "ops@example.com"}
    assert key["projectId"] is None
    assert key["exportAllowed"] is False
    assert key["imported"] is False
    assert key["keyRotationEnabled"] is True
    assert key["rotationPeriodInDays"] == 90
    assert (key["latestVersion"], key["minDecryptionVersion"]) == (1, 1)
    assert [(v["version"], v["status"]) for v in key["versions"]] == [(1, "active")]
    assert key["deletionScheduledAt"] is None
    assert key["objectVersion"] == 1
    for field in ("createdAt", "updatedAt"):
        assert RFC3339_UTC.fullmatch(key[field]), key[field]
    assert key["organisation"]["identity"] == kms.org
    assert key["organisation"]["slug"] == "default"


ALL_TYPES = [
    "aes128-gcm96", "aes256-gcm96", "chacha20-poly1305", "rsa-2048", "rsa-3072", "rsa-4096",
    "ecdsa-p256", "ecdsa-p384", "ecdsa-p521", "ed25519", "hmac", "hmac-sha256", "hmac-sha512",
]  # fmt: skip


@pytest.mark.parametrize("key_type", ALL_TYPES)
def test_every_key_type_can_be_created(kms: Kms, key_type: str) -> None:
    assert kms.create_key(f"k-{key_type}", key_type)["keyType"] == key_type


@pytest.mark.parametrize("key_type", ["aes512-gcm", "rsa-1024", "RSA-2048", ""])
def test_unknown_key_types_are_unsupported(kms: Kms, key_type: str) -> None:
    error(kms.post(KEYS, {"name": "k", "keyType": key_type}), 400, "unsupported_key_type")
    assert kms.get(KEYS).json() == []


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"keyType": "aes256-gcm96"}, "name"),
        ({"name": "k"}, "keyType"),
        ({"name": "k", "keyType": "aes256-gcm96", "colour": "red"}, "colour"),
        ({"name": 7, "keyType": "aes256-gcm96"}, "name"),
        ({"name": "", "keyType": "aes256-gcm96"}, "name"),
        ({"name": "!!!", "keyType": "aes256-gcm96"}, "name"),
        ({"name": "k", "keyType": "aes256-gcm96", "keyRotationEnabled": True}, "rotationPeriod"),
        ({"name": "k", "keyType": "aes256-gcm96", "rotationPeriodInDays": 0}, "rotationPeriod"),
        ({"name": "k", "keyType": "aes256-gcm96", "labels": {"a b": "c"}}, "labels"),
        ({"name": "k", "keyType": "aes256-gcm96", "labels": ["x"]}, "labels"),
        ({"name": "k", "keyType": "aes256-gcm96", "description": "d" * 1025}, "description"),
    ],
)
def test_invalid_create_requests_are_400_and_create_nothing(
    kms: Kms, body: dict[str, object], fragment: str
) -> None:
    message = error(kms.post(KEYS, body), 400, "invalid_request")["message"]
    assert fragment in message
    assert kms.get(KEYS).json() == []


@pytest.mark.parametrize("raw", [b"", b"{", b"[]", b"null", b'"text"', b"\xff\xfe"])
def test_malformed_json_is_400(kms: Kms, raw: bytes) -> None:
    response = kms.client.post(
        KEYS, content=raw, headers={**kms.headers, "Content-Type": "application/json"}
    )
    error(response, 400, "invalid_request")


def test_duplicate_slug_in_the_same_scope_is_409(kms: Kms) -> None:
    kms.create_key("app-encryption")
    conflict = error(kms.post(KEYS, {"name": "App Encryption", "keyType": "chacha20-poly1305"}),
                     409, "conflict")  # fmt: skip
    assert "app-encryption" in conflict["message"]
    assert len(kms.get(KEYS).json()) == 1
    # The same slug is free in another region.
    other_region = kms.post(
        "/v1/kms/de-01/keys", {"name": "app-encryption", "keyType": "aes256-gcm96"}
    )
    assert other_region.status_code == 201


def test_get_by_identity_or_slug(kms: Kms) -> None:
    key = kms.create_key("payments")
    by_slug = kms.get(f"{KEYS}/payments")
    by_identity = kms.get(f"{KEYS}/{key['identity']}")
    assert by_slug.status_code == by_identity.status_code == 200
    assert by_slug.json() == by_identity.json()
    # GET of one key adds each version's encryption count (an extension) to what create showed.
    assert [v.pop("encryptions") for v in by_slug.json()["versions"]] == [0]
    shown = by_slug.json()
    for version in shown["versions"]:
        del version["encryptions"]
    assert shown == key


def test_unknown_key_and_key_of_another_region_are_404(kms: Kms) -> None:
    kms.create_key("payments")
    error(kms.get(f"{KEYS}/nope"), 404, "key_not_found")
    error(kms.get("/v1/kms/de-01/keys/payments"), 404, "key_not_found")


def test_list_is_sorted_by_creation_and_filters_combine(kms: Kms) -> None:
    a = kms.create_key("alpha", labels={"team": "a", "env": "prod"})
    b = kms.create_key("beta", "chacha20-poly1305", labels={"team": "b", "env": "prod"})
    c = kms.create_key("gamma", "aes128-gcm96", labels={"team": "a", "env": "dev"})
    kms.post("/v1/kms/de-01/keys", {"name": "elsewhere", "keyType": "aes256-gcm96"})

    def names(query: str) -> list[str]:
        response = kms.get(f"{KEYS}{query}")
        assert response.status_code == 200, response.text
        return [k["name"] for k in response.json()]

    assert names("") == ["alpha", "beta", "gamma"]
    assert names(f"?identity={b['identity']}") == ["beta"]
    assert names("?name=gamma") == ["gamma"]
    assert names("?slug=alpha") == ["alpha"]
    assert names("?status=active") == ["alpha", "beta", "gamma"]
    assert names("?status=disabled") == []
    assert names("?keyType=aes128-gcm96") == ["gamma"]
    assert names("?matchLabels[team]=a") == ["alpha", "gamma"]
    assert names("?matchLabels[team]=a&matchLabels[env]=prod") == ["alpha"]
    assert names("?matchLabels[team]=a&keyType=aes256-gcm96") == ["alpha"]
    assert a["createdAt"] <= b["createdAt"] <= c["createdAt"]
    error(kms.get(f"{KEYS}?status=sleeping"), 400, "invalid_request")
    error(kms.get(f"{KEYS}?keyType=rsa-1024"), 400, "invalid_request")


def test_summary_counts_keys_per_region(kms: Kms) -> None:
    kms.create_key("one")
    kms.create_key("two")
    kms.post("/v1/kms/de-01/keys", {"name": "three", "keyType": "aes256-gcm96"})
    summary = kms.get("/v1/kms/summary").json()
    assert summary["featureEnabled"] is True
    regions = {r["slug"]: r for r in summary["regions"]}
    assert set(regions) == {"nl-01", "de-01", "be-01"}
    assert regions["nl-01"] == {
        "identity": "nl-01",
        "name": "Netherlands 01",
        "slug": "nl-01",
        "kmsAvailable": True,
        "totalKeys": 2,
        "activeKeys": 2,
        "disabledKeys": 0,
        "pendingDeletionKeys": 0,
    }
    assert regions["de-01"]["totalKeys"] == 1
    assert regions["be-01"]["kmsAvailable"] is False
    assert regions["be-01"]["totalKeys"] == 0


def test_project_keys_and_organisation_keys_never_mix(kms: Kms) -> None:
    project = kms.add_project("web")
    in_project = {**kms.headers, "X-Project-Identity": project.slug}
    org_key = kms.create_key("org-key")
    created = kms.post(KEYS, {"name": "project-key", "keyType": "aes256-gcm96"}, headers=in_project)
    assert created.status_code == 201
    project_key = created.json()
    assert project_key["projectId"] == project.identity
    assert [k["name"] for k in kms.get(KEYS).json()] == ["org-key"]
    assert [k["name"] for k in kms.get(KEYS, headers=in_project).json()] == ["project-key"]
    error(kms.get(f"{KEYS}/{project_key['identity']}"), 404, "key_not_found")
    error(kms.get(f"{KEYS}/{org_key['identity']}", headers=in_project), 404, "key_not_found")
    error(kms.post(f"{KEYS}/org-key/encrypt", {"plaintext": "AA=="}, headers=in_project), 404,
          "key_not_found")  # fmt: skip
    # The same name is free in the other scope.
    same = kms.post(KEYS, {"name": "org-key", "keyType": "aes256-gcm96"}, headers=in_project)
    assert same.status_code == 201
    by_identity = {**kms.headers, "X-Project-Identity": project.identity}
    assert len(kms.get(KEYS, headers=by_identity).json()) == 2
    summary = {
        r["slug"]: r for r in kms.get("/v1/kms/summary", headers=in_project).json()["regions"]
    }
    assert summary["nl-01"]["totalKeys"] == 2
    error(kms.get(KEYS, headers={**kms.headers, "X-Project-Identity": "nope"}), 403, "forbidden")
