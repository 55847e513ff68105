"""``coffer audit list`` and ``coffer audit export`` against a running server."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.e2e.processes import ServeFactory, clean_env, free_port, http_post, run_coffer

pytestmark = pytest.mark.slow


def test_list_and_export_read_the_audit_log_through_the_server(
    tmp_path: Path, serve: ServeFactory
) -> None:
    data_dir = tmp_path / "data"
    init = run_coffer("init", "--data-dir", data_dir, "--output", "json")
    assert init.returncode == 0, init.stderr
    boot = json.loads(init.stdout)
    port = free_port()
    serve("--data-dir", data_dir, "--port", str(port), port=port)
    headers = {"Authorization": f"Bearer {boot['token']}", "X-Organisation-Identity": "default"}
    status, key = http_post(
        port, "/v1/kms/nl-01/keys", {"name": "k", "keyType": "aes256-gcm96"}, headers
    )
    assert status == 201
    for _ in range(3):
        assert (
            http_post(port, "/v1/kms/nl-01/keys/k/encrypt", {"plaintext": "AA=="}, headers)[0]
            == 200
        )
    assert http_post(port, "/v1/kms/nl-01/keys/k/decrypt", {"ciphertext": "x"}, headers)[0] == 400

    env = clean_env(COFFER_URL=f"http://127.0.0.1:{port}", COFFER_TOKEN=boot["token"],
                    COFFER_ORG=boot["organisation"])  # fmt: skip
    listed = run_coffer("audit", "list", "--output", "json", env=env)
    assert listed.returncode == 0, listed.stderr
    records = json.loads(listed.stdout)
    assert [r["action"] for r in records] == [
        "kms.decrypt", "kms.encrypt", "kms.encrypt", "kms.encrypt", "kms.key.create",
    ]  # fmt: skip
    assert records[0]["context"]["status"] == 400
    assert all(r["resourceIdentity"] == key["identity"] for r in records)

    only = run_coffer(
        "audit", "list", "--action", "kms.encrypt", "--limit", "2", "-o", "json", env=env
    )
    assert [r["action"] for r in json.loads(only.stdout)] == ["kms.encrypt", "kms.encrypt"]

    exported = run_coffer("audit", "export", "--format", "jsonl", env=env)
    assert exported.returncode == 0, exported.stderr
    lines = exported.stdout.splitlines()
    assert [json.loads(line)["seq"] for line in lines] == sorted(r["seq"] for r in records)
    assert json.loads(lines[0])["action"] == "kms.key.create"

    text = run_coffer("audit", "list", env=env)
    assert text.returncode == 0
    assert len(text.stdout.splitlines()) == 5
    assert "kms.key.create" in text.stdout

    wrong = run_coffer("audit", "list", env=env | {"COFFER_TOKEN": "coffer_wrong"})
    assert wrong.returncode == 1
    assert "(unauthenticated, request " in wrong.stderr
