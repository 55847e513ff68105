"""The audit log: one durable record per KMS request, hash-chained, queryable (spec §8)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from sqlalchemy import text

from coffer.audit.anchor import read_anchor
from coffer.audit.verify import verify_chain
from tests.api.test_access import error
from tests.conftest import Kms, on_postgresql, sync_engine

KEYS = "/v1/kms/nl-01/keys"


def records(kms: Kms) -> list[dict[str, Any]]:
    """Every stored record, oldest first, read straight from the database."""
    engine = sync_engine(kms.settings)
    try:
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT record FROM audit_events ORDER BY seq")).scalars()
            return [json.loads(r) for r in rows]
    finally:
        engine.dispose()


def execute(kms: Kms, *statements: str) -> None:
    engine = sync_engine(kms.settings)
    try:
        with engine.begin() as conn:
            for statement in statements:
                conn.execute(text(statement))
    finally:
        engine.dispose()


def refuse_audit_inserts(kms: Kms) -> None:
    """Make the audit table refuse every insert, as a full or read-only disk would."""
    if on_postgresql():
        execute(
            kms,
            "CREATE FUNCTION refuse_audit() RETURNS trigger AS $$ BEGIN "
            "RAISE EXCEPTION 'audit storage is read-only'; END $$ LANGUAGE plpgsql",
            "CREATE TRIGGER refuse BEFORE INSERT ON audit_events "
            "FOR EACH ROW EXECUTE FUNCTION refuse_audit()",
        )
    else:
        execute(
            kms,
            "CREATE TRIGGER refuse BEFORE INSERT ON audit_events "
            "BEGIN SELECT RAISE(ABORT, 'audit storage is read-only'); END",
        )


def allow_audit_inserts(kms: Kms) -> None:
    if on_postgresql():
        execute(kms, "DROP TRIGGER refuse ON audit_events", "DROP FUNCTION refuse_audit()")
    else:
        execute(kms, "DROP TRIGGER refuse")


def verification(kms: Kms):  # type: ignore[no-untyped-def]
    """The chain verified as ``coffer audit verify`` does: with the link key and the anchor."""
    signer = kms.run(kms.services.purposes.checkpoint_signer)
    path = kms.settings.anchor_path
    anchor = read_anchor(path) if path.exists() else None
    purposes = kms.services.purposes
    return kms.run(verify_chain, kms.services.audit_store, signer, purposes.audit_link, anchor)


@pytest.fixture
def prepared(kms: Kms) -> Kms:
    kms.create_key("k")
    kms.create_key("old")
    kms.create_key("ec", "ecdsa-p256")
    kms.create_key("mac", "hmac", exportAllowed=True)
    kms.client.post(f"{KEYS}/old/disable", headers=kms.headers)
    return kms


def reader_headers(kms: Kms) -> dict[str, str]:
    token = kms.add_principal("kms:ReadAccess")
    return {"Authorization": f"Bearer {token}", "X-Organisation-Identity": kms.org}


CASES: list[tuple[str, str, str, Any, str, int, str | None]] = [
    # (method, path, action, body, headers kind, status, error code)
    ("GET", KEYS, "kms.key.list", None, "admin", 200, None),
    ("POST", KEYS, "kms.key.create", {"name": "new", "keyType": "aes256-gcm96"}, "admin", 201, None),
    ("POST", KEYS, "kms.key.create", {"name": "k", "keyType": "aes256-gcm96"}, "admin", 409, "conflict"),
    ("POST", KEYS, "kms.key.create", {"name": "x", "keyType": "rsa-1024"}, "admin", 400, "unsupported_key_type"),
    ("POST", KEYS, "kms.key.create", {"name": "x", "keyType": "aes256-gcm96"}, "reader", 403, "forbidden"),
    ("GET", f"{KEYS}/k", "kms.key.read", None, "admin", 200, None),
    ("GET", f"{KEYS}/nope", "kms.key.read", None, "admin", 404, "key_not_found"),
    ("POST", f"{KEYS}/k/encrypt", "kms.encrypt", {"plaintext": "c2VjcmV0"}, "admin", 200, None),
    ("POST", f"{KEYS}/k/encrypt", "kms.encrypt", {"plaintext": "!!"}, "admin", 400, "invalid_request"),
    ("POST", f"{KEYS}/k/encrypt", "kms.encrypt", {"plaintext": "AA=="}, "none", 401, "unauthenticated"),
    ("POST", f"{KEYS}/k/encrypt", "kms.encrypt", {"plaintext": "AA=="}, "reader", 403, "forbidden"),
    ("POST", f"{KEYS}/old/encrypt", "kms.encrypt", {"plaintext": "AA=="}, "admin", 400, "key_disabled"),
    ("POST", "/v1/kms/xx-99/keys/k/encrypt", "kms.encrypt", {"plaintext": "AA=="}, "admin", 404, "region_not_found"),
    ("POST", "/v1/kms/be-01/keys/k/encrypt", "kms.encrypt", {"plaintext": "AA=="}, "admin", 503, "region_unavailable"),
    ("POST", f"{KEYS}/k/decrypt", "kms.decrypt", {"ciphertext": "thalassa:v1:AAAA"}, "admin", 400, "invalid_ciphertext"),
    ("POST", f"{KEYS}/ec/sign", "kms.sign", {"input": "c2lnbiBtZQ=="}, "admin", 200, None),
    ("POST", f"{KEYS}/ec/sign", "kms.sign", {"input": "AA==", "hashAlgorithm": "md5"}, "admin", 400, "invalid_request"),
    ("POST", f"{KEYS}/k/sign", "kms.sign", {"input": "AA=="}, "admin", 400, "unsupported_operation"),
    ("POST", f"{KEYS}/ec/verify", "kms.verify", {"input": "AA==", "signature": "thalassa:v1:MAYCAQECAQE="}, "admin", 200, None),
    ("POST", f"{KEYS}/ec/verify", "kms.verify", {"input": "AA==", "signature": "nope"}, "admin", 400, "invalid_signature_format"),
    ("POST", f"{KEYS}/mac/hmac", "kms.hmac", {"input": "aG1hYyBtZQ=="}, "admin", 200, None),
    ("POST", f"{KEYS}/mac/hmac", "kms.hmac", {"input": "AA=="}, "reader", 403, "forbidden"),
    ("POST", f"{KEYS}/mac/verify-hmac", "kms.verify_hmac", {"input": "AA==", "hmac": "thalassa:v1:AAAA"}, "admin", 200, None),
    ("POST", f"{KEYS}/mac/verify-hmac", "kms.verify_hmac", {"input": "AA==", "hmac": "thalassa:v9:AAAA"}, "admin", 400, "invalid_key_version"),
    ("GET", f"{KEYS}/ec/public-key", "kms.public_key.read", None, "admin", 200, None),
    ("GET", f"{KEYS}/k/public-key", "kms.public_key.read", None, "admin", 400, "unsupported_operation"),
    ("GET", f"{KEYS}/nope/public-key", "kms.public_key.read", None, "admin", 404, "key_not_found"),
    ("POST", f"{KEYS}/mac/export", "kms.export", None, "admin", 200, None),
    ("POST", f"{KEYS}/k/export", "kms.export", None, "admin", 400, "export_not_allowed"),
    ("POST", f"{KEYS}/mac/export", "kms.export", None, "reader", 403, "forbidden"),
    ("GET", "/v1/kms/nl-01/wrapping-key", "kms.wrapping_key.read", None, "admin", 200, None),
    ("GET", "/v1/kms/nl-01/wrapping-key", "kms.wrapping_key.read", None, "reader", 403, "forbidden"),
    ("POST", KEYS, "kms.key.create", {"name": "imp", "keyType": "aes256-gcm96", "importKeyMaterial": "AAAA"}, "admin", 400, "invalid_key_material"),
    ("POST", f"{KEYS}/k/rotate", "kms.rotate", None, "admin", 200, None),
    ("PATCH", f"{KEYS}/k/rotation", "kms.rotation.update", {"rotationPeriodInDays": 7}, "admin", 200, None),
    ("PATCH", f"{KEYS}/k/rotation", "kms.rotation.update", {"rotationPeriodInDays": 0}, "admin", 400, "invalid_request"),
    ("PATCH", f"{KEYS}/k/versions", "kms.versions.update", {"minDecryptionVersion": 1}, "admin", 200, None),
    ("POST", f"{KEYS}/k/disable", "kms.key.disable", None, "admin", 200, None),
    ("POST", f"{KEYS}/k/enable", "kms.key.enable", None, "admin", 400, "key_active"),
    ("POST", f"{KEYS}/old/enable", "kms.key.enable", None, "admin", 200, None),
    ("DELETE", f"{KEYS}/k", "kms.key.delete", None, "admin", 200, None),
    ("DELETE", f"{KEYS}/k/cancel-deletion", "kms.key.cancel_deletion", None, "admin", 400, "key_active"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("method", "path", "action", "body", "who", "status", "code"),
    CASES,
    ids=[f"{c[2]}-{c[5]}" for c in CASES],
)
def test_every_request_writes_exactly_one_record(
    prepared: Kms,
    method: str,
    path: str,
    action: str,
    body: Any,
    who: str,
    status: int,
    code: str | None,
) -> None:
    kms = prepared
    headers = {"admin": kms.headers, "reader": reader_headers(kms), "none": {}}[who]
    before = len(records(kms))
    response = kms.client.request(method, path, json=body, headers=headers)
    assert response.status_code == status, response.text
    written = records(kms)[before:]
    assert len(written) == 1, written
    record = written[0]
    assert record["action"] == action
    assert record["resourceType"] == "kms_key"
    context = record["context"]
    assert context["status"] == status
    assert context["outcome"] == ("success" if status < 400 else "failure")
    assert context["errorCode"] == code
    assert context["requestId"] == response.headers["x-request-id"]
    assert context["client_ip"] == "testclient"
    if who != "none":
        assert record["organizationIdentity"] == kms.org
    if "/keys/k/" in path and status not in (401, 403, 404, 503):
        assert context["keySlug"] == "k"
        assert context["keyType"] == "aes256-gcm96"


def test_the_summary_and_the_audit_query_write_no_record(kms: Kms) -> None:
    before = len(records(kms))
    assert kms.get("/v1/kms/summary").status_code == 200
    assert kms.get("/v1/audit").status_code == 200
    assert len(records(kms)) == before


def test_crypto_records_carry_sizes_and_versions_but_no_secrets(kms: Kms) -> None:
    kms.create_key("k")
    plaintext = "dG9wIHNlY3JldCBwYXlsb2Fk"  # "top secret payload"
    sealed = kms.post(f"{KEYS}/k/encrypt", {"plaintext": plaintext}).json()["ciphertext"]
    kms.post(f"{KEYS}/k/decrypt", {"ciphertext": sealed})
    encrypted, decrypted = records(kms)[-2:]
    assert encrypted["context"]["plaintextBytes"] == 18
    assert encrypted["context"]["ciphertextBytes"] == 12 + 18 + 16
    assert decrypted["context"]["keyVersion"] == 1
    stored = json.dumps(records(kms))
    for secret in (plaintext, "top secret", sealed, sealed.split(":")[2], kms.boot.token):
        assert secret not in stored


def test_the_audit_query_is_organisation_scoped_filtered_and_paged(kms: Kms) -> None:
    key = kms.create_key("k")
    for _ in range(5):
        kms.post(f"{KEYS}/k/encrypt", {"plaintext": "AA=="})
    kms.post(f"{KEYS}/k/decrypt", {"ciphertext": "thalassa:v1:AAAA"})

    page = kms.get("/v1/audit?limit=3").json()
    assert set(page) == {"items", "totalItems", "page", "itemsPerPage", "totalPages", "totalCount"}
    assert (page["totalItems"], page["page"], page["itemsPerPage"], page["totalPages"]) == (
        7,
        1,
        3,
        3,
    )
    assert len(page["items"]) == 3
    assert page["items"][0]["action"] == "kms.decrypt"  # newest first
    last = kms.get("/v1/audit?limit=3&page=3").json()
    assert len(last["items"]) == 1
    assert last["items"][0]["action"] == "kms.key.create"

    def count(query: str) -> int:
        response = kms.get(f"/v1/audit?{query}")
        assert response.status_code == 200, response.text
        total: int = response.json()["totalItems"]
        return total

    assert count("action=kms.encrypt") == 5
    assert count(f"resourceIdentity={key['identity']}") == 7
    assert count("responseStatus=400") == 1
    assert count(f"userIdentity={kms.boot.principal.identity}") == 7
    assert count("serviceAccount=sa-nobody") == 0
    assert count("resourceType=kms_key") == 7
    after = kms.get("/v1/audit?order=asc&afterSeq=3").json()["items"]
    assert [item["seq"] for item in after] == [4, 5, 6, 7]
    assert count("resourceType=other") == 0
    assert count("since=2000-01-01T00:00:00Z&until=2999-01-01T00:00:00Z") == 7
    assert count("until=2000-01-01T00:00:00Z") == 0
    # The same instant in another offset selects the same records.
    first = records(kms)[0]["createdAt"]
    from datetime import datetime, timedelta, timezone

    instant = datetime.fromisoformat(first.replace("Z", "+00:00"))
    in_cest = instant.astimezone(timezone(timedelta(hours=2))).isoformat()
    assert count(f"since={in_cest.replace('+', '%2B')}") == 7
    for bad in ("page=0", "limit=1001", "limit=x", "since=yesterday", "responseStatus=42",
                "action=kms%00"):  # fmt: skip
        error(kms.get(f"/v1/audit?{bad}"), 400, "invalid_request")
    # Valid RFC 3339 times at the very edges of the calendar, and a leap second, are accepted.
    assert count("since=0001-01-01T00:00:00%2B14:00") == 7
    assert count("until=9999-12-31T23:59:59-14:00") == 7
    assert count("until=1990-12-31T23:59:60z") == 0


def test_reading_the_audit_needs_audit_read_access(kms: Kms) -> None:
    crypto_admin = kms.add_principal("kms:FullAccess")
    headers = {"Authorization": f"Bearer {crypto_admin}", "X-Organisation-Identity": kms.org}
    error(kms.get("/v1/audit", headers=headers), 403, "forbidden")
    auditor = kms.add_principal("audit:ReadAccess")
    headers["Authorization"] = f"Bearer {auditor}"
    assert kms.get("/v1/audit", headers=headers).status_code == 200
    error(kms.client.get("/v1/audit"), 401, "unauthenticated")


def test_the_log_fails_closed_when_it_cannot_be_written(kms: Kms) -> None:
    kms.create_key("k")
    refuse_audit_inserts(kms)
    response = kms.post(f"{KEYS}/k/encrypt", {"plaintext": "c2VjcmV0"})
    error(response, 503, "unavailable")
    assert "ciphertext" not in response.text
    error(kms.post(f"{KEYS}/k/rotate"), 503, "unavailable")
    allow_audit_inserts(kms)
    assert kms.post(f"{KEYS}/k/encrypt", {"plaintext": "c2VjcmV0"}).status_code == 200
    assert verification(kms).ok


# --- the chain ---------------------------------------------------------------------------------


@pytest.fixture
def chained(tmp_path: Any) -> Any:
    from starlette.testclient import TestClient

    from coffer.bootstrap import build_app
    from tests.conftest import FakeClock, initialised, make_settings

    settings = make_settings(tmp_path / "data", audit_checkpoint_every=5)
    boot = initialised(settings)
    clock = FakeClock()
    with TestClient(build_app(settings, clock=clock, run_scheduler=False)) as client:
        kms = Kms(client, settings, boot, clock)
        kms.create_key("k")
        for _ in range(11):
            kms.post(f"{KEYS}/k/encrypt", {"plaintext": "AA=="})
        yield kms


def test_an_untouched_chain_verifies_with_signed_checkpoints(chained: Kms) -> None:
    result = verification(chained)
    assert result.ok, result.problem
    assert (result.records, result.last_seq, result.checkpoints) == (12, 12, 2)


TAMPERING: dict[str, tuple[list[str], str]] = {
    "edit a record": (
        ["UPDATE audit_events SET record = replace(record, 'kms.encrypt', 'kms.decrypt') "
         "WHERE seq = 4"], "record 4 was changed"),
    "edit a column": (["UPDATE audit_events SET status = 500 WHERE seq = 4"], "record 4's columns"),
    "delete a record": (["DELETE FROM audit_events WHERE seq = 7"], "record 7 is missing"),
    "reorder two records": (
        ["UPDATE audit_events SET seq = -3 WHERE seq = 3",
         "UPDATE audit_events SET seq = 3 WHERE seq = 4",
         "UPDATE audit_events SET seq = 4 WHERE seq = -3"], "record 3 does not link"),
    "truncate the tail": (["DELETE FROM audit_events WHERE seq > 11"], "head is at 12"),
    "truncate the tail and move the head": (
        ["DELETE FROM audit_events WHERE seq > 7",
         "UPDATE audit_chain_head SET seq = 7, hash = (SELECT hash FROM audit_events WHERE seq = 7)"],
        "the anchor holds a checkpoint at record 10, beyond the database's last record 7"),
    "wipe the log": (
        ["DELETE FROM audit_events", "DELETE FROM audit_checkpoints",
         "UPDATE audit_chain_head SET seq = 0, hash = "
         + ("decode(repeat('00', 32), 'hex')" if on_postgresql() else "zeroblob(32)")],
        "the anchor holds a checkpoint at record 5, beyond the database's last record 0"),
    "truncate to an old checkpoint": (
        ["DELETE FROM audit_events WHERE seq > 5", "DELETE FROM audit_checkpoints WHERE seq > 5",
         "UPDATE audit_chain_head SET seq = 5, hash = (SELECT hash FROM audit_events WHERE seq = 5)"],
        "the anchor holds a checkpoint at record 10, beyond the database's last record 5"),
    "delete one checkpoint": (
        ["DELETE FROM audit_checkpoints WHERE seq = 5"],
        "the checkpoint at record 10 does not follow the checkpoint before it"),
    "edit a checkpoint's time": (
        ["UPDATE audit_checkpoints SET created_at = '1999-01-01 00:00:00.000000' WHERE seq = 5"],
        "the checkpoint at record 5 has an invalid signature"),
    "append a forged record": (
        ["INSERT INTO audit_events (seq, event_id, created_at, organisation_identity, action, "
         "principal_identity, resource_identity, status, record, prev_hash, hash) "
         "SELECT 13, 'forged', created_at, organisation_identity, action, principal_identity, "
         "resource_identity, status, replace(record, '\"seq\"\\:12', '\"seq\"\\:13'), hash, hash "
         "FROM audit_events WHERE seq = 12",
         "UPDATE audit_chain_head SET seq = 13, hash = (SELECT hash FROM audit_events WHERE seq = 13)"],
        "record 13 was changed after it was written"),
    "edit a record's time": (
        ["UPDATE audit_events SET created_at = '1999-01-01 00:00:00.000000' WHERE seq = 6"],
        "record 6's columns"),
    "delete the oldest records up to a checkpoint": (
        ["DELETE FROM audit_events WHERE seq <= 5"], "records before 6 are missing"),
    "forge a checkpoint": (
        ["UPDATE audit_checkpoints SET signature = hash WHERE seq = 5"],
        "checkpoint at record 5 has an invalid signature"),
}  # fmt: skip


@pytest.mark.parametrize("change", list(TAMPERING))
def test_tampering_is_detected(chained: Kms, change: str) -> None:
    statements, problem = TAMPERING[change]
    execute(chained, *statements)
    result = verification(chained)
    assert not result.ok
    assert problem in (result.problem or ""), result.problem


def rehash_from(kms: Kms, seq: int) -> None:
    """The database writer's rewrite: drop the checkpoints from ``seq`` on, edit record ``seq``
    and link every record from there on again — with SHA-256, as they have no link key."""
    from coffer.audit.chain import legacy_link

    engine = sync_engine(kms.settings)
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM audit_checkpoints WHERE seq >= :s"), {"s": seq})
        rows = conn.execute(text("SELECT seq, record, prev_hash FROM audit_events "
                                 "WHERE seq >= :s ORDER BY seq"), {"s": seq}).all()  # fmt: skip
        prev = bytes(rows[0].prev_hash)
        for row in rows:
            record = row.record
            if row.seq == seq:
                record = record.replace('"outcome":"success"', '"outcome":"failure"')
            digest = legacy_link(prev, record.encode())
            conn.execute(
                text("UPDATE audit_events SET record=:r, prev_hash=:p, hash=:h WHERE seq=:s"),
                {"r": record, "p": prev, "h": digest, "s": row.seq},
            )
            prev = digest
        conn.execute(text("UPDATE audit_chain_head SET hash = :h"), {"h": prev})
    engine.dispose()


def test_a_rewritten_tail_is_caught_by_the_anchor_and_by_its_links(chained: Kms) -> None:
    """Checkpoints after record 5 dropped, record 6 edited, the rest linked again: the anchor
    still holds checkpoint 10; and without the anchor, the links give it away."""
    rehash_from(chained, 6)
    result = verification(chained)
    assert "the anchor's checkpoint at record 10 is missing from the database" in (
        result.problem or ""
    ), result.problem
    signer = chained.run(chained.services.purposes.checkpoint_signer)
    link = chained.services.purposes.audit_link
    alone = chained.run(verify_chain, chained.services.audit_store, signer, link, None)
    assert alone.problem == "record 6 was changed after it was written"


def anchor_lines(kms: Kms) -> list[bytes]:
    return kms.settings.anchor_path.read_bytes().splitlines(keepends=True)


def test_the_anchor_holds_every_checkpoint_and_is_private(chained: Kms) -> None:
    anchor = read_anchor(chained.settings.anchor_path)
    assert [cp.seq for cp in anchor.checkpoints] == [5, 10]
    assert all(cp.anchor == anchor.identity for cp in anchor.checkpoints)
    assert chained.settings.anchor_path.stat().st_mode & 0o777 == 0o600
    result = verification(chained)
    assert result.ok, result.problem
    assert (result.anchored, result.unanchored) == (2, None)


@pytest.fixture
def longer(chained: Kms) -> Kms:
    """The chained log with four checkpoints (5, 10, 15, 20)."""
    for _ in range(10):
        chained.post(f"{KEYS}/k/encrypt", {"plaintext": "AA=="})
    return chained


def test_an_anchor_replaced_by_an_older_copy_or_truncated_is_detected(longer: Kms) -> None:
    path = longer.settings.anchor_path
    lines = anchor_lines(longer)
    assert len(lines) == 5  # the header and four checkpoints
    path.write_bytes(b"".join(lines[:3]))  # the copy of when checkpoint 10 was the newest
    result = verification(longer)
    assert "the anchor lacks checkpoints the database holds of it (records 15, 20)" in (
        result.problem or ""
    ), result.problem
    path.write_bytes(lines[0])  # truncated to its header
    assert "lacks checkpoints" in (verification(longer).problem or "")


def test_only_the_newest_checkpoint_may_be_missing_from_the_anchor(longer: Kms) -> None:
    """A crash between a checkpoint's commit and its append leaves the anchor one checkpoint
    behind: verify passes and names it; cutting the anchor's last line looks the same."""
    path = longer.settings.anchor_path
    path.write_bytes(b"".join(anchor_lines(longer)[:-1]))
    result = verification(longer)
    assert result.ok, result.problem
    assert result.unanchored == 20


def test_a_forged_anchor_line_is_refused(longer: Kms) -> None:
    path = longer.settings.anchor_path
    lines = anchor_lines(longer)
    forged = lines[-1].replace(b'"seq":20', b'"seq":25')
    path.write_bytes(b"".join([*lines, forged]))
    assert "the anchor's checkpoint at record 25 is not one it holds validly" in (
        verification(longer).problem or ""
    )


def test_pruning_keeps_the_chain_verifiable_from_a_checkpoint(chained: Kms) -> None:
    chained.clock.advance(days=1)
    now = chained.clock()
    log = chained.services.audit_log
    assert log is not None
    pruned = chained.run(log.prune, now)
    assert pruned == 10  # up to the newest checkpoint, record 10
    assert [r["seq"] for r in records(chained)] == [11, 12]
    result = verification(chained)
    assert result.ok, result.problem
    assert result.records == 2
    # Pruning again finds nothing new to prune before the next checkpoint.
    assert chained.run(log.prune, now) == 0


def test_groups_of_concurrent_records_share_one_commit(kms: Kms) -> None:
    import asyncio

    from coffer.audit.events import AuditEvent

    log = kms.services.audit_log
    assert log is not None

    async def burst() -> None:
        now = kms.clock()
        await asyncio.gather(
            *(log.write(AuditEvent(event_id=f"e{i}", created_at=now, action="kms.encrypt",
                                   request_id=f"r{i}")) for i in range(200))
        )  # fmt: skip

    log.batches.clear()
    kms.run(burst)
    assert sum(log.batches) == 200
    assert len(log.batches) <= 3, log.batches
    assert verification(kms).ok


def test_each_scheduler_pass_signs_a_checkpoint_when_the_chain_moved(chained: Kms) -> None:
    """12 records with checkpoints at 5 and 10: the pass covers the tail, 11 and 12."""
    report = chained.run(chained.scheduler.run_once)
    assert report.audit_checkpoint
    assert not chained.run(chained.scheduler.run_once).audit_checkpoint  # nothing new
    execute(
        chained,
        "DELETE FROM audit_events WHERE seq > 10",
        "UPDATE audit_chain_head SET seq = 10, hash = (SELECT hash FROM audit_events WHERE seq = 10)",
    )
    result = verification(chained)
    assert result.problem == (
        "the anchor holds a checkpoint at record 12, beyond the database's last record 10: "
        "records were deleted or the database was rolled back"
    )


def test_a_lifecycle_change_is_never_stored_without_its_record(kms: Kms) -> None:
    kms.create_key("k")
    kms.create_key("gone")
    kms.client.delete(f"{KEYS}/gone", headers=kms.headers)
    before = {name: kms.get(f"{KEYS}/{name}").json() for name in ("k", "gone")}
    refuse_audit_inserts(kms)
    error(kms.client.post(f"{KEYS}/k/disable", headers=kms.headers), 503, "unavailable")
    error(kms.client.post(f"{KEYS}/k/rotate", headers=kms.headers), 503, "unavailable")
    error(
        kms.client.patch(
            f"{KEYS}/k/rotation", json={"rotationPeriodInDays": 5}, headers=kms.headers
        ),
        503,
        "unavailable",
    )
    error(kms.client.delete(f"{KEYS}/k", headers=kms.headers), 503, "unavailable")
    kms.clock.advance(days=31)
    report = kms.run(kms.scheduler.run_once)
    assert report.purged == []
    allow_audit_inserts(kms)
    for name in ("k", "gone"):
        kms.services.lifecycle._scope.keys.invalidate(before[name]["identity"])
        assert kms.get(f"{KEYS}/{name}").json() == before[name]  # stored as it was
    assert verification(kms).ok
    # And with the log back, the same changes go through, each with its record.
    assert kms.client.post(f"{KEYS}/k/rotate", headers=kms.headers).status_code == 200
    assert records(kms)[-1]["action"] == "kms.rotate"
    assert records(kms)[-1]["context"]["keyVersion"] == 2


def test_racing_schedulers_on_the_durable_log_record_each_rotation_once(kms: Kms) -> None:
    import asyncio

    from coffer.bootstrap import build_scheduler, build_services

    for i in range(3):
        kms.create_key(f"k{i}", keyRotationEnabled=True, rotationPeriodInDays=1)
    kms.clock.advance(days=1, seconds=1)

    async def race() -> int:
        nodes = [build_services(kms.settings, clock=kms.clock) for _ in range(2)]
        try:
            reports = await asyncio.gather(
                *(build_scheduler(node, kms.clock).run_once() for node in nodes)
            )
        finally:
            for node in nodes:
                await node.close()
        return sum(len(r.rotated) for r in reports)

    assert kms.run(race) == 3
    scheduled = [r for r in records(kms) if r["action"] == "kms.rotate.scheduled"]
    assert len(scheduled) == 3
    assert {r["context"]["outcome"] for r in scheduled} == {"success"}
    assert verification(kms).ok


def test_anyone_with_the_public_key_verifies_the_checkpoints_and_the_anchor(
    longer: Kms, tmp_path: Any
) -> None:
    """No root of trust: the root key file is moved away, only the PEM is given."""
    import asyncio

    from coffer.bootstrap import verify_audit

    answer = longer.client.get("/v1/audit/public-key", headers=longer.headers)
    pem = answer.json()["publicKey"].encode()
    root_key = longer.settings.root_key_path
    away = tmp_path / "root.key.away"
    root_key.rename(away)
    try:
        result = asyncio.run(verify_audit(longer.settings, public_key=pem))
        assert result.ok, result.problem
        assert (result.records, result.anchored, result.links_checked) == (22, 4, False)
        execute(longer, "DELETE FROM audit_events WHERE seq > 12",
                "DELETE FROM audit_checkpoints WHERE seq > 10",
                "UPDATE audit_chain_head SET seq = 12, hash = "
                "(SELECT hash FROM audit_events WHERE seq = 12)")  # fmt: skip
        result = asyncio.run(verify_audit(longer.settings, public_key=pem))
        assert "the anchor holds a checkpoint at record 15, beyond" in (result.problem or "")
        other = Ed25519PrivateKey.generate().public_key()
        wrong = other.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
        result = asyncio.run(verify_audit(longer.settings, public_key=wrong))
        assert "invalid signature" in (result.problem or "")
    finally:
        away.rename(root_key)


def test_a_deleted_anchor_fails_verification(chained: Kms) -> None:
    import asyncio

    from coffer.bootstrap import verify_audit
    from coffer.config import ConfigError

    chained.settings.anchor_path.unlink()
    with pytest.raises(ConfigError, match="no audit anchor at"):
        asyncio.run(verify_audit(chained.settings))


@pytest.mark.one_engine  # what is counted never reaches storage: one engine shows it
def test_a_flood_of_bad_tokens_with_huge_user_agents_grows_the_log_by_less_than_a_megabyte(
    kms: Kms,
) -> None:
    """10,000 requests with bad tokens and 200 kB User-Agents from one address: 60 recorded one
    by one (plus the refill while the flood lasts), the rest counted into summary records; the
    stored records grow by less than 1 MB, and every failure is accounted for."""
    engine = sync_engine(kms.settings)

    def stored() -> int:
        with engine.connect() as conn:
            return int(conn.execute(text("SELECT COALESCE(SUM(LENGTH(record)), 0) "
                                         "FROM audit_events")).scalar() or 0)  # fmt: skip

    def on_disk() -> int:
        """The SQLite database's size in pages in use, its write-ahead log included (the log's
        file itself is a bounded buffer SQLite reuses: folded every 1,000 pages)."""
        with engine.connect() as conn:
            pages = conn.exec_driver_sql("PRAGMA page_count").scalar_one()
            free = conn.exec_driver_sql("PRAGMA freelist_count").scalar_one()
            size = conn.exec_driver_sql("PRAGMA page_size").scalar_one()
        return int((pages - free) * size)

    before = stored()
    disk_before = 0 if on_postgresql() else on_disk()
    agent = "flood/" + "x" * 200_000
    statuses = {401: 0, 429: 0}
    started = time.monotonic()
    for n in range(10_000):
        answer = kms.client.get(KEYS, headers={"Authorization": f"Bearer coffer_bad{n}",
                                               "User-Agent": agent})  # fmt: skip
        statuses[answer.status_code] += 1  # 429 beyond the address's rate of failures
    # The address's bucket: 20 at once, then 20 a second for as long as the flood lasted.
    refilled = 20 * (time.monotonic() - started)
    assert statuses[401] <= 20 + refilled + 1
    assert statuses[429] >= 10_000 - 20 - refilled - 1
    assert statuses[429] > 5_000
    kms.run(kms.services.operations.record_suppressed)
    rows = [r for r in records(kms) if r["context"]["user_agent"] is None
            or r["context"]["user_agent"].startswith("flood/")]  # fmt: skip
    one_by_one = [r for r in rows if r["action"] == "kms.key.list"]
    summaries = [r for r in rows if r["action"] == "auth.failures.suppressed"]
    assert 60 <= len(one_by_one) < 200
    assert all(r["context"]["user_agent"].endswith("…[truncated]") for r in one_by_one)
    assert all(len(r["context"]["user_agent"]) <= 256 + len("…[truncated]") for r in one_by_one)
    # One a minute while the flood lasts (the server's job), and the rest at the end.
    assert 1 <= len(summaries) <= 5
    counted = sum(s["context"]["suppressedCount"] for s in summaries)
    assert counted + len(one_by_one) == 10_000
    for summary in summaries:
        assert summary["context"]["status"] == 401
        assert summary["resourceType"] == "source_address"
        assert summary["context"]["client_ip"] == one_by_one[0]["context"]["client_ip"]
    growth = stored() - before
    print(f"\n10,000 failed authentications: {len(one_by_one)} records + {len(summaries)} "
          f"summary, {growth:,} bytes of records")  # fmt: skip
    assert growth < 1_000_000
    if not on_postgresql():
        assert on_disk() - disk_before < 1_000_000
    engine.dispose()
    assert verification(kms).ok


def exported(kms: Kms, path: Any) -> list[bytes]:
    """``coffer audit export --data-dir``'s lines, written to ``path``."""
    import asyncio

    from coffer.bootstrap import export_audit

    with path.open("wb") as out:
        asyncio.run(export_audit(kms.settings, out))
    return path.read_bytes().splitlines(keepends=True)


def _edit_line(lines: list[bytes], seq: int, kind: str, old: bytes, new: bytes) -> list[bytes]:
    mark = f'"seq":{seq},'.encode()
    return [line.replace(old, new) if kind.encode() in line and mark in line else line
            for line in lines]  # fmt: skip


def _truncated_to(lines: list[bytes], seq: int) -> list[bytes]:
    """The export cut back to record ``seq`` (and its checkpoint), with a head moved there."""
    kept = [line for line in lines
            if json.loads(line).get("type") == "export"
            or (json.loads(line).get("type") == "record" and json.loads(line)["seq"] <= seq)
            or (json.loads(line).get("type") == "checkpoint"
                and json.loads(line)["checkpoint"]["seq"] <= seq)]  # fmt: skip
    link = json.loads(next(line for line in kept if f'"seq":{seq},'.encode() in line))["link"]
    head = {"type": "head", "seq": seq, "link": link, "keyedFrom": 1}
    return [*kept, json.dumps(head).encode() + b"\n"]


EXPORT_ATTACKS: dict[str, tuple[Callable[[list[bytes]], list[bytes]], str]] = {
    "delete a record": (
        lambda lines: [line for line in lines if b'"seq":7,"type":"record"' not in line],
        "record 7 is missing (next is 8)"),
    "truncate to an old checkpoint": (
        lambda lines: _truncated_to(lines, 10),
        "the anchor holds a checkpoint at record 15, beyond the database's last record 10"),
    "edit a checkpoint's time": (
        lambda lines: _edit_line(lines, 10, "checkpoint", b'"createdAt":"20', b'"createdAt":"19'),
        "the checkpoint at record 10 has an invalid signature"),
    "delete one checkpoint": (
        lambda lines: [line for line in lines
                       if not (b'"type":"checkpoint"' in line and b'"seq":10,' in line)],
        "the checkpoint at record 15 does not follow the checkpoint before it"),
    "swap two records": (
        lambda lines: [*lines[:3], lines[4], lines[3], *lines[5:]],
        "record 3 appears twice, behind a checkpoint"),
}  # fmt: skip


def test_an_export_verifies_elsewhere_with_the_public_key_and_the_anchor_alone(
    longer: Kms, tmp_path: Any
) -> None:
    import asyncio
    import shutil

    from coffer.bootstrap import verify_audit

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    lines = exported(longer, elsewhere / "export.jsonl")
    assert json.loads(lines[0])["type"] == "export"
    assert json.loads(lines[-1]) == {"type": "head", "seq": 22, "keyedFrom": 1,
                                     "link": json.loads(lines[-2])["link"]}  # fmt: skip
    shutil.copy(longer.settings.anchor_path, elsewhere / "anchor.jsonl")
    pem = longer.client.get("/v1/audit/public-key", headers=longer.headers).json()["publicKey"]

    def verify(lines: list[bytes]) -> Any:
        (elsewhere / "copy.jsonl").write_bytes(b"".join(lines))
        return asyncio.run(verify_audit(None, public_key=pem.encode(),
                                        export=elsewhere / "copy.jsonl",
                                        anchor_path=elsewhere / "anchor.jsonl"))  # fmt: skip

    result = verify(lines)
    assert result.ok, result.problem
    assert (result.records, result.checkpoints, result.anchored) == (22, 4, 4)
    assert not result.links_checked
    for name, (attack, problem) in EXPORT_ATTACKS.items():
        assert problem in (verify(attack(lines)).problem or ""), name

    # The anchor goes on after the export: later checkpoints are not the export's to hold, and
    # verify says how many there are (an older copy and a cut one look the same).
    for _ in range(5):
        longer.post(f"{KEYS}/k/encrypt", {"plaintext": "AA=="})
    shutil.copy(longer.settings.anchor_path, elsewhere / "anchor.jsonl")
    later = verify(lines)
    assert later.ok, later.problem
    assert (later.beyond, later.beyond_seq) == (1, 25)

    # Cut back and dated before its own checkpoints, to hide the anchor's: refused.
    cut = _truncated_to(lines, 10)
    cut[0] = cut[0].replace(b'"exportedAt":"2026', b'"exportedAt":"1970')
    assert "before its own newest checkpoint" in (verify(cut).problem or "")
    # Dated between checkpoints 10 and 15: passes, and says the anchor holds 3 beyond it.
    cut = _truncated_to(lines, 10)
    checkpoint_10 = json.loads(next(line for line in cut if b'"type":"checkpoint"' in line
                                    and b'"seq":10,' in line))["checkpoint"]["createdAt"]  # fmt: skip
    cut[0] = json.dumps({"type": "export", "format": "coffer-audit-export/1",
                         "exportedAt": checkpoint_10}).encode() + b"\n"  # fmt: skip
    shown = verify(cut)
    assert shown.ok, shown.problem
    assert (shown.beyond, shown.beyond_seq, shown.last_seq) == (3, 25, 10)
    # Without its head line, a cut export still fails (it is dated); without its first line
    # too (it then reads as a sink's copy), the anchor's checkpoints beyond it are counted.
    headless = [line for line in lines if b'"type":"head"' not in line][:-5]
    assert "beyond the database's last record" in (verify(headless).problem or "")
    undated = verify(headless[1:])
    assert undated.ok, undated.problem
    assert undated.beyond >= 1


def test_a_fabricated_export_claiming_unkeyed_links_is_refused(longer: Kms, tmp_path: Any) -> None:
    """Records linked with plain SHA-256 (as before keyed links), a head saying so, dated long
    ago so that no anchor checkpoint is its to hold: no signed checkpoint, no verification; and
    with checkpoints taken from a real export, the installation's own first keyed record (not
    the copy's) decides how links are checked."""
    import asyncio
    import hashlib

    from coffer.audit.chain import canonical
    from coffer.bootstrap import verify_audit

    prev = bytes(32)
    lines = [json.dumps({"type": "export", "format": "coffer-audit-export/1",
                         "exportedAt": "1970-01-01T00:00:00Z"}).encode()]  # fmt: skip
    real = records(longer)
    for record in real[:3]:
        record = {**record, "context": {**record["context"], "status": 999}}
        link = hashlib.sha256(prev + canonical(record)).digest()
        lines.append(json.dumps({"type": "record", "seq": record["seq"], "prev": prev.hex(),
                                 "link": link.hex(), "record": record}).encode())  # fmt: skip
        prev = link
    lines.append(json.dumps({"type": "head", "seq": 3, "link": prev.hex(),
                             "keyedFrom": None}).encode())  # fmt: skip
    (tmp_path / "forged.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    result = asyncio.run(verify_audit(longer.settings, export=tmp_path / "forged.jsonl"))
    assert result.problem == "the copy holds no signed checkpoint: nothing in it can be proven"

    genuine = exported(longer, tmp_path / "export.jsonl")
    with_checkpoints = [genuine[0], *lines[1:4], *[g for g in genuine if b'"checkpoint"' in g]]
    (tmp_path / "forged.jsonl").write_bytes(b"\n".join(x.rstrip(b"\n") for x in with_checkpoints)
                                            + b"\n")  # fmt: skip
    result = asyncio.run(verify_audit(longer.settings, export=tmp_path / "forged.jsonl"))
    assert not result.ok


def test_an_edited_export_record_is_caught_by_its_link_with_the_root_of_trust(
    longer: Kms, tmp_path: Any
) -> None:
    import asyncio

    from coffer.bootstrap import verify_audit

    lines = exported(longer, tmp_path / "export.jsonl")
    (tmp_path / "export.jsonl").write_bytes(
        b"".join(_edit_line(lines, 12, "record", b'"status":200', b'"status":403'))
    )
    result = asyncio.run(verify_audit(longer.settings, export=tmp_path / "export.jsonl"))
    assert result.problem == "record 12 was changed after it was written"
    assert result.links_checked
