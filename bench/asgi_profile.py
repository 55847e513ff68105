"""Profile one endpoint in-process: the ASGI app called directly, no sockets.

    .venv/bin/python bench/asgi_profile.py --data-dir ./data [--requests 20000] [--profile]

Prints requests per second of the application code alone (routing, auth, crypto, encoding), the
figure to hold against the HTTP server's own cost measured with wrk.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import cProfile
import json
import os
import pstats
import shutil
import tempfile
import time
from pathlib import Path

from coffer.bootstrap import build_app, initialise
from coffer.config import Settings


async def _call(app, method: str, path: str, headers: list[tuple[bytes, bytes]], body: bytes):
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8200),
    }
    sent = False

    async def receive():
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    status = 0
    chunks = []

    async def send(message):
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    await app(scope, receive, send)
    return status, b"".join(chunks)


async def main(args: argparse.Namespace) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="coffer-bench-"))
    try:
        settings = Settings(data_dir=tmp / "data")
        boot = await initialise(settings)
        app = build_app(settings)
        headers = [
            (b"authorization", f"Bearer {boot.token}".encode()),
            (b"x-organisation-identity", boot.organisation.identity.encode()),
            (b"content-type", b"application/json"),
        ]
        async with _lifespan(app):
            create = json.dumps({"name": "bench", "keyType": "aes256-gcm96"}).encode()
            status, _ = await _call(app, "POST", "/v1/kms/nl-01/keys", headers, create)
            assert status == 201, status
            body = json.dumps({"plaintext": base64.b64encode(os.urandom(64)).decode()}).encode()
            path = "/v1/kms/nl-01/keys/bench/encrypt"
            for _ in range(500):
                await _call(app, "POST", path, headers, body)
            profiler = cProfile.Profile() if args.profile else None
            if profiler:
                profiler.enable()
            start = time.perf_counter()
            for _ in range(args.requests):
                status, _ = await _call(app, "POST", path, headers, body)
            elapsed = time.perf_counter() - start
            if profiler:
                profiler.disable()
                pstats.Stats(profiler).sort_stats("tottime").print_stats(30)
            assert status == 200, status
            print(f"encrypt in-process: {args.requests / elapsed:,.0f} requests/s")
    finally:
        shutil.rmtree(tmp)


class _lifespan:
    def __init__(self, app) -> None:
        self.app = app

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        await self.app.state.services.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--profile", action="store_true")
    asyncio.run(main(parser.parse_args()))
