"""What the server's log holds under hostile or failing conditions: no traceback for a client
that walks away mid-upload, and one traceback (not one per request) while every write fails."""

from __future__ import annotations

import json
import socket
import sqlite3
import time
from pathlib import Path

import pytest

from tests.e2e.processes import ServeFactory, free_port, http_post, run_coffer

pytestmark = [pytest.mark.slow, pytest.mark.sqlite_only]  # the failure is made in SQLite's file


def test_aborted_uploads_and_a_failing_disk_do_not_flood_the_log(
    tmp_path: Path, serve: ServeFactory
) -> None:
    data_dir = tmp_path / "data"
    init = run_coffer("init", "--data-dir", data_dir, "--output", "json")
    assert init.returncode == 0, init.stderr
    boot = json.loads(init.stdout)
    port = free_port()
    serve("--data-dir", data_dir, "--port", str(port), port=port)
    log = tmp_path / f"serve-{port}.log"
    headers = {"Authorization": f"Bearer {boot['token']}", "X-Organisation-Identity": "default"}
    assert http_post(port, "/v1/kms/nl-01/keys", {"name": "k", "keyType": "aes256-gcm96"},
                     headers)[0] == 201  # fmt: skip

    for _ in range(20):  # uploads abandoned half way, without a token
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall(b"POST /v1/kms/nl-01/keys HTTP/1.1\r\nHost: x\r\n"
                         b"Content-Length: 100000\r\n\r\n{" + b"a" * 5000)  # fmt: skip
            time.sleep(0.02)
    time.sleep(0.3)
    assert "Traceback" not in log.read_text()

    # Every audit write now fails, as on a full disk: each request answers 503, and the log
    # holds one line per request and a traceback or two, not several per request.
    database = sqlite3.connect(data_dir / "coffer.db")
    database.execute("CREATE TRIGGER refuse BEFORE INSERT ON audit_events "
                     "BEGIN SELECT RAISE(ABORT, 'disk full'); END")  # fmt: skip
    database.commit()
    database.close()
    before = len(log.read_bytes())
    statuses = [http_post(port, "/v1/kms/nl-01/keys/k/encrypt", {"plaintext": "AA=="},
                          headers)[0] for _ in range(300)]  # fmt: skip
    assert set(statuses) == {503}
    text = log.read_bytes()[before:].decode()
    grown = len(text)
    print(f"\n300 failing requests: {grown:,} bytes of log, {text.count('Traceback')} tracebacks")
    assert text.count("Traceback") <= 4
    assert grown < 300 * 1000
