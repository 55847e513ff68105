"""PostgreSQL restarts under a light load: requests during the outage answer 503 (never 500,
never a hang), requests succeed again by themselves once it is back, and no answered request
lost its audit record."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.conftest import SUITE_SECRETS
from tests.e2e.processes import ServeFactory, clean_env, free_port, http_post, run_coffer
from tests.postgres import new_schema, pg_ctl, private_cluster

pytestmark = pytest.mark.slow

#: No request may take longer than this, outage or not (connect timeout 5 s, plus margin).
REQUEST_BOUND_SECONDS = 8.0


@pytest.fixture
def restartable() -> Iterator[tuple[str, Path]]:
    """A cluster of this test's own: it is stopped and started again."""
    with private_cluster() as cluster:
        yield cluster


def test_requests_fail_with_503_while_postgresql_is_away_and_recover(
    restartable: tuple[str, Path], tmp_path: Path, serve: ServeFactory
) -> None:
    cluster_url, data = restartable
    url = new_schema(cluster_url)
    data_dir = tmp_path / "data"
    init = run_coffer("init", "--data-dir", data_dir, "--output", "json",
                      env=clean_env(COFFER_DATABASE_URL=url))  # fmt: skip
    boot = json.loads(init.stdout)
    SUITE_SECRETS.add(boot["token"])
    port = free_port()
    serve("--data-dir", data_dir, "--port", str(port), port=port,
          env={"COFFER_DATABASE_URL": url})  # fmt: skip
    headers = {"Authorization": f"Bearer {boot['token']}", "X-Organisation-Identity": "default"}
    status, _ = http_post(port, "/v1/kms/nl-01/keys", {"name": "k", "keyType": "hmac"}, headers)
    assert status == 201

    answers: list[tuple[float, int, str | None]] = []  # (seconds taken, status, request id)
    stop_load = threading.Event()

    def load() -> None:
        while not stop_load.is_set():
            request_id = f"r{len(answers)}"
            started = time.monotonic()
            try:
                status, _ = http_post(port, "/v1/kms/nl-01/keys/k/hmac", {"input": "AA=="},
                                      {**headers, "X-Request-Id": request_id})  # fmt: skip
            except OSError:
                status = 0
            answers.append((time.monotonic() - started, status, request_id))
            time.sleep(0.02)

    worker = threading.Thread(target=load)
    worker.start()
    try:
        time.sleep(1)
        pg_ctl(data, "-m", "fast", "-w", "stop")
        time.sleep(2)
        options = f"-p {cluster_url.rsplit(':', 1)[1].split('/')[0]} -k {data.parent} " \
                  "-c listen_addresses=127.0.0.1 -c max_connections=200"  # fmt: skip
        pg_ctl(data, "-l", str(data.parent / "log"), "-w", "-o", options, "start")
        deadline = time.monotonic() + 15
        while not (answers and answers[-1][1] == 200 and len(answers) > 5):
            assert time.monotonic() < deadline, "requests did not recover"
            time.sleep(0.1)
        time.sleep(1)
    finally:
        stop_load.set()
        worker.join()

    statuses = [status for _, status, _ in answers]
    assert set(statuses) <= {200, 503}, statuses
    assert 503 in statuses, "the outage was not seen"
    assert statuses[-5:] == [200] * 5
    assert max(seconds for seconds, _, _ in answers) < REQUEST_BOUND_SECONDS
    # Nothing lost: every answered request has its audit record.
    with psycopg.connect(url) as connection:
        stored = {
            json.loads(row[0])["context"]["requestId"]
            for row in connection.execute("SELECT record FROM audit_events")
        }
    answered = {request_id for _, status, request_id in answers if status == 200}
    assert answered <= stored
    verified = run_coffer("audit", "verify", "--data-dir", data_dir,
                          env=clean_env(COFFER_DATABASE_URL=url))  # fmt: skip
    assert verified.returncode == 0, verified.stderr
    print(f"restart: {statuses.count(503)} of {len(statuses)} requests answered 503")
