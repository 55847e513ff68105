"""Two real ``coffer serve`` processes on one PostgreSQL: a change made through one node is seen
by the other on its next request (LISTEN/NOTIFY), and the background jobs run on exactly one node
at a time, with another taking over when that one dies."""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.conftest import SUITE_SECRETS
from tests.e2e.processes import (
    clean_env,
    free_port,
    http_get,
    http_post,
    run_coffer,
    start_serve,
    stop,
    wait_until_healthy,
)
from tests.postgres import new_schema

pytestmark = pytest.mark.slow

KEYS = "/v1/kms/nl-01/keys"
#: The documented bound on how long a change takes to reach another node (docs/deployment.md).
PROPAGATION_BOUND_SECONDS = 1.0


@dataclass
class Node:
    port: int
    process: subprocess.Popen[bytes]
    data_dir: Path


@pytest.fixture
def cluster(postgres_cluster: tuple[str, Path | None], tmp_path: Path) -> dict[str, Any]:
    url = new_schema(postgres_cluster[0])
    first = tmp_path / "node-a"
    boot = json.loads(
        run_coffer("init", "--data-dir", first, "--output", "json",
                   env=clean_env(COFFER_DATABASE_URL=url)).stdout
    )  # fmt: skip
    SUITE_SECRETS.add(boot["token"])
    # A second node: the same database and a copy of the root key, nothing else.
    second = tmp_path / "node-b"
    second.mkdir(mode=0o700)
    shutil.copy2(first / "root.key", second / "root.key")
    headers = {"Authorization": f"Bearer {boot['token']}", "X-Organisation-Identity": "default"}
    return {"url": url, "dirs": [first, second], "headers": headers, "tmp": tmp_path}


def start(cluster: dict[str, Any], data_dir: Path, config: str = "") -> Node:
    port = free_port()
    args: list[str | Path] = ["--data-dir", data_dir, "--port", str(port)]
    if config:
        path = cluster["tmp"] / f"coffer-{port}.toml"
        path.write_text(config)
        args += ["--config", path]
    log = cluster["tmp"] / f"serve-{port}.log"
    process = start_serve(*args, log=log, env={"COFFER_DATABASE_URL": cluster["url"]})
    wait_until_healthy(process, port, log)
    return Node(port, process, data_dir)


def until(check: Any, bound: float) -> float:
    """Seconds until ``check()`` holds; fails past ``bound``."""
    started = time.monotonic()
    while not check():
        assert time.monotonic() - started < bound, "not seen within the bound"
        time.sleep(0.005)
    return time.monotonic() - started


def test_changes_through_one_node_are_seen_by_the_other(cluster: dict[str, Any]) -> None:
    a, b = (start(cluster, d) for d in cluster["dirs"])
    headers = cluster["headers"]
    try:
        status, _ = http_post(a.port, KEYS, {"name": "k", "keyType": "aes256-gcm96"}, headers)
        assert status == 201
        status, sealed = http_post(b.port, f"{KEYS}/k/encrypt", {"plaintext": "AA=="}, headers)
        assert status == 200
        assert sealed["keyVersion"] == "1"
        delays = []
        for round_ in range(5):
            status, _ = http_post(a.port, f"{KEYS}/k/rotate", {}, headers)
            assert status == 200
            version = str(round_ + 2)
            delays.append(until(lambda v=version: http_post(
                b.port, f"{KEYS}/k/encrypt", {"plaintext": "AA=="}, headers)[1]["keyVersion"] == v,
                PROPAGATION_BOUND_SECONDS))  # fmt: skip
        status, _ = http_post(b.port, f"{KEYS}/k/disable", {}, headers)
        assert status == 200
        delays.append(until(lambda: http_post(a.port, f"{KEYS}/k/encrypt", {"plaintext": "AA=="},
                                              headers)[0] == 400, PROPAGATION_BOUND_SECONDS))  # fmt: skip
        # Access changes travel too: a token revoked through A is refused by B.
        status, _ = http_post(a.port, "/v1/iam/service-accounts", {"name": "app"}, headers)
        assert status == 201
        http_post(a.port, "/v1/iam/role-bindings",
                  {"principal": "app", "policy": "kms:ReadAccess"}, headers)  # fmt: skip
        status, issued = http_post(a.port, "/v1/iam/tokens", {"serviceAccount": "app"}, headers)
        SUITE_SECRETS.add(issued["token"])
        app = {"Authorization": f"Bearer {issued['token']}", "X-Organisation-Identity": "default"}
        assert http_get(b.port, KEYS, app)[0] == 200  # cached on B now
        deleted = _delete(a.port, f"/v1/iam/tokens/{issued['identity']}", headers)
        assert deleted == 200
        delays.append(until(lambda: http_get(b.port, KEYS, app)[0] == 401,
                            PROPAGATION_BOUND_SECONDS))  # fmt: skip
        print(f"propagation delay: median {statistics.median(delays) * 1000:.1f} ms, "
              f"max {max(delays) * 1000:.1f} ms over {len(delays)} changes")  # fmt: skip
    finally:
        stop(a.process)
        stop(b.process)


def _delete(port: int, path: str, headers: dict[str, str]) -> int:
    import http.client

    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request("DELETE", path, headers=headers)
        return connection.getresponse().status
    finally:
        connection.close()


def _lease_holder(url: str) -> int | None:
    """The pid of the ``coffer serve`` whose session holds the jobs' advisory lock."""
    with psycopg.connect(url.split("?")[0]) as connection:
        row = connection.execute(
            "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
            "WHERE l.locktype = 'advisory' AND l.granted"
        ).fetchone()
    return int(row[0].rsplit(":", 1)[1]) if row else None


def _make_due(url: str, key_identity: str) -> None:
    """Age the key by its whole rotation period (its versions and its due time)."""
    with psycopg.connect(url) as connection:
        connection.execute(
            "UPDATE key_versions SET created_at = created_at - interval '31 days' "
            "WHERE key_identity = %s",
            (key_identity,),
        )
        connection.execute(
            "UPDATE keys SET next_rotation_at = now() - interval '1 minute' WHERE identity = %s",
            (key_identity,),
        )


def _versions(port: int, headers: dict[str, str], key: str) -> int:
    status, found = http_get(port, f"{KEYS}/{key}", headers)
    assert status == 200
    latest: int = found["latestVersion"]
    return latest


def test_one_node_runs_the_jobs_and_another_takes_over(cluster: dict[str, Any]) -> None:
    config = "scheduler_interval_seconds = 0.5\nscheduler_takeover_seconds = 1\n"
    nodes = [start(cluster, d, config) for d in cluster["dirs"]]
    headers = cluster["headers"]
    try:
        until(lambda: _lease_holder(cluster["url"]) is not None, 10)
        holder = _lease_holder(cluster["url"])
        assert holder in {n.process.pid for n in nodes}
        body = {"name": "due", "keyType": "aes256-gcm96", "keyRotationEnabled": True,
                "rotationPeriodInDays": 30}  # fmt: skip
        status, key = http_post(nodes[0].port, KEYS, body, headers)
        assert status == 201
        _make_due(cluster["url"], key["identity"])
        until(lambda: _versions(nodes[1].port, headers, "due") == 2, 10)
        time.sleep(2)  # several more passes of both schedulers: still exactly one rotation
        assert _versions(nodes[0].port, headers, "due") == 2
        with psycopg.connect(cluster["url"]) as connection:
            (rotations,) = connection.execute(
                "SELECT count(*) FROM audit_events WHERE action = 'kms.rotate.scheduled'"
            ).fetchone() or (0,)
        assert rotations == 1

        # The holder dies without a word; the other node takes the lease and runs the jobs.
        dead = next(n for n in nodes if n.process.pid == holder)
        survivor = next(n for n in nodes if n is not dead)
        dead.process.kill()
        dead.process.wait()
        took = until(lambda: _lease_holder(cluster["url"]) == survivor.process.pid, 10)
        _make_due(cluster["url"], key["identity"])
        until(lambda: _versions(survivor.port, headers, "due") == 3, 10)
        print(f"take-over: the survivor held the lease {took:.2f} s after the holder died")
    finally:
        for node in nodes:
            stop(node.process)


def test_a_second_init_on_the_same_database_refuses_and_changes_nothing(
    cluster: dict[str, Any],
) -> None:
    again = run_coffer("init", "--data-dir", cluster["tmp"] / "node-c",
                       env=clean_env(COFFER_DATABASE_URL=cluster["url"]))  # fmt: skip
    assert again.returncode == 1
    assert "already holds a Coffer" in again.stderr
    assert not (cluster["tmp"] / "node-c").exists()
    with psycopg.connect(cluster["url"]) as connection:
        (organisations,) = connection.execute("SELECT count(*) FROM organisations").fetchone() or (
            0,
        )
    assert organisations == 1
