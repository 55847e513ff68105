"""Health, readiness, the OpenAPI document, request ids and the hot path's database use."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import event

from coffer.api.routes import ENDPOINTS
from tests.api.test_access import error
from tests.conftest import Kms, on_postgresql

KEYS = "/v1/kms/nl-01/keys"


def test_healthz_needs_no_token(kms: Kms) -> None:
    response = kms.client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_readyz_checks_database_and_root_key(kms: Kms) -> None:
    assert kms.client.get("/readyz").json() == {"status": "ready"}
    moved = kms.settings.root_key_path.with_suffix(".moved")
    kms.settings.root_key_path.rename(moved)
    try:
        # The seal's periodic look (every few seconds, or when another node says it rotated)
        # does not write the removed file back from memory.
        kms.run(kms.services.root.refresh)
        assert not kms.settings.root_key_path.exists()
        response = kms.client.get("/readyz")
        error(response, 503, "unavailable")
        assert str(kms.settings.data_dir) not in response.text
    finally:
        moved.rename(kms.settings.root_key_path)
    assert kms.client.get("/readyz").status_code == 200


def test_readyz_fails_while_the_database_refuses_writes(kms: Kms) -> None:
    """Reads still work, so a read-only check would say ready; every write would fail."""
    from tests.api.test_audit import execute

    assert kms.client.get("/readyz").status_code == 200
    if on_postgresql():
        execute(kms, "CREATE FUNCTION refuse_write() RETURNS trigger AS $$ BEGIN "
                "RAISE EXCEPTION 'read-only'; END $$ LANGUAGE plpgsql",
                "CREATE TRIGGER refuse BEFORE UPDATE ON audit_chain_head "
                "FOR EACH ROW EXECUTE FUNCTION refuse_write()")  # fmt: skip
    else:
        execute(kms, "CREATE TRIGGER refuse BEFORE UPDATE ON audit_chain_head "
                "BEGIN SELECT RAISE(ABORT, 'read-only'); END")  # fmt: skip
    try:
        error(kms.client.get("/readyz"), 503, "unavailable")
        assert kms.client.get("/v1/kms/nl-01/keys", headers=kms.headers).status_code == 503
    finally:
        if on_postgresql():
            execute(kms, "DROP TRIGGER refuse ON audit_chain_head", "DROP FUNCTION refuse_write()")
        else:
            execute(kms, "DROP TRIGGER refuse")
    assert kms.client.get("/readyz").status_code == 200


def test_readyz_fails_while_the_audit_anchor_cannot_be_written(
    kms: Kms, caplog: pytest.LogCaptureFixture
) -> None:
    anchor = kms.settings.anchor_path
    away = anchor.with_suffix(".away")
    anchor.rename(away)
    anchor.mkdir()  # something that cannot be appended to stands in its place
    try:
        error(kms.client.get("/readyz"), 503, "unavailable")
        assert "the audit anchor cannot be written" in caplog.text  # the operator's log
    finally:
        anchor.rmdir()
        away.rename(anchor)
    assert kms.client.get("/readyz").status_code == 200


def test_request_id_is_echoed_or_generated(kms: Kms) -> None:
    given = kms.client.get("/healthz", headers={"X-Request-Id": "trace-123"})
    assert given.headers["x-request-id"] == "trace-123"
    generated = kms.client.get("/healthz")
    assert len(generated.headers["x-request-id"]) == 32
    # A header that could inject into logs is replaced, not echoed.
    hostile = kms.client.get("/healthz", headers={"X-Request-Id": "a b\tc"})
    assert hostile.headers["x-request-id"] != "a b\tc"


def test_unknown_paths_and_methods_get_json_errors(kms: Kms) -> None:
    error(kms.client.get("/v2/nothing"), 404, "not_found")
    error(kms.client.delete("/v1/kms/summary"), 405, "method_not_allowed")


@pytest.mark.parametrize("method", ["PUT", "TRACE", "PATCH", "DELETE", "OPTIONS"])
def test_an_undeclared_method_is_a_405_naming_the_ones_there_are(kms: Kms, method: str) -> None:
    """Every path of the endpoint table, asked with a method it does not have: 405, the JSON
    error body, and ``Allow`` listing exactly the methods the table gives that path."""
    declared: dict[str, set[str]] = {}
    for endpoint in ENDPOINTS:
        declared.setdefault(endpoint.path, set()).add(endpoint.method)
    values = {"region": "nl-01", "key": "k", "organisation": "default", "token": "tok-x",
              "binding": "rb-x"}  # fmt: skip
    for path, methods in declared.items():
        if method in methods:
            continue
        answer = kms.client.request(method, path.format(**values), headers=kms.headers)
        error(answer, 405, "method_not_allowed")
        allowed = {m.strip() for m in answer.headers["allow"].split(",")}
        assert allowed - {"HEAD"} == methods, (path, allowed)


def test_openapi_document_describes_every_endpoint_from_the_same_types(kms: Kms) -> None:
    document = kms.client.get("/openapi.json").json()
    assert document["openapi"].startswith("3.1")
    for endpoint in ENDPOINTS:
        operation = document["paths"][endpoint.path][endpoint.method.lower()]
        assert str(endpoint.status) in operation["responses"]
    schemas = document["components"]["schemas"]
    assert {"KmsKey", "CreateKeyRequest", "EncryptRequest", "ErrorBody"} <= set(schemas)
    create = schemas["CreateKeyRequest"]
    assert create["required"] == ["name", "keyType"]
    assert "rotationPeriodInDays" in create["properties"]
    assert schemas["EncryptRequest"]["properties"]["plaintext"]["contentEncoding"] == "base64"
    assert set(schemas["KmsKey"]["properties"]) >= {
        "identity", "slug", "keyType", "status", "latestVersion", "minDecryptionVersion",
        "versions", "objectVersion", "organisation",
    }  # fmt: skip


def test_warm_hot_path_only_appends_its_audit_records(kms: Kms) -> None:
    kms.create_key("k")
    sealed = kms.post(f"{KEYS}/k/encrypt", {"plaintext": "AA=="}).json()["ciphertext"]
    kms.post(f"{KEYS}/k/decrypt", {"ciphertext": sealed})

    statements: dict[str, list[str]] = {"reads": [], "audit": []}
    engines = {
        "reads": kms.services.store.engine.sync_engine,  # type: ignore[attr-defined]
        "audit": kms.services.audit_store._writer,  # type: ignore[attr-defined]
    }
    listeners = {}
    for name, engine in engines.items():

        def record(conn: Any, cursor: Any, statement: str, *args: Any, name: str = name) -> None:
            statements[name].append(statement)

        listeners[name] = record
        event.listen(engine, "before_cursor_execute", record)
    try:
        for _ in range(5):
            assert kms.post(f"{KEYS}/k/encrypt", {"plaintext": "AA=="}).status_code == 200
            assert kms.post(f"{KEYS}/k/decrypt", {"ciphertext": sealed}).status_code == 200
    finally:
        for name, engine in engines.items():
            event.remove(engine, "before_cursor_execute", listeners[name])
    # Nothing is read; per batch of audit records, the chain head is locked and read, moved, and
    # the records go in (SQLite's write transactions begin with an explicit BEGIN IMMEDIATE;
    # psycopg begins its own).
    assert statements["reads"] == []
    assert statements["audit"]
    begin = set() if on_postgresql() else {"BEGIN IMMEDIATE"}
    first_lines = {
        s.split("\n")[0].split(" (")[0].split(" SET")[0].strip() for s in statements["audit"]
    }
    assert first_lines == begin | {
        "SELECT audit_chain_head.seq, audit_chain_head.hash",
        "UPDATE audit_chain_head",
        "INSERT INTO audit_events",
    }


def test_an_unexpected_failure_is_a_500_that_reveals_nothing_but_the_request_id(
    kms: Kms,
) -> None:
    kms.create_key("k")

    async def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("database password is hunter2")

    kms.services.keys.get_key = broken  # type: ignore[method-assign]
    response = kms.get(f"{KEYS}/k", headers={**kms.headers, "X-Request-Id": "req-500"})
    assert response.status_code == 500
    assert response.headers["x-request-id"] == "req-500"
    assert response.json() == {
        "message": "internal error",
        "code": "internal",
        "requestId": "req-500",
    }
    assert "hunter2" not in response.text
