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
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

COFFER = Path(sys.executable).with_name("coffer")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def request(url: str, headers: dict[str, str], body: dict[str, object] | None = None) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(
        url, data=data, headers={**headers, "Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=10) as response:
        return json.loads(response.read())


def lua(path: Path, method: str, headers: dict[str, str], body: str | None) -> Path:
    lines = [f'wrk.method = "{method}"']
    lines += [f'wrk.headers["{k}"] = "{v}"' for k, v in headers.items()]
    if body is not None:
        lines.append(f"wrk.body = [[{body}]]")
    path.write_text("\n".join(lines) + "\n")
    return path


def to_ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if match is None:
        raise SystemExit(f"cannot read wrk latency {text!r}")
    value, unit = match.groups()
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}[unit]


def wrk(url: str, script: Path, seconds: int, connections: int) -> tuple[float, float, float]:
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script), url],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    if "Non-2xx" in out:
        raise SystemExit(f"wrk saw error responses:\n{out}")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    # The latency distribution's lines start with the percentile; the thread-stats table above
    # it can hold a "…50.00%" of its own.
    p50 = to_ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    p99 = to_ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    return rps, p50, p99


def start_server(
    tmp: Path, port: int, *serve_args: str | Path
) -> tuple[subprocess.Popen[bytes], dict[str, str]]:
    """``coffer init`` a data directory in ``tmp``, serve it on ``port`` and wait until it
    answers; the server and the administrator's request headers."""
    init = subprocess.run(
        [COFFER, "init", "--data-dir", tmp / "data", "--output", "json"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    boot = json.loads(init.stdout)
    server = subprocess.Popen(
        [COFFER, "serve", "--data-dir", tmp / "data", "--port", str(port), *serve_args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    for _ in range(100):
        try:
            request(f"http://127.0.0.1:{port}/healthz", {})
            break
        except OSError:
            time.sleep(0.1)
    headers = {
        "Authorization": f"Bearer {boot['token']}",
        "X-Organisation-Identity": boot["organisation"],
    }
    return server, headers


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
