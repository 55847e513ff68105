"""The storage barrier, played by its attacker: someone who can write the database (A5 of the
threat model) but holds no purpose key of the root of trust.

Each attack edits, copies, moves or forges rows with plain SQL, then tries to use what it made
over HTTP, with every cache dropped (as after its TTL or a restart). Every attack must gain
nothing, and must be noticed: an error log line naming the table and the row, the
``coffer_integrity_failures_total`` metric, and an ``integrity.failure`` audit record. The attacks
are listed per column, and a test reads the schema and fails if a covered column has no attack,
or if a column of an authenticated table is neither covered nor declared as deciding nothing.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import delete, insert, select, update

from coffer.domain.integrity import AEAD_BOUND, COVERED, NOT_COVERED
from coffer.metrics import REGISTRY
from coffer.storage import schema
from tests.api.test_iam import app_token, as_org, new_org, ok
from tests.conftest import Kms, sync_engine

KEYS = "/v1/kms/nl-01/keys"


@dataclass
class World:
    """What the attacker finds: two organisations, an application with read access, keys."""

    kms: Kms
    #: An organisation with KMS switched off, in which the administrator has a binding.
    dormant: str
    #: Another organisation, KMS on, in which the administrator has a binding.
    elsewhere: str
    app_token: str
    app: str  # the application's service account
    app_binding: str
    #: A binding of the application limited to key ``k``.
    scoped_binding: str
    admin_binding: str
    revoked_token: str
    expired_token: str
    key: str  # ``k``: active, two versions, the minimum decryption version 2
    disabled_key: str  # ``off``
    other_key: str  # ``other``
    v1_ciphertext: str

    def row(self, table: str, identity: str) -> dict[str, Any]:
        engine = sync_engine(self.kms.settings)
        try:
            with engine.connect() as conn:
                found = schema.metadata.tables[table]
                row = conn.execute(select(found).where(found.c.identity == identity)).one()
        finally:
            engine.dispose()
        return dict(row._mapping)

    def write(self, *statements: Any) -> None:
        """The attacker's SQL, then every cache dropped."""
        engine = sync_engine(self.kms.settings)
        try:
            with engine.begin() as conn:
                for statement in statements:
                    conn.execute(statement)
        finally:
            engine.dispose()
        forget_caches(self.kms)

    def edit(self, table: str, identity: str, **values: Any) -> None:
        found = schema.metadata.tables[table]
        self.write(update(found).where(found.c.identity == identity).values(**values))


def forget_caches(kms: Kms) -> None:
    """Drop every cache, as after its TTL or a restart."""

    async def reset() -> None:
        kms.services.changes.reset()

    kms.run(reset)


def _token_identity(kms: Kms, token: str) -> str:
    digest = kms.services.purposes.token_digest(token)
    engine = sync_engine(kms.settings)
    try:
        with engine.connect() as conn:
            return str(
                conn.execute(
                    select(schema.tokens.c.identity).where(schema.tokens.c.digest == digest)
                ).scalar_one()
            )
    finally:
        engine.dispose()


def _binding(kms: Kms, principal: str, **scope: str) -> str:
    created = ok(kms.post("/v1/iam/role-bindings", {"principal": principal, **scope}), 201)
    return str(created["identity"])


def make_world(kms: Kms) -> World:
    admin = kms.boot.principal.identity
    key = kms.create_key("k")
    v1 = ok(kms.post(f"{KEYS}/k/encrypt", {"plaintext": "c2VjcmV0"}))["ciphertext"]
    ok(kms.post(f"{KEYS}/k/rotate"))
    ok(kms.client.patch(f"{KEYS}/k/versions", json={"minDecryptionVersion": 2},
                        headers=kms.headers))  # fmt: skip
    off = kms.create_key("off")
    ok(kms.post(f"{KEYS}/off/disable"))
    other = kms.create_key("other")
    token, account = app_token(kms, kms.org, "kms:ReadAccess")
    bindings = ok(kms.get("/v1/iam/role-bindings"))
    app_binding = next(b for b in bindings if b["principalIdentity"] == account["identity"])
    scoped = _binding(kms, account["identity"], policy="kms:CryptoUser", key=key["identity"])
    admin_binding = next(
        b for b in bindings if b["principalIdentity"] == admin and b["policy"] == "kms:FullAccess"
    )
    made = ok(kms.post("/v1/iam/tokens", {"serviceAccount": account["name"]}), 201)
    revoked = made["token"]
    assert kms.client.delete(f"/v1/iam/tokens/{made['identity']}",
                             headers=kms.headers).status_code == 200  # fmt: skip
    expiring = ok(kms.post("/v1/iam/tokens", {"serviceAccount": account["name"],
                                              "expiresInSeconds": 60}), 201)  # fmt: skip
    kms.clock.advance(seconds=120)
    dormant = new_org(kms, "Dormant")["identity"]
    _binding_in(kms, dormant, admin)
    ok(kms.post(f"/v1/organisations/{dormant}/disable-kms"))
    elsewhere = new_org(kms, "Elsewhere")["identity"]
    _binding_in(kms, elsewhere, admin)
    return World(
        kms=kms,
        dormant=dormant,
        elsewhere=elsewhere,
        app_token=token,
        app=account["identity"],
        app_binding=app_binding["identity"],
        scoped_binding=scoped,
        admin_binding=admin_binding["identity"],
        revoked_token=revoked,
        expired_token=expiring["token"],
        key=key["identity"],
        disabled_key=off["identity"],
        other_key=other["identity"],
        v1_ciphertext=v1,
    )


def _binding_in(kms: Kms, organisation: str, principal: str) -> None:
    ok(kms.post("/v1/iam/role-bindings",
                {"principal": principal, "policy": "kms:KeyAdministrator"},
                headers=as_org(kms, organisation)), 201)  # fmt: skip


# --- the probes: what the attacker tries after the edit ------------------------------------------


def as_app(w: World, token: str | None = None) -> dict[str, str]:
    return as_org(w.kms, w.kms.org, token or w.app_token)


def app_lists_keys(w: World, token: str | None = None) -> Any:
    return w.kms.get(KEYS, headers=as_app(w, token))


def dormant_lists_keys(w: World) -> Any:
    return w.kms.get(KEYS, headers=as_org(w.kms, w.dormant))


def app_encrypts_other(w: World) -> Any:
    return w.kms.post(f"{KEYS}/{w.other_key}/encrypt", {"plaintext": "AA=="},
                      headers=as_app(w))  # fmt: skip


def get_key(w: World, identity: str, region: str = "nl-01", org: str | None = None) -> Any:
    headers = as_org(w.kms, org or w.kms.org)
    return w.kms.get(f"/v1/kms/{region}/keys/{identity}", headers=headers)


@dataclass(frozen=True)
class Attack:
    name: str
    table: str
    #: The covered columns it changes (the test of coverage counts them).
    columns: tuple[str, ...]
    tamper: Callable[[World], None]
    probe: Callable[[World], Any]
    status: int
    code: str
    #: The row that must be reported.
    victim: Callable[[World], str]


def copy_mac(w: World, table: str, to: str, source: str, *columns: str) -> None:
    """Give row ``to`` the MAC (and ``columns``) of row ``source``."""
    found = w.row(table, source)
    w.edit(table, to, mac=found["mac"], **{c: found[c] for c in columns})


def later(w: World) -> datetime:
    return datetime.now(UTC) + timedelta(days=1)


ATTACKS = [
    # organisations: switch KMS on in an organisation where it is off, or copy an enabled one.
    Attack("organisation: feature gate switched on", "organisations", ("kms_enabled",),
           lambda w: w.edit("organisations", w.dormant, kms_enabled=True),
           dormant_lists_keys, 403, "forbidden", lambda w: w.dormant),
    Attack("organisation: another's row copied over", "organisations",
           ("identity", "object_version"),
           lambda w: copy_mac(w, "organisations", w.dormant, w.kms.org, "kms_enabled",
                              "object_version"),
           dormant_lists_keys, 403, "forbidden", lambda w: w.dormant),
    Attack("organisation: marked shredded", "organisations", ("shredded_at",),
           lambda w: w.edit("organisations", w.dormant, shredded_at=later(w)),
           dormant_lists_keys, 403, "forbidden", lambda w: w.dormant),
    # principals: the application made a platform administrator, or given the admin's row.
    Attack("principal: made platform administrator", "principals", ("platform_admin",),
           lambda w: w.edit("principals", w.app, platform_admin=True),
           app_lists_keys, 401, "unauthenticated", lambda w: w.app),
    Attack("principal: kind changed", "principals", ("kind",),
           lambda w: w.edit("principals", w.app, kind="user"),
           app_lists_keys, 401, "unauthenticated", lambda w: w.app),
    Attack("principal: taken out of its organisation", "principals", ("organisation_identity",),
           lambda w: w.edit("principals", w.app, organisation_identity=None),
           app_lists_keys, 401, "unauthenticated", lambda w: w.app),
    Attack("principal: the administrator's row copied over", "principals", ("identity",),
           lambda w: copy_mac(w, "principals", w.app, w.kms.boot.principal.identity,
                              "platform_admin", "organisation_identity", "kind"),
           app_lists_keys, 401, "unauthenticated", lambda w: w.app),
    # tokens: bring back a revoked or expired token, point one at the administrator, steal a row.
    Attack("token: revocation erased", "tokens", ("revoked_at",),
           lambda w: w.edit("tokens", _token_identity(w.kms, w.revoked_token), revoked_at=None),
           lambda w: app_lists_keys(w, w.revoked_token), 401, "unauthenticated",
           lambda w: _token_identity(w.kms, w.revoked_token)),
    Attack("token: expiry erased", "tokens", ("expires_at",),
           lambda w: w.edit("tokens", _token_identity(w.kms, w.expired_token), expires_at=None),
           lambda w: app_lists_keys(w, w.expired_token), 401, "unauthenticated",
           lambda w: _token_identity(w.kms, w.expired_token)),
    Attack("token: pointed at the administrator", "tokens", ("principal_identity",),
           lambda w: w.edit("tokens", _token_identity(w.kms, w.app_token),
                            principal_identity=w.kms.boot.principal.identity),
           app_lists_keys, 401, "unauthenticated",
           lambda w: _token_identity(w.kms, w.app_token)),
    Attack("token: the administrator's row given a digest the attacker has a token for",
           "tokens", ("digest",),
           lambda w: _steal_admin_row(w), app_lists_keys, 401, "unauthenticated",
           lambda w: _token_identity(w.kms, w.kms.boot.token)),
    Attack("token: the administrator's row copied over", "tokens",
           ("identity", "object_version"),
           lambda w: copy_mac(w, "tokens", _token_identity(w.kms, w.app_token),
                              _token_identity(w.kms, w.kms.boot.token), "principal_identity",
                              "object_version"),
           app_lists_keys, 401, "unauthenticated",
           lambda w: _token_identity(w.kms, w.app_token)),
    # role bindings: more power, another principal, another organisation, a wider scope.
    Attack("binding: policy raised", "role_bindings", ("policy",),
           lambda w: w.edit("role_bindings", w.app_binding, policy="kms:KeyAdministrator"),
           app_lists_keys, 403, "forbidden", lambda w: w.app_binding),
    Attack("binding: the administrator's moved to the application", "role_bindings",
           ("principal_identity",),
           lambda w: w.edit("role_bindings", w.admin_binding, principal_identity=w.app),
           lambda w: w.kms.post(KEYS, {"name": "x", "keyType": "aes256-gcm96"},
                                headers=as_app(w)),
           403, "forbidden", lambda w: w.admin_binding),
    Attack("binding: moved to another organisation", "role_bindings", ("organisation_identity",),
           lambda w: w.edit("role_bindings", w.app_binding, organisation_identity=w.elsewhere),
           lambda w: w.kms.get(KEYS, headers=as_org(w.kms, w.elsewhere, w.app_token)),
           403, "forbidden", lambda w: w.app_binding),
    Attack("binding: one key's widened to the organisation", "role_bindings",
           ("scope_kind", "scope_identity"),
           lambda w: w.edit("role_bindings", w.scoped_binding, scope_kind="organisation",
                            scope_identity=None),
           app_encrypts_other, 403, "forbidden", lambda w: w.scoped_binding),
    Attack("binding: the administrator's copied over", "role_bindings", ("identity",),
           lambda w: copy_mac(w, "role_bindings", w.app_binding, w.admin_binding, "policy"),
           app_lists_keys, 403, "forbidden", lambda w: w.app_binding),
    # keys: enable a disabled key, allow export, bring back a retired version, move a key.
    Attack("key: disabled key enabled", "keys", ("status",),
           lambda w: w.edit("keys", w.disabled_key, status="active"),
           lambda w: w.kms.post(f"{KEYS}/{w.disabled_key}/encrypt", {"plaintext": "AA=="}),
           404, "key_not_found", lambda w: w.disabled_key),
    Attack("key: export allowed", "keys", ("export_allowed",),
           lambda w: w.edit("keys", w.key, export_allowed=True),
           lambda w: w.kms.post(f"{KEYS}/{w.key}/export", {}), 404, "key_not_found",
           lambda w: w.key),
    Attack("key: retired version brought back", "keys", ("min_decryption_version",),
           lambda w: w.edit("keys", w.key, min_decryption_version=1),
           lambda w: w.kms.post(f"{KEYS}/{w.key}/decrypt", {"ciphertext": w.v1_ciphertext}),
           404, "key_not_found", lambda w: w.key),
    Attack("key: moved to another organisation", "keys", ("organisation_identity",),
           lambda w: w.edit("keys", w.key, organisation_identity=w.elsewhere),
           lambda w: get_key(w, w.key, org=w.elsewhere), 404, "key_not_found",
           lambda w: w.key),
    Attack("key: moved to another region", "keys", ("region",),
           lambda w: w.edit("keys", w.key, region="de-01"),
           lambda w: get_key(w, w.key, region="de-01"), 404, "key_not_found", lambda w: w.key),
    Attack("key: moved into a project", "keys", ("project_identity",),
           lambda w: w.edit("keys", w.key, project_identity=w.kms.add_project("p").identity),
           lambda w: w.kms.get(f"{KEYS}/{w.key}", headers={**w.kms.headers,
                                                            "X-Project-Identity": "p"}),
           404, "key_not_found", lambda w: w.key),
    Attack("key: type changed", "keys", ("key_type",),
           lambda w: w.edit("keys", w.key, key_type="chacha20-poly1305"),
           lambda w: get_key(w, w.key), 404, "key_not_found", lambda w: w.key),
    Attack("key: marked imported", "keys", ("imported",),
           lambda w: w.edit("keys", w.key, imported=True),
           lambda w: get_key(w, w.key), 404, "key_not_found", lambda w: w.key),
    Attack("key: rotation allowed or forbidden", "keys", ("allow_rotation",),
           lambda w: w.edit("keys", w.key, allow_rotation=not w.row("keys", w.key)["allow_rotation"]),
           lambda w: get_key(w, w.key), 404, "key_not_found", lambda w: w.key),
    Attack("key: automatic rotation switched on", "keys",
           ("key_rotation_enabled", "rotation_period_days"),
           lambda w: w.edit("keys", w.key, key_rotation_enabled=True, rotation_period_days=1),
           lambda w: get_key(w, w.key), 404, "key_not_found", lambda w: w.key),
    Attack("key: latest version lowered", "keys", ("latest_version",),
           lambda w: w.edit("keys", w.key, latest_version=1),
           lambda w: get_key(w, w.key), 404, "key_not_found", lambda w: w.key),
    Attack("key: scheduled for deletion", "keys", ("deletion_scheduled_at",),
           lambda w: w.edit("keys", w.key, status="pending_deletion",
                            deletion_scheduled_at=later(w)),
           lambda w: get_key(w, w.key), 404, "key_not_found", lambda w: w.key),
    Attack("key: another key's row copied over", "keys", ("identity", "object_version"),
           lambda w: copy_mac(w, "keys", w.key, w.other_key, "object_version",
                              "latest_version", "min_decryption_version"),
           lambda w: get_key(w, w.key), 404, "key_not_found", lambda w: w.key),
]  # fmt: skip


def _steal_admin_row(w: World) -> None:
    """Delete the application's token row and give its digest to the administrator's: the
    application's token would then find the administrator's row."""
    app_row = w.row("tokens", _token_identity(w.kms, w.app_token))
    admin_row = w.row("tokens", _token_identity(w.kms, w.kms.boot.token))
    w.write(
        delete(schema.tokens).where(schema.tokens.c.identity == app_row["identity"]),
        update(schema.tokens)
        .where(schema.tokens.c.identity == admin_row["identity"])
        .values(digest=app_row["digest"]),
    )


def failures(table: str) -> float:
    value = REGISTRY.get_sample_value("coffer_integrity_failures_total", {"table": table})
    return value or 0.0


def recorded_failures(w: World, identity: str) -> list[dict[str, Any]]:
    """The ``integrity.failure`` audit records of ``identity`` (written by the server's job)."""
    import json

    w.kms.run(w.kms.services.integrity.record, w.kms.services.operations)
    engine = sync_engine(w.kms.settings)
    try:
        with engine.connect() as conn:
            events = schema.audit_events
            rows = conn.execute(
                select(events.c.record).where(
                    events.c.action == "integrity.failure",
                    events.c.resource_identity == identity,
                )
            ).all()
    finally:
        engine.dispose()
    return [json.loads(row.record) for row in rows]


def assert_noticed(
    w: World, table: str, identity: str, caplog: pytest.LogCaptureFixture, before: float
) -> None:
    assert f"integrity: {table} row {identity} is refused" in caplog.text
    assert failures(table) > before
    records = recorded_failures(w, identity)
    assert records, "no integrity.failure audit record"
    assert records[-1]["context"]["errorCode"] == f"integrity_{table}"
    assert records[-1]["resourceType"] == "storage_row"
    assert records[-1]["principalKind"] == "system"


@pytest.mark.parametrize("attack", ATTACKS, ids=[a.name for a in ATTACKS])
def test_an_edited_row_gains_nothing_and_is_noticed(
    kms: Kms, attack: Attack, caplog: pytest.LogCaptureFixture
) -> None:
    w = make_world(kms)
    caplog.set_level(logging.ERROR, logger="coffer.service.integrity")
    before = failures(attack.table)
    victim = attack.victim(w)  # before the edit: a stolen token row cannot be found after it
    attack.tamper(w)
    response = attack.probe(w)
    assert response.status_code == attack.status, response.text
    assert response.json()["code"] == attack.code
    assert_noticed(w, attack.table, victim, caplog, before)


def test_every_covered_column_has_an_attack_and_every_column_is_accounted_for() -> None:
    attacked = {(a.table, c) for a in ATTACKS for c in a.columns}
    for table, covered in COVERED.items():
        columns = {c.name for c in schema.metadata.tables[table].columns}
        assert set(covered) | NOT_COVERED[table] == columns, table
        assert not set(covered) & NOT_COVERED[table], table
        assert {(table, c) for c in covered} <= attacked, table
    # Every table with a secret or a grant in it is authenticated one way or the other.
    assert set(COVERED).isdisjoint(AEAD_BOUND)
    for table, bound in AEAD_BOUND.items():
        assert set(bound) <= {c.name for c in schema.metadata.tables[table].columns}


def test_a_baseline_world_works(kms: Kms) -> None:
    """Each probe above is refused only because of its edit: untouched, the same calls work."""
    w = make_world(kms)
    forget_caches(w.kms)
    assert app_lists_keys(w).status_code == 200
    assert w.kms.get(KEYS, headers=as_org(kms, kms.org)).status_code == 200
    assert get_key(w, w.key).status_code == 200
    assert w.kms.post(f"{KEYS}/{w.other_key}/encrypt", {"plaintext": "AA=="},
                      headers=as_app(w)).status_code == 403  # fmt: skip
    assert w.kms.post(f"{KEYS}/{w.key}/encrypt", {"plaintext": "AA=="},
                      headers=as_app(w)).status_code == 200  # fmt: skip
    assert dormant_lists_keys(w).json()["code"] == "kms_not_enabled"
    assert failures("keys") == failures("keys")  # read twice: nothing reported meanwhile
    assert not recorded_failures(w, w.key)


# --- forged rows ---------------------------------------------------------------------------------


def test_a_forged_platform_administrator_with_a_token_of_its_own_is_refused(
    kms: Kms, caplog: pytest.LogCaptureFixture
) -> None:
    """The attack the review found: a database writer minting a platform administrator. The
    token's digest can be computed the old way (SHA-256) or with a key of the attacker's: the
    server looks tokens up by a digest keyed with a purpose key, so neither is ever found."""
    w = make_world(kms)
    now = datetime.now(UTC)
    statements = []
    for n, digest_of in enumerate(
        (lambda t: hashlib.sha256(t.encode()).digest(),
         lambda t: hmac.new(os.urandom(32), hashlib.sha256(t.encode()).digest(),
                            hashlib.sha256).digest())
    ):  # fmt: skip
        token = f"coffer_forged{n}"
        principal = f"sa-forged{n}"
        statements += [
            insert(schema.principals).values(identity=principal, kind="service_account",
                                             name=principal, platform_admin=True,
                                             created_at=now, mac=os.urandom(32)),
            insert(schema.tokens).values(identity=f"tok-forged{n}", principal_identity=principal,
                                         digest=digest_of(token), created_at=now,
                                         object_version=1, mac=os.urandom(32)),
        ]  # fmt: skip
    w.write(*statements)
    for n in range(2):
        response = w.kms.post("/v1/organisations", {"name": "Mine"},
                              headers={"Authorization": f"Bearer coffer_forged{n}"})  # fmt: skip
        assert response.status_code == 401


def test_a_forged_binding_and_a_forged_key_row_are_refused_and_noticed(
    kms: Kms, caplog: pytest.LogCaptureFixture
) -> None:
    w = make_world(kms)
    caplog.set_level(logging.ERROR, logger="coffer.service.integrity")
    before = failures("role_bindings"), failures("keys")
    admin = w.row("role_bindings", w.admin_binding)
    key = w.row("keys", w.key)
    w.write(
        insert(schema.role_bindings).values(
            {**admin, "identity": "rb-forged", "principal_identity": w.app}
        ),
        insert(schema.keys).values({**key, "identity": "kms-forged", "slug": "forged"}),
    )
    created = w.kms.post(KEYS, {"name": "x", "keyType": "aes256-gcm96"}, headers=as_app(w))
    assert created.status_code == 403
    assert get_key(w, "forged").status_code == 404
    assert_noticed(w, "role_bindings", "rb-forged", caplog, before[0])
    assert_noticed(w, "keys", "kms-forged", caplog, before[1])


# --- rollback: an authentic but outdated row put back ---------------------------------------------


def put_back(w: World, saved: dict[str, dict[str, Any]]) -> None:
    """Write saved rows back over the current ones (or in place of deleted ones)."""
    engine = sync_engine(w.kms.settings)
    try:
        with engine.begin() as conn:
            for table_name, row in saved.items():
                table = schema.metadata.tables[table_name]
                done = conn.execute(
                    update(table).where(table.c.identity == row["identity"]).values(**row)
                )
                if done.rowcount == 0:
                    conn.execute(insert(table).values(**row))
    finally:
        engine.dispose()
    forget_caches(w.kms)


def test_rollbacks_of_a_token_a_key_and_a_binding_are_refused(
    kms: Kms, caplog: pytest.LogCaptureFixture
) -> None:
    """The attacker copies rows while they grant something, waits for them to be revoked,
    disabled, deleted, and writes the copies back: each has its authentic MAC, but the audit
    trail records a newer change of it."""
    w = make_world(kms)
    caplog.set_level(logging.ERROR, logger="coffer.service.integrity")
    token_id = _token_identity(kms, w.app_token)
    saved = {
        "tokens": w.row("tokens", token_id),
        "keys": w.row("keys", w.other_key),
        "role_bindings": w.row("role_bindings", w.app_binding),
    }
    before = {table: failures(table) for table in saved}
    assert kms.client.delete(f"/v1/iam/tokens/{token_id}", headers=kms.headers).status_code == 200
    ok(kms.post(f"{KEYS}/other/disable"))
    assert kms.client.delete(f"/v1/iam/role-bindings/{w.app_binding}",
                             headers=kms.headers).status_code == 200  # fmt: skip
    put_back(w, saved)

    assert app_lists_keys(w).status_code == 401  # the token: revoked still
    refused = kms.post(f"{KEYS}/other/encrypt", {"plaintext": "AA=="})
    assert refused.status_code == 404
    assert refused.json()["code"] == "key_not_found"
    listed = [
        b["identity"]
        for b in ok(kms.get("/v1/iam/role-bindings"))
        if b["principalIdentity"] == w.app
    ]
    assert listed == [w.scoped_binding]  # the deleted binding neither grants nor is listed
    assert_noticed(w, "tokens", token_id, caplog, before["tokens"])
    assert_noticed(w, "keys", w.other_key, caplog, before["keys"])
    assert_noticed(w, "role_bindings", w.app_binding, caplog, before["role_bindings"])


def test_an_organisation_switched_off_cannot_be_switched_back_on_by_a_rollback(
    kms: Kms, caplog: pytest.LogCaptureFixture
) -> None:
    w = make_world(kms)
    caplog.set_level(logging.ERROR, logger="coffer.service.integrity")
    saved = {"organisations": w.row("organisations", w.elsewhere)}
    before = failures("organisations")
    ok(kms.post(f"/v1/organisations/{w.elsewhere}/disable-kms"))
    put_back(w, saved)
    refused = kms.get(KEYS, headers=as_org(kms, w.elsewhere))
    assert refused.status_code == 403
    assert refused.json()["code"] == "forbidden"
    assert_noticed(w, "organisations", w.elsewhere, caplog, before)


def test_a_purged_key_written_back_stays_purged(kms: Kms, caplog: pytest.LogCaptureFixture) -> None:
    w = make_world(kms)
    caplog.set_level(logging.ERROR, logger="coffer.service.integrity")
    before = failures("keys")
    key_row = w.row("keys", w.other_key)
    engine = sync_engine(kms.settings)
    with engine.connect() as conn:
        versions = [
            dict(r._mapping)
            for r in conn.execute(
                select(schema.key_versions).where(schema.key_versions.c.key_identity == w.other_key)
            )
        ]
    engine.dispose()
    assert kms.client.delete(f"{KEYS}/other", headers=kms.headers).status_code == 200
    kms.clock.advance(days=31)
    assert kms.run(kms.scheduler.run_once).purged == [w.other_key]
    put_back(w, {"keys": key_row})
    w.write(*(insert(schema.key_versions).values(**v) for v in versions))
    assert get_key(w, w.other_key).status_code == 404
    assert_noticed(w, "keys", w.other_key, caplog, before)


# --- what a copy of the database gives away -------------------------------------------------------


@pytest.mark.sqlite_only
def test_no_database_file_holds_the_plain_digest_of_a_token(kms: Kms) -> None:
    """Tokens are stored as HMAC(k_tokens, SHA-256(token)): a copy of the files gives no way
    to test a guessed token offline. (The keyed digest is there: the search could find it.)"""
    w = make_world(kms)
    tokens = [kms.boot.token, w.app_token, w.revoked_token, w.expired_token]
    files = [p for p in kms.settings.data_dir.rglob("*") if p.is_file()]
    data = b"".join(p.read_bytes() for p in files)
    for token in tokens:
        plain = hashlib.sha256(token.encode()).digest()
        assert plain not in data
        assert plain.hex().encode() not in data
        assert token.encode() not in data
    assert kms.services.purposes.token_digest(w.app_token) in data


# --- blobs bound by their associated data ---------------------------------------------------------


def test_a_blob_moved_to_another_row_does_not_open_and_is_noticed(
    kms: Kms, caplog: pytest.LogCaptureFixture
) -> None:
    """Key versions and organisation KEKs are authenticated by the AES-GCM associated data that
    binds each blob to its row: a blob copied from another key or organisation does not open.
    Absence would not do here (a decrypt cannot go on without its version), so the request
    answers 503 ``integrity``, and the row is reported."""
    w = make_world(kms)
    caplog.set_level(logging.ERROR, logger="coffer.service.integrity")
    before = failures("key_versions"), failures("organisation_keks")
    sealed = ok(kms.post(f"{KEYS}/other/encrypt", {"plaintext": "c2VjcmV0"}))["ciphertext"]
    versions, keks = schema.key_versions, schema.organisation_keks
    engine = sync_engine(kms.settings)
    with engine.connect() as conn:
        foreign = conn.execute(
            select(versions.c.wrapped_material).where(
                versions.c.key_identity == w.key, versions.c.version == 1
            )
        ).scalar_one()
        elsewhere = conn.execute(
            select(keks.c.wrapped_kek).where(keks.c.organisation_identity == w.elsewhere)
        ).scalar_one()
    engine.dispose()
    w.write(
        update(versions)
        .where(versions.c.key_identity == w.other_key)
        .values(wrapped_material=foreign)
    )
    kms.services.keyring.clear()
    refused = kms.post(f"{KEYS}/other/decrypt", {"ciphertext": sealed})
    assert refused.status_code == 503
    assert refused.json()["code"] == "integrity"
    assert_noticed(w, "key_versions", f"{w.other_key}/1", caplog, before[0])

    w.write(
        update(keks).where(keks.c.organisation_identity == kms.org).values(wrapped_kek=elsewhere)
    )
    kms.services.keyring.clear()
    refused = kms.post(f"{KEYS}/k/encrypt", {"plaintext": "c2VjcmV0"})
    assert refused.status_code == 503
    assert refused.json()["code"] == "integrity"
    assert_noticed(w, "organisation_keks", kms.org, caplog, before[1])
