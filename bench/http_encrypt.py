"""Encrypt and decrypt throughput of a real `coffer serve`, against an empty endpoint of the same
server as the baseline measured in the same run.

    .venv/bin/python bench/http_encrypt.py [--seconds 10] [--connections 64]

Needs `wrk` (Debian package `wrk`). Starts its own server on a fresh data directory and a free
port, creates an aes256-gcm96 key, then drives `GET /healthz` (the baseline: HTTP server,
routing and middleware, nothing else), `POST .../encrypt` and `POST .../decrypt` with a 64-byte
plaintext, one after the other, and prints rps, p50, p99 and the ratio to the baseline.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import tempfile
from pathlib import Path

from harness import free_port, lua, request, start_server, wrk


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=64)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (apt-get install wrk)")

    tmp = Path(tempfile.mkdtemp(prefix="coffer-bench-"))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = None
    try:
        server, headers = start_server(tmp, port)
        request(f"{base}/v1/kms/nl-01/keys", headers, {"name": "bench", "keyType": "aes256-gcm96"})
        plaintext = base64.b64encode(os.urandom(64)).decode()
        keyurl = f"{base}/v1/kms/nl-01/keys/bench"
        sealed = request(f"{keyurl}/encrypt", headers, {"plaintext": plaintext})["ciphertext"]
        json_headers = {**headers, "Content-Type": "application/json"}
        cases = [
            ("GET /healthz (baseline)", f"{base}/healthz", lua(tmp / "h.lua", "GET", {}, None)),
            ("encrypt 64 B", f"{keyurl}/encrypt",
             lua(tmp / "e.lua", "POST", json_headers, json.dumps({"plaintext": plaintext}))),
            ("decrypt 64 B", f"{keyurl}/decrypt",
             lua(tmp / "d.lua", "POST", json_headers, json.dumps({"ciphertext": sealed}))),
        ]  # fmt: skip
        wrk(cases[1][1], cases[1][2], 2, args.connections)  # warm-up
        results = [
            (name, *wrk(url, script, args.seconds, args.connections)) for name, url, script in cases
        ]
        baseline = results[0][1]
        print(f"wrk -t1 -c{args.connections} -d{args.seconds}s, one `coffer serve` process")
        print(f"{'operation':<26}{'rps':>10}{'p50 ms':>9}{'p99 ms':>9}{'vs baseline':>13}")
        for name, rps, p50, p99 in results:
            print(f"{name:<26}{rps:>10,.0f}{p50:>9.2f}{p99:>9.2f}{rps / baseline:>12.0%}")
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=10)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
