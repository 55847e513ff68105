"""schemathesis against a real server: thousands of generated requests (and undeclared methods)
from ``/openapi.json``, every check, no failure — the document promises no more and no less
than the server accepts, and no input gives a 5xx."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.processes import (
    ServeFactory,
    clean_env,
    free_port,
    run_coffer,
)

pytestmark = [pytest.mark.slow, pytest.mark.one_engine]

CONFIG = Path(__file__).resolve().parents[1] / "schemathesis" / "schemathesis.toml"
#: Installed beside the Python that runs the tests (the project's virtual environment).
SCHEMATHESIS = Path(sys.executable).parent / "schemathesis"
#: Operations whose schema-valid requests are refused for reasons a schema cannot state: an
#: unseal key share that is not one of this installation's (400 ``invalid_unseal_key``), and a
#: token's ``serviceAccount``, required only with ``X-Organisation-Identity``.
SEMANTIC = ("POST /v1/sys/unseal", "POST /v1/iam/tokens")


def _run(url: str, token: str, *selection: str) -> tuple[int, str]:
    done = subprocess.run(
        [str(SCHEMATHESIS), "--config-file", str(CONFIG), "run", f"{url}/openapi.json",
         "-H", f"Authorization: Bearer {token}", "-H", "X-Organisation-Identity: default",
         "--max-examples", "50", "--workers", "2", "--seed", "1", "--no-color", *selection],
        capture_output=True, text=True, timeout=900, env=clean_env(), check=False,
    )  # fmt: skip
    return done.returncode, done.stdout + done.stderr


def generated(output: str) -> int:
    found = re.search(r"(\d+) generated, (\d+) passed", output)
    assert found is not None, output[-3000:]
    assert found.group(1) == found.group(2), output[-3000:]
    return int(found.group(1))


def test_every_generated_request_meets_every_check(tmp_path: Path, serve: ServeFactory) -> None:
    data_dir = tmp_path / "data"
    init = run_coffer("init", "--data-dir", data_dir, "--output", "json")
    assert init.returncode == 0, init.stderr
    admin = json.loads(init.stdout)["token"]
    port = free_port()
    serve("--data-dir", data_dir, "--port", str(port), port=port)
    url = f"http://127.0.0.1:{port}"
    # A service account with every policy of organisation default: it reaches every operation
    # of the organisation, and cannot seal the server or shred organisations under the run.
    env = clean_env(COFFER_URL=url, COFFER_TOKEN=admin, COFFER_ORG="default")
    made = run_coffer("service-account", "create", "--org", "default", "fuzz", "-o", "json",
                      env=env)  # fmt: skip
    account = json.loads(made.stdout)["identity"]
    for policy in ("kms:FullAccess", "audit:ReadAccess", "iam:Admin"):
        bound = run_coffer("role", "bind", "--org", "default", "--principal", account,
                           "--policy", policy, env=env)  # fmt: skip
        assert bound.returncode == 0, bound.stderr
    issued = run_coffer("token", "create", "--org", "default", "--service-account", "fuzz",
                        "-o", "json", env=env)  # fmt: skip
    token = json.loads(issued.stdout)["token"]

    excluded = [arg for name in SEMANTIC for arg in ("--exclude-name", name)]
    code, output = _run(url, token, *excluded)
    assert code == 0, output[-6000:]
    main = generated(output)
    included = [arg for name in SEMANTIC for arg in ("--include-name", name)]
    code, output = _run(url, token, *included, "--exclude-checks", "positive_data_acceptance")
    assert code == 0, output[-6000:]
    total = main + generated(output)
    print(f"\nschemathesis: {total} generated requests, every check passed")
    assert total >= 3000
