"""``coffer serve`` runs its background jobs: a scheduler pass signs an audit checkpoint of the
chain as it stands, without waiting for the next thousand records."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from sqlalchemy import text

from tests.e2e.processes import ServeFactory, free_port, http_post, open_database, run_coffer

pytestmark = pytest.mark.slow


def checkpoints(data_dir: Path) -> list[int]:
    engine = open_database(data_dir)
    try:
        with engine.connect() as connection:
            return [row[0] for row in connection.execute(text("SELECT seq FROM audit_checkpoints"))]
    finally:
        engine.dispose()


def test_the_server_runs_the_scheduler(tmp_path: Path, serve: ServeFactory) -> None:
    data_dir = tmp_path / "data"
    boot = json.loads(run_coffer("init", "--data-dir", data_dir, "--output", "json").stdout)
    config = tmp_path / "coffer.toml"
    config.write_text("scheduler_interval_seconds = 0.5\n")
    port = free_port()
    serve("--data-dir", data_dir, "--port", str(port), "--config", config, port=port)
    headers = {"Authorization": f"Bearer {boot['token']}", "X-Organisation-Identity": "default"}
    status, _ = http_post(port, "/v1/kms/nl-01/keys", {"name": "k", "keyType": "hmac"}, headers)
    assert status == 201
    deadline = time.monotonic() + 10
    while 1 not in checkpoints(data_dir):
        assert time.monotonic() < deadline, "no scheduler pass signed a checkpoint"
        time.sleep(0.2)
