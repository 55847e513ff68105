"""``coffer serve --workers 2``: two server processes behind one port, on SQLite and on
PostgreSQL. A change made through whichever worker answered is seen by every worker within the
documented bound (a polled table on SQLite, NOTIFY on PostgreSQL)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.conftest import SUITE_SECRETS
from tests.e2e.processes import ServeFactory, clean_env, free_port, http_post, run_coffer
from tests.postgres import new_schema

pytestmark = pytest.mark.slow

KEYS = "/v1/kms/nl-01/keys"
BOUND_SECONDS = 1.0
#: Concurrent requests that must all agree (enough that both workers answer some).
BURST = 32


def workers_of(pid: int) -> list[int]:
    """Worker processes uvicorn spawned for ``pid`` (not its resource tracker)."""
    children = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid and b"spawn_main" in cmdline:
            children.append(int(entry.name))
    return children


def _cmdline(process: Path) -> bytes:
    """The arguments after the program (``coffer``), NUL-separated; empty if unreadable."""
    try:
        parts = (process / "cmdline").read_bytes().split(b"\0")
    except OSError:
        return b""
    found = [i for i, part in enumerate(parts) if part.endswith(b"/coffer")]
    return b"\0".join(parts[found[0] + 1 :]) if found else b""


def all_agree(check: Callable[[], bool], bound: float) -> float:
    """Seconds until a burst of concurrent requests (new connections, which both workers
    accept) all pass ``check``; fails past ``bound``."""
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=BURST) as pool:
        while not all(pool.map(lambda _: check(), range(BURST))):
            assert time.monotonic() - started < bound, "the workers did not agree in time"
            time.sleep(0.01)
    return time.monotonic() - started


@pytest.mark.parametrize("engine", ["sqlite", "postgresql"])
def test_two_workers_behind_one_port_agree_on_every_change(
    engine: str, tmp_path: Path, serve: ServeFactory, request: pytest.FixtureRequest
) -> None:
    env: dict[str, str] = {}
    if engine == "postgresql":
        cluster_url, _ = request.getfixturevalue("postgres_cluster")
        env["COFFER_DATABASE_URL"] = new_schema(cluster_url)
    data_dir = tmp_path / "data"
    boot = json.loads(run_coffer("init", "--data-dir", data_dir, "--output", "json",
                                 env=clean_env(**env)).stdout)  # fmt: skip
    SUITE_SECRETS.add(boot["token"])
    port = free_port()
    serve("--data-dir", data_dir, "--port", str(port), "--workers", "2", port=port, env=env)
    (server,) = [
        int(p.name) for p in Path("/proc").iterdir()
        if p.name.isdigit() and _cmdline(p).startswith(b"serve") and str(data_dir).encode() in _cmdline(p)
    ]  # fmt: skip
    assert len(workers_of(server)) == 2
    headers = {"Authorization": f"Bearer {boot['token']}", "X-Organisation-Identity": "default"}
    status, _ = http_post(port, KEYS, {"name": "k", "keyType": "aes256-gcm96"}, headers)
    assert status == 201

    def version() -> str:
        status, body = http_post(port, f"{KEYS}/k/encrypt", {"plaintext": "AA=="}, headers)
        return str(body["keyVersion"]) if status == 200 else str(status)

    all_agree(lambda: version() == "1", BOUND_SECONDS)  # both workers have the key cached
    assert http_post(port, f"{KEYS}/k/rotate", {}, headers)[0] == 200
    all_agree(lambda: version() == "2", BOUND_SECONDS)
    assert http_post(port, f"{KEYS}/k/disable", {}, headers)[0] == 200
    all_agree(lambda: version() == "400", BOUND_SECONDS)
