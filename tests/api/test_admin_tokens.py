"""The platform administrator's credentials have a lifecycle: the token ``coffer init`` prints is
an ordinary token of the administrator — listed, revocable (with a warning when it is the last
one that works), optionally expiring — and when every one is lost, an operator who holds the root
of trust makes a new one offline, with each seal; the making is audited."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from coffer.bootstrap import SealChoice, generate_admin_token, initialise
from coffer.config import ConfigError
from coffer.domain.seal import SealType
from coffer.domain.tenants import TokenInfo
from coffer.service.iam import NewToken
from tests.api.test_access import error
from tests.api.test_audit import records
from tests.api.test_iam import app_token, as_org, ok
from tests.conftest import (
    SUITE_SECRETS,
    HsmToken,
    Kms,
    SoftHsm,
    initialised,
    make_settings,
    open_kms,
)
from tests.e2e.processes import clean_env, run_coffer

KEYS = "/v1/kms/nl-01/keys"
TOKENS = "/v1/iam/tokens"
SHAMIR = SealChoice(SealType.SHAMIR, shares=3, threshold=2)


def bearer(token: str) -> dict[str, str]:
    """A token without an organisation: the platform scope."""
    return {"Authorization": f"Bearer {token}"}


def works(kms: Kms, token: str) -> bool:
    """Whether ``token`` is accepted (the organisations a platform administrator sees)."""
    response = kms.client.get("/v1/organisations", headers=bearer(token))
    assert response.status_code in (200, 401), response.text
    return bool(response.status_code == 200)


def admin_tokens(kms: Kms, token: str | None = None) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = ok(kms.get(TOKENS, headers=bearer(token or kms.boot.token)))
    return found


def new_admin_token(kms: Kms, **body: Any) -> dict[str, Any]:
    created: dict[str, Any] = ok(kms.post(TOKENS, body, headers=bearer(kms.boot.token)), 201)
    SUITE_SECRETS.add(created["token"])
    return created


def recovered(settings: Any, *args: Any) -> NewToken:
    made = asyncio.run(generate_admin_token(settings, *args))
    SUITE_SECRETS.add(made.token)
    return made


def test_the_init_token_is_listed_as_the_administrators_and_not_among_an_organisations(
    kms: Kms,
) -> None:
    (listed,) = admin_tokens(kms)
    assert listed["principalIdentity"] == kms.boot.principal.identity
    assert listed["serviceAccountIdentity"] is None
    assert listed["expiresAt"] is None
    assert listed["revokedAt"] is None
    assert "token" not in listed
    app_token(kms, kms.org, "kms:ReadAccess")
    in_org = ok(kms.get(TOKENS))
    assert [t["serviceAccountIdentity"] for t in in_org] == [t["principalIdentity"] for t in in_org]
    assert listed["identity"] not in {t["identity"] for t in in_org}


def test_revoking_the_init_token_refuses_it_from_the_next_request(kms: Kms) -> None:
    second = new_admin_token(kms)
    assert second["serviceAccountIdentity"] is None
    assert second["principalIdentity"] == kms.boot.principal.identity
    assert works(kms, kms.boot.token)
    assert works(kms, second["token"])
    first = next(t for t in admin_tokens(kms) if t["identity"] != second["identity"])
    # Revoked by its identity, from a request that names an organisation or none.
    revoked = ok(kms.client.delete(f"{TOKENS}/{first['identity']}", headers=kms.headers))
    assert revoked["revokedAt"] is not None
    assert "warning" not in revoked  # the second token still works
    assert not works(kms, kms.boot.token)
    error(kms.client.get(KEYS, headers=kms.headers), 401, "unauthenticated")
    assert works(kms, second["token"])
    listed = {t["identity"]: t for t in admin_tokens(kms, second["token"])}
    assert listed[first["identity"]]["revokedAt"] is not None
    assert listed[second["identity"]]["revokedAt"] is None


def test_revoking_the_last_working_admin_token_is_allowed_and_warns(
    kms: Kms, caplog: pytest.LogCaptureFixture
) -> None:
    (mine,) = admin_tokens(kms)
    with caplog.at_level(logging.WARNING, logger="coffer"):
        revoked = ok(
            kms.client.delete(f"{TOKENS}/{mine['identity']}", headers=bearer(kms.boot.token))
        )
    assert revoked["revokedAt"] is not None
    assert "generate-admin-token" in revoked["warning"]
    assert any("generate-admin-token" in r.getMessage() for r in caplog.records)
    assert not works(kms, kms.boot.token)


def test_an_expired_admin_token_does_not_count_as_working(kms: Kms) -> None:
    short = new_admin_token(kms, expiresInSeconds=60)
    assert short["expiresAt"] is not None
    assert works(kms, short["token"])
    kms.clock.advance(seconds=61)
    assert not works(kms, short["token"])
    (init,) = [t for t in admin_tokens(kms) if t["identity"] != short["identity"]]
    revoked = ok(kms.client.delete(f"{TOKENS}/{init['identity']}", headers=bearer(kms.boot.token)))
    assert "warning" in revoked


def test_only_a_platform_administrator_reaches_the_administrators_tokens(kms: Kms) -> None:
    org_admin, _ = app_token(kms, kms.org, "iam:Admin")
    (init,) = admin_tokens(kms)
    error(kms.get(TOKENS, headers=bearer(org_admin)), 400, "organisation_required")
    error(kms.post(TOKENS, {}, headers=bearer(org_admin)), 400, "organisation_required")
    error(kms.client.delete(f"{TOKENS}/{init['identity']}", headers=bearer(org_admin)), 400,
          "organisation_required")  # fmt: skip
    # Administering the organisation reaches none of the platform's tokens.
    error(kms.client.delete(f"{TOKENS}/{init['identity']}", headers=as_org(kms, kms.org, org_admin)),
          404, "not_found")  # fmt: skip
    assert works(kms, kms.boot.token)
    # A service account's token needs its organisation; an organisation's token names one.
    error(kms.post(TOKENS, {"serviceAccount": "app-iam-Admin-0"}, headers=bearer(kms.boot.token)),
          400, "organisation_required")  # fmt: skip
    error(kms.post(TOKENS, {}), 400, "invalid_request")
    error(kms.post(TOKENS, {"expiresInSeconds": 0}, headers=bearer(kms.boot.token)), 400,
          "invalid_request")  # fmt: skip
    assert len(admin_tokens(kms)) == 1  # nothing was made by the refused requests


def test_init_can_make_an_expiring_admin_token(settings: Any) -> None:
    boot = asyncio.run(initialise(settings, admin_token_lifetime=timedelta(days=30)))
    SUITE_SECRETS.add(boot.token)
    assert boot.token_expires_at is not None
    for kms in open_kms(settings, boot):
        (listed,) = admin_tokens(kms)
        assert listed["expiresAt"] is not None
        assert works(kms, boot.token)
        kms.clock.advance(days=30, seconds=1)
        assert not works(kms, boot.token)


def test_init_refuses_a_lifetime_out_of_range(tmp_path: Path) -> None:
    for lifetime in (timedelta(0), timedelta(days=3651)):
        settings = make_settings(tmp_path / f"data-{lifetime.days}")
        with pytest.raises(ConfigError, match="lifetime"):
            asyncio.run(initialise(settings, admin_token_lifetime=lifetime))
        assert not settings.data_dir.exists()


# --- recovery with the root of trust, offline ----------------------------------------------------


def assert_recovered(kms: Kms, made: NewToken) -> None:
    """``made`` is a working administrator token, and its making is on the audit chain."""
    assert made.owner.identity == kms.boot.principal.identity
    assert works(kms, made.token)
    ok(kms.get(KEYS, headers=as_org(kms, kms.org, made.token)))  # the administrator's bindings
    assert made.info.identity in {t["identity"] for t in admin_tokens(kms, made.token)}
    (record,) = [r for r in records(kms) if r["resourceIdentity"] == made.info.identity]
    assert record["action"] == "iam.token.create"
    assert record["principalKind"] == "operator"
    assert record["context"]["outcome"] == "success"
    assert made.token not in str(record)


def test_the_file_seal_recovers_an_admin_token_when_every_one_was_revoked(kms: Kms) -> None:
    (init,) = admin_tokens(kms)
    ok(kms.client.delete(f"{TOKENS}/{init['identity']}", headers=bearer(kms.boot.token)))
    assert not works(kms, kms.boot.token)
    made = recovered(kms.settings, timedelta(days=1))  # while the server runs
    assert made.info.expires_at is not None
    assert_recovered(kms, made)
    kms.clock.advance(days=1, seconds=1)
    assert not works(kms, made.token)


@pytest.fixture
def shamir(tmp_path: Path) -> Iterator[Kms]:
    settings = make_settings(tmp_path / "data")
    yield from open_kms(settings, initialised(settings, SHAMIR))


def test_the_shamir_seal_recovers_an_admin_token_with_the_threshold_of_shares(
    shamir: Kms,
) -> None:
    shares = shamir.boot.unseal_keys
    for share in shares[:2]:  # the running server is unsealed as usual
        ok(shamir.client.post("/v1/sys/unseal", json={"key": share}))
    with pytest.raises(ConfigError, match="needed"):
        recovered(shamir.settings, None, lambda n: list(shares[:1]))
    with pytest.raises(ConfigError):
        recovered(shamir.settings, None, lambda n: [shares[0], shares[0]])
    with pytest.raises(ConfigError, match="sealed"):
        recovered(shamir.settings)  # no shares: the root stays sealed, nothing is made
    assert len(admin_tokens(shamir)) == 1
    assert_recovered(shamir, recovered(shamir.settings, None, lambda n: list(shares[1:3])))


@pytest.fixture
def hsm_kms(
    tmp_path: Path, softhsm: SoftHsm, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Kms, HsmToken]]:
    token = softhsm.new_token("recover")
    monkeypatch.setenv("COFFER_PKCS11_PIN", token.pin)
    settings = make_settings(tmp_path / "data")
    for kms in open_kms(settings, initialised(settings, softhsm.seal(token))):
        yield kms, token


def test_the_pkcs11_seal_recovers_an_admin_token_with_the_hsm(
    hsm_kms: tuple[Kms, HsmToken],
) -> None:
    """Through the command, in a process of its own (the HSM's session is per process)."""
    kms, token = hsm_kms
    database = (
        {"COFFER_DATABASE_URL": kms.settings.database_url} if kms.settings.database_url else {}
    )

    def generate(pin: str) -> Any:
        env = clean_env(COFFER_PKCS11_PIN=pin, **database)
        return run_coffer("operator", "generate-admin-token", "--data-dir", kms.settings.data_dir,
                          "--expires-in", "1h", "--output", "json", env=env)  # fmt: skip

    refused = generate("not-the-pin")
    assert refused.returncode == 1
    assert "sealed" in refused.stderr
    assert len(admin_tokens(kms)) == 1
    done = generate(token.pin)
    assert done.returncode == 0, done.stderr
    shown = json.loads(done.stdout)
    SUITE_SECRETS.add(shown["token"])
    assert shown["principalIdentity"] == kms.boot.principal.identity
    assert shown["expiresAt"] is not None
    info = TokenInfo(shown["identity"], shown["principalIdentity"], kms.clock(), None, None)
    assert_recovered(kms, NewToken(info, kms.boot.principal, shown["token"]))


def test_recovery_needs_the_root_key_and_refuses_another(kms: Kms, tmp_path: Path) -> None:
    other = make_settings(tmp_path / "other")
    initialised(other)
    root_key = kms.settings.root_key_path
    saved = root_key.read_bytes()
    try:
        root_key.write_bytes(other.root_key_path.read_bytes())
        with pytest.raises(ConfigError, match="root key"):
            recovered(kms.settings)
        root_key.unlink()
        with pytest.raises(ConfigError):
            recovered(kms.settings)
    finally:
        root_key.write_bytes(saved)
        root_key.chmod(0o600)
    assert len(admin_tokens(kms)) == 1
