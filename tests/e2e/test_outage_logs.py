"""What the server's log says of a PostgreSQL outage: one line when the database goes, one when
it is back (with how long and how many requests failed), no traceback, and nothing per request;
and with ``--log-format json`` every line of every process is a JSON object."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import SUITE_SECRETS
from tests.e2e.processes import (
    ServeFactory,
    clean_env,
    free_port,
    http_get,
    http_post,
    run_coffer,
)
from tests.postgres import new_schema, pg_ctl, private_cluster

pytestmark = pytest.mark.slow

OUTAGE_SECONDS = 5.0
#: The most lines the whole outage may add to the log.
MAX_OUTAGE_LINES = 10


@pytest.fixture
def restartable() -> Iterator[tuple[str, Path]]:
    """A cluster of this test's own: it is stopped and started again."""
    with private_cluster() as cluster:
        yield cluster


def _request(port: int, headers: dict[str, str], n: int) -> int:
    try:
        if n % 2:
            return http_get(port, "/readyz")[0]
        return http_post(port, "/v1/kms/nl-01/keys/k/hmac", {"input": "AA=="}, headers)[0]
    except OSError:
        return 0


def test_a_postgresql_outage_logs_one_line_down_and_one_back(
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
    log = tmp_path / f"serve-{port}.log"
    headers = {"Authorization": f"Bearer {boot['token']}", "X-Organisation-Identity": "default"}
    assert http_post(port, "/v1/kms/nl-01/keys", {"name": "k", "keyType": "hmac"},
                     headers)[0] == 201  # fmt: skip
    time.sleep(0.5)
    before = len(log.read_bytes())

    pg_ctl(data, "-m", "fast", "-w", "stop")
    statuses: list[int] = []
    stopped = time.monotonic()
    while time.monotonic() - stopped < OUTAGE_SECONDS:
        statuses.append(_request(port, headers, len(statuses)))
        time.sleep(0.5)
    options = f"-p {cluster_url.rsplit(':', 1)[1].split('/')[0]} -k {data.parent} " \
              "-c listen_addresses=127.0.0.1 -c max_connections=200"  # fmt: skip
    pg_ctl(data, "-l", str(data.parent / "log"), "-w", "-o", options, "start")
    deadline = time.monotonic() + 15
    recovered = 0
    while recovered < 4:  # both kinds of request, twice
        assert time.monotonic() < deadline, f"requests did not recover: {statuses}"
        statuses.append(_request(port, headers, len(statuses)))
        recovered = recovered + 1 if statuses[-1] == 200 else 0
        time.sleep(0.1)
    time.sleep(1.5)  # the change listener's reconnection, and anything else late
    text = log.read_bytes()[before:].decode()

    print(f"\n{statuses.count(503)} of {len(statuses)} requests answered 503; the log gained "
          f"{len(text.splitlines())} line(s):\n{text}")  # fmt: skip
    assert 503 in statuses, "the outage was not seen"
    assert set(statuses) <= {200, 503}, statuses
    assert len(text.splitlines()) <= MAX_OUTAGE_LINES
    assert "Traceback" not in text
    down = re.findall(r"ERROR coffer\.dependencies: database is down: (\w+)", text)
    assert len(down) == 1, text
    back = re.findall(r"INFO coffer\.dependencies: database is back after [\d.]+ s "
                      r"\((\d+) request\(s\) failed\)", text)  # fmt: skip
    assert len(back) == 1, text
    assert int(back[0]) >= 1


@pytest.mark.parametrize("workers", ["1", "2"])
def test_json_log_lines_are_json_objects_and_the_access_log_holds_no_secret(
    tmp_path: Path, serve: ServeFactory, workers: str
) -> None:
    data_dir = tmp_path / "data"
    init = run_coffer("init", "--data-dir", data_dir, "--output", "json")
    assert init.returncode == 0, init.stderr
    boot = json.loads(init.stdout)
    SUITE_SECRETS.add(boot["token"])
    port = free_port()
    # One worker: the option; several: the environment variable (each worker reads it).
    if workers == "1":
        serve("--data-dir", data_dir, "--port", str(port), "--access-log", "--log-format",
              "json", port=port)  # fmt: skip
    else:
        serve("--data-dir", data_dir, "--port", str(port), "--access-log", "--workers", workers,
              port=port, env={"COFFER_LOG_FORMAT": "json"})  # fmt: skip
    headers = {"Authorization": f"Bearer {boot['token']}", "X-Organisation-Identity": "default"}
    secret = "coffer_" + "x" * 40
    for _ in range(3):
        status, _ = http_get(port, f"/v1/kms/summary?access_token={secret}", headers)
        assert status == 200
    status, _ = http_post(port, "/v1/kms/nl-01/keys", {"name": "k", "keyType": "hmac"}, headers)
    assert status == 201  # the audit writer process at work
    time.sleep(0.5)

    lines = (tmp_path / f"serve-{port}.log").read_text().splitlines()
    entries = [json.loads(line) for line in lines]  # every line: one object
    assert entries
    for entry in entries:
        assert {"time", "level", "logger", "message"} <= entry.keys()
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", entry["time"])
    loggers = {entry["logger"] for entry in entries}
    assert {"uvicorn.error", "uvicorn.access"} <= loggers
    access = [e["message"] for e in entries if e["logger"] == "uvicorn.access"]
    assert sum('"GET /v1/kms/summary?… HTTP/1.1" 200' in line for line in access) == 3
    text = "\n".join(lines)
    assert secret not in text
    assert "access_token" not in text
    assert boot["token"] not in text
    assert "Bearer" not in text
