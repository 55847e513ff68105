"""``GET /metrics`` of ``coffer serve --workers 2``: whichever worker answers the scrape, the counts
are the sum over both workers, and the per-run directory that holds them is removed at stop."""

from __future__ import annotations

import http.client
import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import SUITE_SECRETS
from tests.e2e.processes import (
    clean_env,
    free_port,
    http_post,
    run_coffer,
    start_serve,
    stop,
    wait_until_healthy,
)
from tests.e2e.test_workers import _cmdline, workers_of

pytestmark = pytest.mark.slow

KEYS = "/v1/kms/nl-01/keys"
REQUESTS = 200


def encrypt_count(port: int) -> float:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request("GET", "/metrics")
        response = connection.getresponse()
        assert response.status == 200
        text = response.read().decode()
    finally:
        connection.close()
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "coffer_requests_total"
        and sample.labels == {"operation": "encrypt", "status": "200"}
    )


def metrics_dir_of(pid: int) -> Path:
    environ = (Path("/proc") / str(pid) / "environ").read_bytes().split(b"\0")
    (value,) = [v for v in environ if v.startswith(b"PROMETHEUS_MULTIPROC_DIR=")]
    return Path(value.split(b"=", 1)[1].decode())


def test_two_workers_report_the_sum_of_their_requests(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    boot = json.loads(run_coffer("init", "--data-dir", data_dir, "--output", "json").stdout)
    SUITE_SECRETS.add(boot["token"])
    port = free_port()
    log = tmp_path / "serve.log"
    directory = None
    server = start_serve(
        "--data-dir", data_dir, "--port", str(port), "--workers", "2", log=log, env=clean_env()
    )
    try:
        wait_until_healthy(server, port, log)
        (parent,) = [
            int(p.name) for p in Path("/proc").iterdir()
            if p.name.isdigit() and _cmdline(p).startswith(b"serve") and str(data_dir).encode() in _cmdline(p)
        ]  # fmt: skip
        workers = workers_of(parent)
        assert len(workers) == 2
        directory = metrics_dir_of(workers[0])
        assert directory == metrics_dir_of(workers[1])
        headers = {"Authorization": f"Bearer {boot['token']}", "X-Organisation-Identity": "default"}
        assert http_post(port, KEYS, {"name": "k", "keyType": "aes256-gcm96"}, headers)[0] == 201

        def encrypt(_: int) -> int:
            return http_post(port, f"{KEYS}/k/encrypt", {"plaintext": "AA=="}, headers)[0]

        # New connections each: both workers accept some of them.
        with ThreadPoolExecutor(max_workers=16) as pool:
            assert set(pool.map(encrypt, range(REQUESTS))) == {200}
        # Each worker keeps its own file; a scrape through either sees the sum.
        assert len(list(directory.glob("counter_*.db"))) >= 2
        for _ in range(10):
            assert encrypt_count(port) == REQUESTS
    finally:
        stop(server)
    assert directory is not None
    deadline = time.monotonic() + 5
    while directory.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not directory.exists()
