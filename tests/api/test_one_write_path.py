"""One audited write path: every endpoint that changes something stores its change and its audit
record in one transaction. With the audit log refusing writes (a full or read-only disk), each of
them answers 503 and leaves every table as it was — generated from the endpoint table, so a new
endpoint that changes something without a case here fails this module."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import select

from coffer.api.routes import ENDPOINTS, Endpoint
from coffer.storage.schema import metadata
from tests.api.test_access import error
from tests.api.test_audit import allow_audit_inserts, refuse_audit_inserts
from tests.conftest import Kms, sync_engine

KEY = "/v1/kms/nl-01/keys/k"
CHANGING = [e for e in ENDPOINTS if e.changes]
#: Endpoints that are not reads but change nothing stored: they compute, or move the seal.
COMPUTING = {"encrypt", "decrypt", "sign", "verify", "hmac", "verify_hmac", "export", "unseal",
             "seal"}  # fmt: skip
#: What the audit log's own tables hold (they are what is refused here).
AUDIT_TABLES = {"audit_events", "audit_chain_head", "audit_checkpoints", "audit_prunes",
                "change_events"}  # fmt: skip

Request = tuple[str, str, Any]


def ok(response: Any) -> Any:
    assert response.status_code in (200, 201, 202), response.text
    return response.json()


def account(kms: Kms) -> dict[str, Any]:
    return ok(kms.post("/v1/iam/service-accounts", {"name": "app"}))


def token(kms: Kms) -> dict[str, Any]:
    account(kms)
    return ok(kms.post("/v1/iam/tokens", {"serviceAccount": "app"}))


def binding(kms: Kms) -> dict[str, Any]:
    account(kms)
    return ok(kms.post("/v1/iam/role-bindings", {"principal": "app", "policy": "kms:Encrypt"}))


#: Per changing endpoint (by operation): make what it needs, and return the request to send.
CASES: dict[str, Callable[[Kms], Request]] = {
    "create_key": lambda kms: ("POST", "/v1/kms/nl-01/keys",
                               {"name": "new", "keyType": "aes256-gcm96"}),
    "rotate": lambda kms: ("POST", f"{KEY}/rotate", None),
    "update_rotation": lambda kms: ("PATCH", f"{KEY}/rotation",
                                    {"keyRotationEnabled": True, "rotationPeriodInDays": 30}),
    "update_versions": lambda kms: (ok(kms.post(f"{KEY}/rotate")) and "PATCH",
                                    f"{KEY}/versions", {"minDecryptionVersion": 2}),
    "disable": lambda kms: ("POST", f"{KEY}/disable", None),
    "enable": lambda kms: (ok(kms.post(f"{KEY}/disable")) and "POST", f"{KEY}/enable", None),
    "delete_key": lambda kms: ("DELETE", KEY, None),
    "cancel_deletion": lambda kms: (ok(kms.client.delete(KEY, headers=kms.headers)) and "DELETE",
                                    f"{KEY}/cancel-deletion", None),
    "create_organisation": lambda kms: ("POST", "/v1/organisations", {"name": "New Org"}),
    "enable_kms": lambda kms: (ok(kms.post("/v1/organisations", {"name": "Off",
                                                                 "kmsEnabled": False}))
                               and "POST", "/v1/organisations/off/enable-kms", None),
    "disable_kms": lambda kms: ("POST", "/v1/organisations/default/disable-kms", None),
    "shred_organisation": lambda kms: (ok(kms.post("/v1/organisations", {"name": "Doomed"}))
                                       and "POST", "/v1/organisations/doomed/shred",
                                       {"confirm": "doomed"}),
    "create_project": lambda kms: ("POST", "/v1/projects", {"name": "project"}),
    "create_service_account": lambda kms: ("POST", "/v1/iam/service-accounts", {"name": "sa"}),
    "create_token": lambda kms: (account(kms) and "POST", "/v1/iam/tokens",
                                 {"serviceAccount": "app"}),
    "revoke_token": lambda kms: ("DELETE", f"/v1/iam/tokens/{token(kms)['identity']}", None),
    "create_role_binding": lambda kms: (account(kms) and "POST", "/v1/iam/role-bindings",
                                        {"principal": "app", "policy": "kms:Decrypt"}),
    "delete_role_binding": lambda kms: ("DELETE",
                                        f"/v1/iam/role-bindings/{binding(kms)['identity']}", None),
    "rotate_root": lambda kms: ("POST", "/v1/sys/rotate-root", None),
    # The first request of an organisation makes its wrapping key.
    "wrapping_key": lambda kms: ("GET", "/v1/kms/nl-01/wrapping-key", None),
}  # fmt: skip


def stored(kms: Kms) -> dict[str, list[str]]:
    """Every row of every table but the audit log's own, as text."""
    engine = sync_engine(kms.settings)
    try:
        with engine.connect() as conn:
            return {
                table.name: sorted(repr(tuple(row)) for row in conn.execute(select(table)))
                for table in metadata.sorted_tables
                if table.name not in AUDIT_TABLES
            }
    finally:
        engine.dispose()


def test_every_endpoint_that_is_not_a_read_says_whether_it_changes_what_is_stored() -> None:
    for endpoint in ENDPOINTS:
        if endpoint.method != "GET":
            assert endpoint.changes != (endpoint.operation in COMPUTING), endpoint.operation
    assert {e.operation for e in CHANGING} == set(CASES), "a case for every changing endpoint"


@pytest.mark.parametrize("endpoint", CHANGING, ids=lambda e: e.operation)
def test_a_change_whose_record_cannot_be_written_is_not_stored(
    kms: Kms, endpoint: Endpoint
) -> None:
    kms.create_key("k")
    method, path, body = CASES[endpoint.operation](kms)
    before = stored(kms)
    refuse_audit_inserts(kms)
    try:
        response = kms.client.request(method, path, headers=kms.headers, json=body)
        error(response, 503, "unavailable")
    finally:
        allow_audit_inserts(kms)
    assert stored(kms) == before
    # And the same request, with the log writable again, does change something: the case is real.
    done = kms.client.request(method, path, headers=kms.headers, json=body)
    assert done.status_code in (200, 201, 202), done.text
    assert stored(kms) != before
