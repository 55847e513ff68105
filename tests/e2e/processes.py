"""Running ``coffer`` as a real process: a clean environment, free ports, one-shot commands,
waiting for ``serve`` to answer and stopping it again, and plain HTTP requests to it."""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

COFFER = Path(sys.executable).with_name("coffer")
STARTUP_DEADLINE_SECONDS = 20.0
STOP_TIMEOUT_SECONDS = 10.0
RUN_TIMEOUT_SECONDS = 30.0
_PROXY_VARIABLES = {"http_proxy", "https_proxy", "all_proxy", "no_proxy"}

ServeFactory = Callable[..., None]
"""The ``serve`` fixture: ``serve(*args, port=..., env=None)`` starts ``coffer serve <args>``."""


#: On a PostgreSQL run (``COFFER_TEST_DATABASE_URL``), each data directory's schema.
_DATABASES: dict[Path, str] = {}


def database_env(args: tuple[str | Path, ...], env: dict[str, str] | None = None) -> dict[str, str]:
    """On a PostgreSQL run, ``COFFER_DATABASE_URL`` of the data directory the arguments (or
    ``COFFER_DATA_DIR``) name: ``init`` and ``serve`` of one directory share one database, as an
    operator's would."""
    from tests.conftest import CREATED_SCHEMAS, TEST_DATABASE_URL
    from tests.postgres import new_schema

    argv = [str(arg) for arg in args]
    if TEST_DATABASE_URL is None:
        return {}
    if "--data-dir" in argv[:-1]:
        named = argv[argv.index("--data-dir") + 1]
    elif env is not None and env.get("COFFER_DATA_DIR"):
        named = env["COFFER_DATA_DIR"]
    else:
        return {}
    data_dir = Path(named).resolve()
    if data_dir not in _DATABASES:
        _DATABASES[data_dir] = new_schema(TEST_DATABASE_URL)
        CREATED_SCHEMAS.append(_DATABASES[data_dir].rsplit("%3D", 1)[1])
    return {"COFFER_DATABASE_URL": _DATABASES[data_dir]}


def clean_env(**extra: str) -> dict[str, str]:
    """The test's environment without proxies (curl would route 127.0.0.1 through one) and
    without ``COFFER_*`` settings a developer may have exported."""
    env = {
        name: value
        for name, value in os.environ.items()
        if name.lower() not in _PROXY_VARIABLES and not name.startswith("COFFER_")
    }
    env.update(extra)
    return env


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def run_coffer(
    *args: str | Path,
    env: dict[str, str] | None = None,
    timeout: float = RUN_TIMEOUT_SECONDS,
) -> subprocess.CompletedProcess[str]:
    """Run ``coffer`` to completion (a ``serve`` that should fail but starts is killed by the
    timeout rather than hanging the suite)."""
    env = env if env is not None else clean_env()
    if "COFFER_DATABASE_URL" not in env:
        env = {**env, **database_env(args, env)}
    return subprocess.run(
        [str(COFFER), *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        stdin=subprocess.DEVNULL,
        timeout=timeout,
        check=False,
    )


def http_get(port: int, path: str, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request("GET", path, headers=headers or {})
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def http_post(port: int, path: str, body: Any, headers: dict[str, str]) -> tuple[int, Any]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request(
            "POST",
            path,
            body=json.dumps(body),
            headers={**headers, "Content-Type": "application/json"},
        )
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def start_serve(
    *args: str | Path, log: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start ``coffer serve <args>`` (with ``env`` added to a clean environment), its stdout and
    stderr going to ``log``."""
    with log.open("wb") as sink:
        return subprocess.Popen(
            [str(COFFER), "serve", *map(str, args)],
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
            env=clean_env(**{**database_env(args, env), **(env or {})}),
        )


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=STOP_TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def wait_until_healthy(process: subprocess.Popen[bytes], port: int, log: Path) -> None:
    """Poll ``GET /healthz`` until it answers ``{"status": "ok"}``; fail with the server's output
    (``log``) if the process exits or the deadline passes first."""
    deadline = time.monotonic() + STARTUP_DEADLINE_SECONDS
    last_error = "no attempt"
    while time.monotonic() < deadline:
        code = process.poll()
        if code is not None:
            pytest.fail(
                f"coffer serve exited with status {code} before answering /healthz:\n"
                f"{log.read_text(errors='replace')}"
            )
        try:
            status, body = http_get(port, "/healthz")
            if status == 200 and body == {"status": "ok"}:
                return
            last_error = f"HTTP {status}: {body!r}"
        except (OSError, ValueError) as exc:
            last_error = repr(exc)
        time.sleep(0.05)
    pytest.fail(
        f"coffer serve did not answer /healthz within {STARTUP_DEADLINE_SECONDS:.0f} s "
        f"(last attempt: {last_error}); its output:\n{log.read_text(errors='replace')}"
    )


def open_database(data_dir: Path) -> Any:
    """A SQLAlchemy engine on the database of ``data_dir``: its SQLite file, or on a PostgreSQL
    run the schema its ``init`` used."""
    from coffer.config import Settings
    from coffer.storage.database import create_sync_engine_for

    url = _DATABASES.get(data_dir.resolve())
    return create_sync_engine_for(Settings(data_dir=data_dir, database_url=url).url)
