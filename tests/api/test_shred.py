"""Crypto-shredding an organisation: its KEK is destroyed, every key of it is gone at once (404,
its material undecryptable), every other organisation is untouched, one audit record."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from sqlalchemy import select

from coffer.crypto.root import SoftwareCipher, open_blob
from coffer.crypto.wrapping import Wrapper, kek_aad, key_version_aad
from coffer.storage import schema
from tests.api.test_access import error
from tests.api.test_iam import as_org, new_org, ok
from tests.conftest import Kms, sync_engine
from tests.e2e.test_no_raw_key_material import data_files, findings

KEYS = "/v1/kms/nl-01/keys"


def tenant(kms: Kms, name: str) -> dict[str, Any]:
    """An organisation with a key of two kinds, and what they sealed and signed."""
    org = new_org(kms, name)
    headers = as_org(kms, org["identity"])
    ok(kms.post("/v1/iam/role-bindings", {"principal": kms.boot.principal.identity,
                                           "policy": "kms:FullAccess"}, headers=headers), 201)  # fmt: skip
    data = ok(kms.post(KEYS, {"name": "data", "keyType": "aes256-gcm96"}, headers=headers), 201)
    ok(kms.post(KEYS, {"name": "signer", "keyType": "ecdsa-p256"}, headers=headers), 201)
    sealed = ok(kms.post(f"{KEYS}/data/encrypt", {"plaintext": "c2VjcmV0"}, headers=headers))
    signed = ok(kms.post(f"{KEYS}/signer/sign", {"input": "c2VjcmV0"}, headers=headers))
    return {**org, "headers": headers, "data": data, "ciphertext": sealed["ciphertext"],
            "signature": signed["signature"]}  # fmt: skip


def stored(kms: Kms, table: Any, *where: Any) -> list[Any]:
    engine = sync_engine(kms.settings)
    with engine.connect() as conn:
        rows = conn.execute(select(table).where(*where)).all()
    engine.dispose()
    return rows


def test_shredding_destroys_every_key_of_one_organisation_and_no_other(kms: Kms) -> None:
    doomed, kept = tenant(kms, "Doomed"), tenant(kms, "Kept")
    kek_blob = kms.run(kms.services.store.wrapped_kek, doomed["identity"])
    version_blob = kms.run(kms.services.store.wrapped_version, doomed["data"]["identity"], 1)
    assert kek_blob is not None
    assert version_blob is not None
    kek = kms.run(kms.services.root.unwrap, kek_blob, kek_aad(doomed["identity"]))

    error(kms.post(f"/v1/organisations/{doomed['slug']}/shred", {"confirm": "kept"}), 400,
          "invalid_request")  # fmt: skip
    shredded = ok(kms.post(f"/v1/organisations/{doomed['slug']}/shred",
                           {"confirm": doomed["slug"]}))  # fmt: skip
    assert shredded["identity"] == doomed["identity"]
    assert shredded["shreddedAt"]

    # Its keys are gone: every way to reach them answers 404; nothing can be made any more.
    headers = doomed["headers"]
    error(kms.get(f"{KEYS}/data", headers=headers), 404, "key_not_found")
    error(kms.post(f"{KEYS}/data/decrypt", {"ciphertext": doomed["ciphertext"]}, headers=headers),
          404, "key_not_found")  # fmt: skip
    error(kms.post(f"{KEYS}/signer/verify", {"input": "c2VjcmV0", "signature": doomed["signature"]},
                   headers=headers), 404, "key_not_found")  # fmt: skip
    assert kms.get(KEYS, headers=headers).json() == []
    error(kms.post(KEYS, {"name": "again", "keyType": "aes256-gcm96"}, headers=headers), 400,
          "organisation_shredded")  # fmt: skip
    error(kms.post(f"/v1/organisations/{doomed['slug']}/shred", {"confirm": doomed["slug"]}), 409,
          "conflict")  # fmt: skip

    # Nothing stored opens it: the KEK row is gone with the keys; a copy of the version blob
    # taken before needs the destroyed KEK (here only because the test kept it).
    assert stored(kms, schema.organisation_keks,
                  schema.organisation_keks.c.organisation_identity == doomed["identity"]) == []  # fmt: skip
    assert stored(kms, schema.keys, schema.keys.c.organisation_identity == doomed["identity"]) == []
    assert kms.run(kms.services.store.wrapped_kek, doomed["identity"]) is None
    aad = key_version_aad(doomed["identity"], doomed["data"]["identity"], 1, "aes256-gcm96")
    assert len(Wrapper(kek).unwrap(version_blob, aad)) == 32
    root = SoftwareCipher(kms.settings.root_key_path.read_bytes())
    assert len(open_blob(root, kek_blob, kek_aad(doomed["identity"]))) == 32  # a backup's copy

    # The other organisation's keys all work, from cold.
    kms.services.keyring.clear()
    opened = ok(kms.post(f"{KEYS}/data/decrypt", {"ciphertext": kept["ciphertext"]},
                         headers=kept["headers"]))  # fmt: skip
    assert opened["plaintext"] == "c2VjcmV0"
    verified = ok(kms.post(f"{KEYS}/signer/verify", {"input": "c2VjcmV0",
                                                      "signature": kept["signature"]},
                           headers=kept["headers"]))  # fmt: skip
    assert verified["valid"] is True

    table = schema.audit_events
    records = stored(kms, table, table.c.action == "iam.organisation.shred")
    assert [(r.status, r.resource_identity) for r in records] == [
        (400, doomed["identity"]),
        (200, doomed["identity"]),
        (409, doomed["identity"]),
    ]


def test_only_a_platform_administrator_shreds(kms: Kms) -> None:
    doomed = tenant(kms, "Doomed")
    app = kms.add_principal("kms:FullAccess", organisation=doomed["identity"])
    error(kms.client.post(f"/v1/organisations/{doomed['identity']}/shred",
                          json={"confirm": doomed["identity"]},
                          headers={"Authorization": f"Bearer {app}"}), 403, "forbidden")  # fmt: skip
    error(kms.client.post(f"/v1/organisations/{doomed['identity']}/shred",
                          json={"confirm": doomed["identity"]}), 401, "unauthenticated")  # fmt: skip
    error(kms.post("/v1/organisations/nobody/shred", {"confirm": "nobody"}), 404, "not_found")
    assert ok(kms.get(f"{KEYS}/data", headers=doomed["headers"]))["identity"]


@pytest.mark.sqlite_only
def test_no_file_of_the_data_directory_keeps_the_shredded_kek(kms: Kms) -> None:
    doomed = tenant(kms, "Doomed")
    kek_blob = kms.run(kms.services.store.wrapped_kek, doomed["identity"])
    assert kek_blob is not None
    kek = kms.run(kms.services.root.unwrap, kek_blob, kek_aad(doomed["identity"]))
    secrets = {"KEK": kek, "wrapped KEK": kek_blob}
    files = data_files(kms.settings.data_dir)
    assert findings({"wrapped KEK": kek_blob}, files), "the search finds the blob before"
    ok(kms.post(f"/v1/organisations/{doomed['identity']}/shred", {"confirm": doomed["slug"]}))
    assert findings(secrets, data_files(kms.settings.data_dir)) == []
    assert base64.b64encode(kek).decode() not in str(secrets.keys())
