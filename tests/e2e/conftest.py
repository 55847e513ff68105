"""Fixtures of the end-to-end tests: ``coffer serve`` as a real process."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from coffer.client import Client
from tests.conftest import SUITE_SECRETS
from tests.e2e.processes import (
    ServeFactory,
    clean_env,
    free_port,
    run_coffer,
    start_serve,
    stop,
    wait_until_healthy,
)


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


@dataclass(frozen=True)
class RunningCoffer:
    """A ``coffer init`` + ``coffer serve`` shared by the tests of one module."""

    url: str
    token: str  # the platform administrator's, from init
    organisation: str
    principal: str
    data_dir: Path

    def env(self, **extra: str) -> dict[str, str]:
        """A clean environment that points the CLI and the SDK at this server."""
        return clean_env(COFFER_URL=self.url, COFFER_TOKEN=self.token,
                         COFFER_ORG=self.organisation, **extra)  # fmt: skip


@pytest.fixture(scope="module")
def coffer_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningCoffer]:
    tmp = tmp_path_factory.mktemp("coffer")
    data_dir = tmp / "data"
    done = run_coffer("init", "--data-dir", data_dir, "--output", "json")
    assert done.returncode == 0, done.stderr
    boot = json.loads(done.stdout)
    SUITE_SECRETS.add(boot["token"])
    port = free_port()
    log = tmp / "serve.log"
    process = start_serve("--data-dir", data_dir, "--port", str(port), log=log)
    try:
        wait_until_healthy(process, port, log)
        yield RunningCoffer(f"http://127.0.0.1:{port}", boot["token"], boot["organisation"],
                            boot["principal"], data_dir)  # fmt: skip
    finally:
        stop(process)


@pytest.fixture(scope="module")
def coffer_client(coffer_server: RunningCoffer) -> Iterator[Client]:
    """An SDK client of the module's server, as its platform administrator."""
    with Client(coffer_server.url, coffer_server.token,
                organisation=coffer_server.organisation) as client:  # fmt: skip
        yield client
