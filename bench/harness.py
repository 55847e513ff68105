"""Helpers shared by the benchmark scripts: free ports, JSON requests, wrk scripts and runs, and
starting a `coffer serve` on a fresh data directory."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
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
        raise SystemExit(f"wrk saw error responses from {url}:\n{out}")
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
