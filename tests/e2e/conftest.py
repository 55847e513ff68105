"""Fixtures of the end-to-end tests: ``coffer serve`` as a real process."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.processes import ServeFactory, start_serve, stop, wait_until_healthy


@pytest.fixture
def serve(tmp_path: Path, request: pytest.FixtureRequest) -> ServeFactory:
    """Start ``coffer serve <args>`` (with ``env`` added to a clean environment) and wait until
    ``/healthz`` answers on ``port``; the process is stopped when the test ends."""

    def start(*args: str | Path, port: int, env: dict[str, str] | None = None) -> None:
        log = tmp_path / f"serve-{port}.log"
        process = start_serve(*args, log=log, env=env)
        request.addfinalizer(lambda: stop(process))
        wait_until_healthy(process, port, log)

    return start
