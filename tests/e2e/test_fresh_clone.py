"""The README, as a new user meets it: a fresh clone, `make run`, the guide's curl block as written;
and the built wheel in a new virtual environment.

Both install the runtime lock from the package index into new virtual environments (pip's cache
makes the second install quick), so they are slow and run once, in the SQLite pass."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import SUITE_SECRETS
from tests.e2e.processes import clean_env, free_port, http_get

pytestmark = [pytest.mark.slow, pytest.mark.one_engine]

ROOT = Path(__file__).resolve().parents[2]
#: Creating a virtual environment and installing the runtime lock, then starting.
SETUP_DEADLINE_SECONDS = 600


@pytest.fixture(scope="module")
def clone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The repository's committed tree, cloned as a new user would."""
    target = tmp_path_factory.mktemp("fresh") / "coffer"
    subprocess.run(["git", "clone", "--quiet", "--no-hardlinks", str(ROOT), str(target)],
                   check=True, env=clean_env())  # fmt: skip
    return target


def guide_block() -> str:
    """The README's second shell block of its set-up: the getting-started guide's four steps."""
    readme = (ROOT / "README.md").read_text()
    setup = readme[readme.index("## Set-up") : readme.index("## Giving an application access")]
    blocks = re.findall(r"```sh\n(.*?)```", setup, flags=re.DOTALL)
    assert len(blocks) == 2, "the set-up has its two commands and the guide"
    return blocks[1]


@pytest.fixture
def make_run(clone: Path, tmp_path: Path) -> Iterator[tuple[int, Path]]:
    port = free_port()
    log = tmp_path / "make-run.log"
    with log.open("wb") as out:
        process = subprocess.Popen(["make", "run", f"PORT={port}"], cwd=clone, stdout=out,
                                   stderr=subprocess.STDOUT, env=clean_env(),
                                   start_new_session=True)  # fmt: skip
    try:
        yield port, log
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def wait_healthy(port: int, log: Path) -> None:
    import time

    deadline = time.monotonic() + SETUP_DEADLINE_SECONDS
    while time.monotonic() < deadline:
        try:
            if http_get(port, "/healthz")[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.5)
    pytest.fail(f"make run did not serve within {SETUP_DEADLINE_SECONDS} s:\n{log.read_text()}")


def test_make_run_on_a_fresh_clone_serves_and_the_readmes_guide_works_as_written(
    clone: Path, make_run: tuple[int, Path]
) -> None:
    port, log = make_run
    wait_healthy(port, log)
    printed = log.read_text()
    token = re.search(r"admin token:\s+(\S+)", printed)
    org = re.search(r"organisation: (org-\S+)", printed)
    assert token is not None, printed
    assert org is not None, printed
    SUITE_SECRETS.add(token.group(1))
    assert 'export PATH="' in printed  # how to put coffer on the PATH
    # Serving needs the runtime part of the lock only: no test or lint tools in the clone's venv.
    for tool in ("pytest", "mypy", "ruff", "moto_server"):
        assert not (clone / ".venv" / "bin" / tool).exists(), tool

    block = guide_block()
    assert "export TOKEN=coffer_...  ORG_ID=org-..." in block
    script = block.replace("export TOKEN=coffer_...  ORG_ID=org-...\n", "")
    script = script.replace("http://127.0.0.1:8200/", f"http://127.0.0.1:{port}/")
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", script], capture_output=True,
                          text=True, timeout=60, check=False,
                          env=clean_env(TOKEN=token.group(1), ORG_ID=org.group(1)))  # fmt: skip
    assert done.returncode == 0, done.stderr
    answers = [json.loads(line) for line in done.stdout.replace("}{", "}\n{").splitlines()
               if line.strip()]  # fmt: skip
    summary, key, decrypted = answers
    assert summary["featureEnabled"] is True
    assert key["name"] == "app-encryption"
    assert (
        decrypted["plaintext"] == "aGVsbG8sIGttcw=="
    )  # base64 of "hello, kms", as the README says
    assert "aGVsbG8sIGttcw==" in (ROOT / "README.md").read_text()

    version = subprocess.run([str(clone / ".venv" / "bin" / "coffer"), "--version"],
                             capture_output=True, text=True, check=False, env=clean_env())  # fmt: skip
    assert version.returncode == 0, version.stderr
    assert version.stdout.startswith("coffer ")


def test_the_built_wheel_installs_into_a_new_venv_and_coffer_runs(
    clone: Path, tmp_path: Path
) -> None:
    dist, venv = tmp_path / "dist", tmp_path / "venv"
    env = clean_env()
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                    "--no-build-isolation", "-w", str(dist), str(clone)], check=True,
                   env=env, cwd=tmp_path)  # fmt: skip
    (wheel,) = dist.glob("coffer-*.whl")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, env=env)
    pip = [str(venv / "bin" / "pip"), "install", "--quiet", "--disable-pip-version-check"]
    subprocess.run([*pip, "--require-hashes", "-r", str(clone / "requirements-runtime.lock")],
                   check=True, env=env, timeout=SETUP_DEADLINE_SECONDS)  # fmt: skip
    subprocess.run([*pip, "--no-deps", str(wheel)], check=True, env=env)
    coffer = str(venv / "bin" / "coffer")
    version = subprocess.run([coffer, "--version"], capture_output=True, text=True, env=env,
                             check=False, cwd=tmp_path)  # fmt: skip
    assert version.returncode == 0, version.stderr
    assert version.stdout.strip().startswith("coffer 0.")
    # init runs every migration: the wheel carries them (package data), and the root key seal.
    made = subprocess.run([coffer, "init", "--data-dir", str(tmp_path / "data"), "-o", "json"],
                          capture_output=True, text=True, env=env, check=False, cwd=tmp_path)  # fmt: skip
    assert made.returncode == 0, made.stderr
    SUITE_SECRETS.add(json.loads(made.stdout)["token"])
    assert (tmp_path / "data" / "coffer.db").exists()
