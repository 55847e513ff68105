"""What was acknowledged survives ``kill -9`` of the server."""

from __future__ import annotations

import base64
import json
import signal
from pathlib import Path

import pytest

from tests.e2e.processes import (
    free_port,
    http_get,
    http_post,
    run_coffer,
    start_serve,
    stop,
    wait_until_healthy,
)

pytestmark = pytest.mark.slow


def test_keys_acknowledged_before_kill_9_are_there_after_restart(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    init = run_coffer("init", "--data-dir", data_dir, "--output", "json")
    assert init.returncode == 0, init.stderr
    boot = json.loads(init.stdout)
    headers = {
        "Authorization": f"Bearer {boot['token']}",
        "X-Organisation-Identity": boot["organisation"],
    }
    port = free_port()
    args = ("--data-dir", data_dir, "--port", str(port))

    process = start_serve(*args, log=tmp_path / "first.log")
    try:
        wait_until_healthy(process, port, tmp_path / "first.log")
        created = []
        for i in range(20):
            status, key = http_post(
                port, "/v1/kms/nl-01/keys", {"name": f"k{i}", "keyType": "aes256-gcm96"}, headers
            )
            assert status == 201, key
            created.append(key["identity"])
        status, sealed = http_post(
            port,
            "/v1/kms/nl-01/keys/k19/encrypt",
            {"plaintext": base64.b64encode(b"survives").decode()},
            headers,
        )
        assert status == 200
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
    finally:
        stop(process)

    process = start_serve(*args, log=tmp_path / "second.log")
    try:
        wait_until_healthy(process, port, tmp_path / "second.log")
        status, keys = http_get(port, "/v1/kms/nl-01/keys", headers)
        assert status == 200
        assert [k["identity"] for k in keys] == created
        status, opened = http_post(
            port, "/v1/kms/nl-01/keys/k19/decrypt", {"ciphertext": sealed["ciphertext"]}, headers
        )
        assert status == 200, opened
        assert base64.b64decode(opened["plaintext"]) == b"survives"
    finally:
        stop(process)


@pytest.mark.parametrize(("budget", "before", "after"), [(409_600, 700, 0), (50, 40, 30)])
def test_a_version_is_never_over_its_encryption_budget_after_kill_9(
    tmp_path: Path, budget: int, before: int, after: int
) -> None:
    """The count is reserved before encryptions are made: after ``kill -9`` it is at least what
    was made (at most a block more), and a small budget is met exactly across the crash."""
    data_dir = tmp_path / "data"
    init = run_coffer("init", "--data-dir", data_dir, "--output", "json")
    assert init.returncode == 0, init.stderr
    boot = json.loads(init.stdout)
    headers = {"Authorization": f"Bearer {boot['token']}",
               "X-Organisation-Identity": boot["organisation"]}  # fmt: skip
    config = tmp_path / "coffer.toml"
    config.write_text(f"encryption_budget = {budget}\n")
    port = free_port()
    args = ("--data-dir", data_dir, "--port", str(port), "--config", config)
    encrypt = ("/v1/kms/nl-01/keys/k/encrypt", {"plaintext": "Y3Jhc2g="}, headers)
    versions: list[str] = []

    process = start_serve(*args, log=tmp_path / "first.log")
    try:
        wait_until_healthy(process, port, tmp_path / "first.log")
        key = {"name": "k", "keyType": "aes256-gcm96"}
        assert http_post(port, "/v1/kms/nl-01/keys", key, headers)[0] == 201
        versions += [http_post(port, *encrypt)[1]["keyVersion"] for _ in range(before)]
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
    finally:
        stop(process)

    process = start_serve(*args, log=tmp_path / "second.log")
    try:
        wait_until_healthy(process, port, tmp_path / "second.log")
        versions += [http_post(port, *encrypt)[1]["keyVersion"] for _ in range(after)]
        status, key = http_get(port, "/v1/kms/nl-01/keys/k", headers)
        assert status == 200
        counted = {v["version"]: v["encryptions"] for v in key["versions"]}
    finally:
        stop(process)
    made = {v: versions.count(v) for v in set(versions)}
    block = max(1, min(4096, budget // 1024))
    if budget > before + after:
        assert made == {"1": before}
        assert before <= counted[1] <= before + block, "reserved before use, a block at most over"
    else:
        assert made == {"1": budget, "2": before + after - budget}
        assert counted == {1: budget, 2: before + after - budget}
