"""Administration over HTTP: organisations, projects, service accounts, tokens and role bindings
(spec §6, §7; paths are an extension)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.api.test_access import error
from tests.conftest import SUITE_SECRETS, Kms, on_postgresql, sync_engine

KEYS = "/v1/kms/nl-01/keys"


def ok(response: Any, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json()


def as_org(kms: Kms, org: str, token: str | None = None) -> dict[str, str]:
    return {
        "Authorization": f"Bearer {token or kms.boot.token}",
        "X-Organisation-Identity": org,
    }


def new_org(kms: Kms, name: str = "Acme Corp") -> dict[str, Any]:
    return ok(kms.post("/v1/organisations", {"name": name}), 201)


def app_token(kms: Kms, org: str, policy: str, **scope: str) -> tuple[str, dict[str, Any]]:
    """A service account with ``policy`` (on ``scope``) in ``org``, and a token for it."""
    headers = as_org(kms, org)
    account = ok(kms.post("/v1/iam/service-accounts", {"name": f"app-{policy.replace(':', '-')}-{len(scope)}"},
                          headers=headers), 201)  # fmt: skip
    ok(kms.post("/v1/iam/role-bindings",
                {"principal": account["identity"], "policy": policy, **scope},
                headers=headers), 201)  # fmt: skip
    created = ok(kms.post("/v1/iam/tokens", {"serviceAccount": account["name"]}, headers=headers),
                 201)  # fmt: skip
    SUITE_SECRETS.add(created["token"])
    return created["token"], account


def test_an_operator_sets_up_an_application_with_crypto_user_on_one_key(kms: Kms) -> None:
    org = new_org(kms)
    assert org["slug"] == "acme-corp"
    assert org["kmsEnabled"] is True
    admin = as_org(kms, org["identity"])
    key = ok(kms.post(KEYS, {"name": "payments", "keyType": "aes256-gcm96"}, headers=admin), 403)
    assert key["code"] == "forbidden"  # the platform administrator has no KMS binding here
    ok(kms.post("/v1/iam/role-bindings", {"principal": kms.boot.principal.identity,
                                           "policy": "kms:KeyAdministrator"},
                headers=admin), 201)  # fmt: skip
    key = ok(kms.post(KEYS, {"name": "payments", "keyType": "aes256-gcm96"}, headers=admin), 201)
    other = ok(kms.post(KEYS, {"name": "other", "keyType": "aes256-gcm96"}, headers=admin), 201)
    token, _ = app_token(kms, org["identity"], "kms:CryptoUser", key=key["identity"])
    app = as_org(kms, org["identity"], token)
    sealed = ok(kms.post(f"{KEYS}/payments/encrypt", {"plaintext": "aGVsbG8="}, headers=app))
    opened = ok(kms.post(f"{KEYS}/payments/decrypt", {"ciphertext": sealed["ciphertext"]},
                         headers=app))  # fmt: skip
    assert opened["plaintext"] == "aGVsbG8="
    error(kms.post(f"{KEYS}/{other['identity']}/encrypt", {"plaintext": "aGVsbG8="},
                   headers=app), 404, "key_not_found")  # fmt: skip
    error(kms.post(f"{KEYS}/payments/disable", headers=app), 403, "forbidden")
    error(kms.post(KEYS, {"name": "x", "keyType": "aes256-gcm96"}, headers=app), 403, "forbidden")
    # The application's token does not reach the default organisation.
    error(kms.get(KEYS, headers=as_org(kms, kms.org, token)), 403, "forbidden")


def test_only_platform_administrators_create_organisations_and_switch_the_gate(kms: Kms) -> None:
    org = new_org(kms)
    token, _ = app_token(kms, org["identity"], "iam:Admin")
    headers = {"Authorization": f"Bearer {token}"}
    error(kms.post("/v1/organisations", {"name": "Mine"}, headers=headers), 403, "forbidden")
    error(kms.post(f"/v1/organisations/{org['slug']}/disable-kms", headers=headers), 403,
          "forbidden")  # fmt: skip
    assert [o["identity"] for o in ok(kms.get("/v1/organisations", headers=headers))] == [
        org["identity"]
    ]
    everyone = ok(kms.get("/v1/organisations"))
    assert {o["slug"] for o in everyone} == {"default", "acme-corp"}
    error(kms.post("/v1/organisations", {"name": "Acme Corp"}), 409, "conflict")
    error(kms.post("/v1/organisations", {"name": "x", "slug": "Not A Slug"}), 400,
          "invalid_request")  # fmt: skip
    error(kms.post("/v1/organisations/nope/enable-kms"), 404, "not_found")


def test_an_organisation_administrator_manages_only_their_organisation(kms: Kms) -> None:
    mine = new_org(kms, "Mine")
    theirs = new_org(kms, "Theirs")
    token, _ = app_token(kms, mine["identity"], "iam:Admin")
    ok(kms.post("/v1/projects", {"name": "Web"}, headers=as_org(kms, mine["slug"], token)), 201)
    for path in ("/v1/projects", "/v1/iam/service-accounts", "/v1/iam/tokens",
                 "/v1/iam/role-bindings"):  # fmt: skip
        error(kms.get(path, headers=as_org(kms, theirs["slug"], token)), 403, "forbidden")
        error(kms.get(path, headers=as_org(kms, "no-such-org", token)), 403, "forbidden")
        error(kms.get(path, headers={"Authorization": f"Bearer {token}"}), 400,
              "organisation_required")  # fmt: skip
        error(kms.get(path, headers={"X-Organisation-Identity": mine["slug"]}), 401,
              "unauthenticated")  # fmt: skip
    # A KMS policy does not make an administrator.
    crypto, _ = app_token(kms, mine["identity"], "kms:FullAccess")
    error(kms.get("/v1/projects", headers=as_org(kms, mine["slug"], crypto)), 403, "forbidden")


def test_revoking_a_token_takes_effect_on_the_next_request(kms: Kms) -> None:
    kms.create_key("k")
    token, account = app_token(kms, kms.org, "kms:CryptoUser")
    app = as_org(kms, kms.org, token)
    ok(kms.post(f"{KEYS}/k/encrypt", {"plaintext": "aGVsbG8="}, headers=app))  # now cached
    (listed,) = [t for t in ok(kms.get("/v1/iam/tokens"))
                 if t["serviceAccountIdentity"] == account["identity"]]  # fmt: skip
    assert "token" not in listed
    revoked = ok(kms.client.delete(f"/v1/iam/tokens/{listed['identity']}", headers=kms.headers))
    assert revoked["revokedAt"] is not None
    error(kms.post(f"{KEYS}/k/encrypt", {"plaintext": "aGVsbG8="}, headers=app), 401,
          "unauthenticated")  # fmt: skip
    error(kms.client.delete("/v1/iam/tokens/tok-nope", headers=kms.headers), 404, "not_found")


def test_removing_a_binding_takes_effect_on_the_next_request(kms: Kms) -> None:
    kms.create_key("k")
    token, account = app_token(kms, kms.org, "kms:CryptoUser")
    app = as_org(kms, kms.org, token)
    ok(kms.post(f"{KEYS}/k/encrypt", {"plaintext": "aGVsbG8="}, headers=app))
    (binding,) = [b for b in ok(kms.get("/v1/iam/role-bindings"))
                  if b["principalIdentity"] == account["identity"]]  # fmt: skip
    ok(kms.client.delete(f"/v1/iam/role-bindings/{binding['identity']}", headers=kms.headers))
    error(kms.post(f"{KEYS}/k/encrypt", {"plaintext": "aGVsbG8="}, headers=app), 403,
          "forbidden")  # fmt: skip


def test_disabling_the_feature_gate_takes_effect_on_the_next_request(kms: Kms) -> None:
    kms.create_key("k")
    ok(kms.post(f"{KEYS}/k/encrypt", {"plaintext": "aGVsbG8="}))
    assert ok(kms.post(f"/v1/organisations/{kms.org}/disable-kms"))["kmsEnabled"] is False
    error(kms.post(f"{KEYS}/k/encrypt", {"plaintext": "aGVsbG8="}), 403, "kms_not_enabled")
    assert ok(kms.get("/v1/kms/summary"))["featureEnabled"] is False
    ok(kms.post(f"/v1/organisations/{kms.org}/enable-kms"))
    ok(kms.post(f"{KEYS}/k/encrypt", {"plaintext": "aGVsbG8="}))


def test_expired_tokens_are_refused(kms: Kms) -> None:
    account = ok(kms.post("/v1/iam/service-accounts", {"name": "short"}), 201)
    created = ok(kms.post("/v1/iam/tokens", {"serviceAccount": account["identity"],
                                              "expiresInSeconds": 60}), 201)  # fmt: skip
    SUITE_SECRETS.add(created["token"])
    ok(kms.post("/v1/iam/role-bindings", {"principal": "short", "policy": "kms:ReadAccess"}), 201)
    app = as_org(kms, kms.org, created["token"])
    ok(kms.get(KEYS, headers=app))
    kms.clock.advance(seconds=61)
    error(kms.get(KEYS, headers=app), 401, "unauthenticated")


@pytest.mark.parametrize(
    ("path", "body", "code"),
    [("/v1/iam/role-bindings", {"principal": "nobody", "policy": "kms:ReadAccess"}, "not_found"),
     ("/v1/iam/role-bindings", {"principal": "app", "policy": "kms:Everything"}, "invalid_request"),
     ("/v1/iam/role-bindings", {"principal": "app", "policy": "iam:Admin", "project": "web"}, "invalid_request"),
     ("/v1/iam/role-bindings", {"principal": "app", "policy": "kms:ReadAccess", "project": "nope"}, "not_found"),
     ("/v1/iam/role-bindings", {"principal": "app", "policy": "kms:ReadAccess", "key": "kms-nope"}, "key_not_found"),
     ("/v1/iam/role-bindings", {"principal": "app", "policy": "kms:ReadAccess", "project": "web", "key": "k"}, "invalid_request"),
     ("/v1/iam/tokens", {"serviceAccount": "nobody"}, "not_found"),
     ("/v1/iam/tokens", {"serviceAccount": "app", "expiresInSeconds": 0}, "invalid_request"),
     ("/v1/iam/tokens", {"serviceAccount": "app", "expiresInSeconds": 10**15}, "invalid_request"),
     ("/v1/iam/service-accounts", {"name": "oidc:alice"}, "invalid_request"),
     ("/v1/iam/service-accounts", {"name": "app"}, "conflict"),
     ("/v1/iam/service-accounts", {"name": ""}, "invalid_request"),
     ("/v1/projects", {"name": "Web"}, "conflict"),
     ("/v1/projects", {"name": "!!!"}, "invalid_request"),
     ("/v1/projects", {"name": "x", "extra": 1}, "invalid_request")],
)  # fmt: skip
def test_bad_administration_requests_are_4xx_and_change_nothing(
    kms: Kms, path: str, body: dict[str, Any], code: str
) -> None:
    ok(kms.post("/v1/iam/service-accounts", {"name": "app"}), 201)
    ok(kms.post("/v1/projects", {"name": "Web"}), 201)
    before = {p: kms.get(p).json() for p in ("/v1/projects", "/v1/iam/service-accounts",
                                            "/v1/iam/tokens", "/v1/iam/role-bindings")}  # fmt: skip
    status = {"conflict": 409, "not_found": 404, "key_not_found": 404}.get(code, 400)
    error(kms.post(path, body), status, code)
    assert {p: kms.get(p).json() for p in before} == before


def test_tokens_are_stored_only_as_digests(kms: Kms) -> None:
    from sqlalchemy import MetaData, select

    token, _ = app_token(kms, kms.org, "kms:ReadAccess")
    secret = token.removeprefix("coffer_")
    if not on_postgresql():  # the database files themselves, journals included
        for path in kms.settings.database_path.parent.glob("coffer.db*"):
            assert secret.encode() not in path.read_bytes()
    engine = sync_engine(kms.settings)
    try:
        metadata = MetaData()
        metadata.reflect(engine)
        with engine.connect() as connection:
            every_value = "\n".join(
                repr(row) for table in metadata.sorted_tables
                for row in connection.execute(select(table))
            )  # fmt: skip
            digests = connection.execute(metadata.tables["tokens"].select()).all()
    finally:
        engine.dispose()
    assert secret not in every_value
    assert all(len(row.digest) == 32 for row in digests)


def test_a_token_with_one_bit_changed_is_refused(kms: Kms) -> None:
    token, _ = app_token(kms, kms.org, "kms:ReadAccess")
    ok(kms.get(KEYS, headers=as_org(kms, kms.org, token)))
    for position in (len("coffer_"), len(token) // 2, len(token) - 1):
        flipped = token[:position] + chr(ord(token[position]) ^ 1) + token[position + 1 :]
        error(kms.get(KEYS, headers=as_org(kms, kms.org, flipped)), 401, "unauthenticated")


def test_administration_is_audited(kms: Kms) -> None:
    from tests.api.test_audit import records

    app_token(kms, kms.org, "kms:ReadAccess")
    actions = [(r["action"], r["resourceType"], r["context"]["status"]) for r in records(kms)]
    assert actions[-3:] == [
        ("iam.service_account.create", "service_account", 201),
        ("iam.role_binding.create", "role_binding", 201),
        ("iam.token.create", "token", 201),
    ]
    page = ok(kms.get("/v1/audit?resourceType=token"))
    assert [i["action"] for i in page["items"]] == ["iam.token.create"]


def test_separation_of_duties(kms: Kms) -> None:
    def headers(policy: str) -> dict[str, str]:
        token, _ = app_token(kms, kms.org, policy)
        return as_org(kms, kms.org, token)

    administrator, user, reader = (
        headers("kms:KeyAdministrator"), headers("kms:CryptoUser"), headers("kms:ReadAccess"),
    )  # fmt: skip
    # The key administrator makes and runs keys, but cannot use their material.
    ok(kms.post(KEYS, {"name": "k", "keyType": "aes256-gcm96", "exportAllowed": True},
                headers=administrator), 201)  # fmt: skip
    ok(kms.post(f"{KEYS}/k/rotate", headers=administrator))
    error(kms.post(f"{KEYS}/k/encrypt", {"plaintext": "aGVsbG8="}, headers=administrator), 403,
          "forbidden")  # fmt: skip
    error(kms.post(f"{KEYS}/k/export", headers=administrator), 403, "forbidden")
    # The crypto user uses keys, but cannot change or delete them.
    sealed = ok(kms.post(f"{KEYS}/k/encrypt", {"plaintext": "aGVsbG8="}, headers=user))
    ok(kms.post(f"{KEYS}/k/decrypt", {"ciphertext": sealed["ciphertext"]}, headers=user))
    error(kms.client.delete(f"{KEYS}/k", headers=user), 403, "forbidden")
    error(kms.post(f"{KEYS}/k/rotate", headers=user), 403, "forbidden")
    error(kms.post(KEYS, {"name": "k2", "keyType": "aes256-gcm96"}, headers=user), 403,
          "forbidden")  # fmt: skip
    # The reader sees metadata only.
    assert [k["slug"] for k in ok(kms.get(KEYS, headers=reader))] == ["k"]
    assert ok(kms.get(f"{KEYS}/k", headers=reader))["latestVersion"] == 2
    for path, body in ((f"{KEYS}/k/encrypt", {"plaintext": "aGVsbG8="}),
                       (f"{KEYS}/k/decrypt", {"ciphertext": sealed["ciphertext"]}),
                       (f"{KEYS}/k/export", None), (f"{KEYS}/k/disable", None)):  # fmt: skip
        error(kms.post(path, body, headers=reader), 403, "forbidden")


def test_tokens_are_looked_up_by_digest_never_compared_as_strings(
    kms: Kms, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No token string is ever compared: the server digests what it is given (HMAC-SHA-256 of
    its SHA-256 under the token digest key) and looks the digest up in an index, so a timing
    difference can only ever reveal something about a digest, which says nothing about any
    valid token."""
    import hashlib
    import hmac

    from coffer.service.purposes import TOKEN_DIGEST

    token, _ = app_token(kms, kms.org, "kms:ReadAccess")
    asked: list[bytes] = []
    real = kms.services.store.find_token

    async def recording(digest: bytes) -> Any:
        asked.append(digest)
        return await real(digest)

    monkeypatch.setattr(kms.services.store, "find_token", recording)
    kms.services.access.forget_all()
    ok(kms.get(KEYS, headers=as_org(kms, kms.org, token)))
    key = kms.services.purposes._keys[TOKEN_DIGEST]
    plain = hashlib.sha256(token.encode()).digest()
    assert asked == [hmac.new(key, plain, hashlib.sha256).digest()]
    assert asked[0] != plain
