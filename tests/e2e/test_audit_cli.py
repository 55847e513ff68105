"""``coffer audit list`` and ``coffer audit export`` against a running server."""

from __future__ import annotations

import json
import time
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


def test_an_export_and_a_sink_copy_verify_on_another_machine_with_the_public_key_alone(
    tmp_path: Path, serve: ServeFactory
) -> None:
    """A real server (its writer process) with a required file sink and an optional HTTP sink
    that comes up late; then only the export, the anchor and the public key are copied to a new
    directory, and verified there: no data directory, no database, no root of trust."""
    from tests.api.test_audit_sinks import Collector

    data_dir = tmp_path / "data"
    init = run_coffer("init", "--data-dir", data_dir, "--output", "json")
    assert init.returncode == 0, init.stderr
    boot = json.loads(init.stdout)
    collector = Collector(free_port())
    sink_file = tmp_path / "sink" / "audit.jsonl"
    config = tmp_path / "coffer.toml"
    config.write_text(
        "audit_checkpoint_every = 4\n"
        f'[[audit_sinks]]\nname = "file"\ntype = "file"\npath = "{sink_file}"\nrequired = true\n'
        f'[[audit_sinks]]\nname = "siem"\ntype = "http"\nurl = "{collector.url}"\n'
        'token_env = "SIEM_TOKEN"\ntimeout_seconds = 1\n'
    )
    port = free_port()
    serve("--data-dir", data_dir, "--port", str(port), "--config", config, port=port,
          env={"SIEM_TOKEN": collector.token})  # fmt: skip
    headers = {"Authorization": f"Bearer {boot['token']}", "X-Organisation-Identity": "default"}
    key = {"name": "k", "keyType": "aes256-gcm96"}
    assert http_post(port, "/v1/kms/nl-01/keys", key, headers)[0] == 201
    for _ in range(9):
        answer = http_post(port, "/v1/kms/nl-01/keys/k/encrypt", {"plaintext": "AA=="}, headers)
        assert answer[0] == 200
    collector.start()
    try:
        env = clean_env(COFFER_URL=f"http://127.0.0.1:{port}", COFFER_TOKEN=boot["token"])
        pem = run_coffer("audit", "public-key", env=env)
        assert pem.returncode == 0, pem.stderr
        exported = run_coffer("audit", "export", "--data-dir", data_dir)
        assert exported.returncode == 0, exported.stderr

        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        (elsewhere / "audit.pem").write_text(pem.stdout)
        (elsewhere / "export.jsonl").write_text(exported.stdout)
        (elsewhere / "anchor.jsonl").write_bytes((data_dir / "audit-anchor.jsonl").read_bytes())
        (elsewhere / "sink.jsonl").write_bytes(sink_file.read_bytes())

        def verify(copy: str) -> tuple[int, str]:
            done = run_coffer("audit", "verify", "--export", elsewhere / copy, "--public-key",
                              elsewhere / "audit.pem", "--anchor", elsewhere / "anchor.jsonl")  # fmt: skip
            return done.returncode, done.stdout + done.stderr

        assert verify("export.jsonl") == (
            0,
            "audit chain intact (links not checked: public key only): 10 record(s) up to 10, "
            "2 signed checkpoint(s), 2 in the anchor\n"
            "note: the last 2 record(s) of the copy come after its newest signed checkpoint: "
            "only the links prove them (with the root of trust)\n",
        )
        assert verify("sink.jsonl")[0] == 0, verify("sink.jsonl")[1]

        # An edited export: one record gone.
        lines = exported.stdout.splitlines(keepends=True)
        (elsewhere / "cut.jsonl").write_text("".join(line for line in lines
                                                     if '"seq":6,"type":"record"' not in line))  # fmt: skip
        code, said = verify("cut.jsonl")
        assert code == 1
        assert "record 6 is missing (next is 7)" in said

        # With the root of trust, the sink's copy is checked link by link.
        full = run_coffer("audit", "verify", "--data-dir", data_dir, "--export", sink_file)
        assert full.returncode == 0, full.stderr
        assert full.stdout.startswith("audit chain intact: 10 record(s)")

        # The optional sink, up late, got every record, in order.
        deadline = time.monotonic() + 20
        while len([ln for ln in collector.lines() if b'"type":"record"' in ln]) < 10:
            assert time.monotonic() < deadline, "the optional sink did not catch up"
            time.sleep(0.1)
        seqs = [json.loads(ln)["seq"] for ln in collector.lines() if b'"type":"record"' in ln]
        assert seqs == list(range(1, 11))
    finally:
        collector.stop()
