"""``bench/run.py --smoke``: the benchmark harness of ``make bench`` still runs end to end (Coffer
with 1 and 2 workers, the floor servers, moto, OpenBao, every workload) and prints its table. About a
second per workload on a few thousand keys: a check that the harness works, not a measurement;
nothing here asserts a speed."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.sqlite_only]  # the benchmark's set-up is SQLite

BENCH = Path(__file__).resolve().parents[2] / "bench"

#: Every row of the table, and the worker counts it must have.
ROWS = {
    "floor: empty JSON POST": {1, 2},
    "bare floor: ASGI callable, empty JSON POST": {1, 2},
    "moto: Encrypt": {1},
    "OpenBao Transit: encrypt": {1},
    "encrypt": {1, 2},
    "decrypt": {1, 2},
    "sign ecdsa-p256": {1, 2},
    "sign ed25519": {1, 2},
    "sign rsa-2048": {1, 2},
    "hmac": {1, 2},
    "get key": {1, 2},
    "create key (aes256)": {1, 2},
    "encrypt, 200 keys": {1, 2},
    "encrypt, metrics off": {1, 2},
    "encrypt, audit discarded": {1, 2},
    "encrypt, 1,000 keys": {1},
    "encrypt, 200 keys of a 2,000-key database": {1},
    "encrypt, all 2,000 keys (cache_size 100)": {1},
}


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed")
def test_the_benchmark_runs_every_workload_and_prints_its_table() -> None:
    done = subprocess.run(
        [sys.executable, "run.py", "--smoke"],
        cwd=BENCH,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    header = (
        "| operation | workers | rps | p50 ms | p99 ms | vs floor | vs bare floor | vs moto "
        "| vs OpenBao | server RSS MiB |"
    )
    assert header in lines
    seen: dict[str, set[int]] = {}
    for line in lines[lines.index(header) + 2 :]:
        if not line.startswith("| "):
            break
        operation, workers, rps, p50, p99, vs_floor, vs_bare, vs_moto, vs_bao, _ = (
            cell.strip() for cell in line.strip("|").split("|")
        )
        seen.setdefault(operation, set()).add(int(workers))
        assert float(rps.replace(",", "")) > 0, line
        assert float(p99) >= float(p50) > 0, line
        if operation.startswith(("moto", "OpenBao", "bare")):
            continue
        assert re.fullmatch(r"\d+%", vs_bare), line
        if operation.startswith("floor"):
            continue
        assert re.fullmatch(r"\d+%", vs_floor), line
        if operation.startswith("encrypt"):
            assert re.fullmatch(r"[\d.]+×", vs_moto), line
            assert re.fullmatch(r"[\d.]+×", vs_bao), line
    assert seen == ROWS
    # The targets, each with its measured figure, and the memory line.
    assert "| target | measured | met |" in lines
    verdicts = [line.rsplit("|", 2)[1].strip() for line in lines
                if line.startswith("| ") and (": ≥" in line or ": ≤" in line)]  # fmt: skip
    assert len(verdicts) >= 15
    assert set(verdicts) <= {"yes", "**no**", "—"}
    assert "not measured" not in done.stdout
    assert "in-process `cryptography` on one core" in done.stdout.lower()
    assert re.search(r"server RSS with 2,000 keys and cache_size = 100: \d+ MiB", done.stdout)
