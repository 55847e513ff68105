"""Encrypt throughput of `coffer serve` with the durable audit log on and with the audit sink set
to discard, on the same data directory in the same run.

    .venv/bin/python bench/audit_encrypt.py [--seconds 10] [--connections 64]

Needs `wrk`. Initialises one data directory and serves it with the default settings
(`audit_sink = "database"`: every request waits until its hash-chained record is committed with
SQLite synchronous=FULL, records of concurrent requests sharing a transaction), creates an
aes256-gcm96 key and drives `POST .../encrypt` of 64 bytes (2 s warm-up, then the measurement);
prints the rows of audit_events and `coffer audit verify`. Then serves the same directory with a
config file `audit_sink = "discard"` and measures the same. Prints rps, p50, p99 and audit/discard.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import tempfile
import time
from pathlib import Path

from harness import COFFER, free_port, lua, request, wrk


def serve(cmd: list, port: int, log: Path) -> subprocess.Popen | None:
    """Start a server; None if it exited before answering /healthz."""
    with log.open("w") as err:
        proc = subprocess.Popen([*cmd, "--port", str(port)], stdout=subprocess.DEVNULL, stderr=err)
    for _ in range(200):
        if proc.poll() is not None:
            return None
        try:
            request(f"http://127.0.0.1:{port}/healthz", {})
            return proc
        except OSError:
            time.sleep(0.05)
    proc.terminate()
    raise SystemExit(f"server did not answer on port {port}:\n{log.read_text()}")


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()  # graceful: the audit log commits what is queued and signs a checkpoint
    if proc.wait(timeout=30) not in (0, -signal.SIGTERM):  # uvicorn re-raises SIGTERM at exit
        raise SystemExit(f"server exited with {proc.returncode}")


def audit_rows(db: Path) -> tuple[int, int]:
    with sqlite3.connect(db) as conn:
        records = conn.execute("SELECT count(*) FROM audit_events").fetchone()[0]
        checkpoints = conn.execute("SELECT count(*) FROM audit_checkpoints").fetchone()[0]
    return records, checkpoints


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=64)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (apt-get install wrk)")

    tmp = Path(tempfile.mkdtemp(prefix="coffer-bench-"))
    data = tmp / "data"
    server = None
    try:
        init = subprocess.run(
            [COFFER, "init", "--data-dir", data, "--output", "json"],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        boot = json.loads(init.stdout)
        headers = {
            "Authorization": f"Bearer {boot['token']}",
            "X-Organisation-Identity": boot["organisation"],
            "Content-Type": "application/json",
        }
        body = json.dumps({"plaintext": base64.b64encode(os.urandom(64)).decode()})
        script = lua(tmp / "e.lua", "POST", headers, body)
        config = tmp / "discard.toml"
        config.write_text('audit_sink = "discard"\n')
        serve_cmd = [COFFER, "serve", "--data-dir", data]

        def measure(port: int) -> tuple[float, float, float]:
            url = f"http://127.0.0.1:{port}/v1/kms/nl-01/keys/bench/encrypt"
            wrk(url, script, 2, args.connections)  # warm-up
            return wrk(url, script, args.seconds, args.connections)

        port = free_port()
        server = serve(serve_cmd, port, tmp / "audit.log")
        if server is None:
            raise SystemExit((tmp / "audit.log").read_text())
        request(
            f"http://127.0.0.1:{port}/v1/kms/nl-01/keys",
            headers,
            {"name": "bench", "keyType": "aes256-gcm96"},
        )
        audited = measure(port)
        stop(server)
        records, checkpoints = audit_rows(data / "coffer.db")
        verify = subprocess.run(
            [COFFER, "audit", "verify", "--data-dir", data], capture_output=True, text=True
        )

        port = free_port()
        server = serve([*serve_cmd, "--config", config], port, tmp / "discard.log")
        if server is None:
            raise SystemExit((tmp / "discard.log").read_text())
        discarded = measure(port)
        stop(server)
        server = None
        after, _ = audit_rows(data / "coffer.db")

        print(f"wrk -t1 -c{args.connections} -d{args.seconds}s, encrypt 64 B, aes256-gcm96,")
        print("one `coffer serve` process; both runs on the same data directory, audit first")
        print(f"{'audit sink':<12}{'rps':>10}{'p50 ms':>9}{'p99 ms':>9}{'vs discard':>12}")
        for name, (rps, p50, p99) in (("database", audited), ("discard", discarded)):
            ratio = rps / discarded[0]
            print(f"{name:<12}{rps:>10,.0f}{p50:>9.2f}{p99:>9.2f}{ratio:>11.0%}")
        print(f"\naudit run: {records:,} rows in audit_events, {checkpoints} signed checkpoints")
        print("  (committed batches per transaction are not exposed: not counted)")
        print(f"  coffer audit verify: {(verify.stdout + verify.stderr).strip()}")
        print(f"discard run: {after:,} rows in audit_events after it (no new record)")
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
