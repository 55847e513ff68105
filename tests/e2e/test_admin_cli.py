"""``coffer org|project|service-account|token|role`` against a running server: the operator's
walk-through of the README, exactly as documented, then revocation and unbinding."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import SUITE_SECRETS
from tests.e2e.processes import ServeFactory, clean_env, free_port, http_post, run_coffer

pytestmark = pytest.mark.slow


def cli(env: dict[str, str], *args: str) -> Any:
    done = run_coffer(*args, "--output", "json", env=env)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1, done.stdout  # one JSON object
    return json.loads(lines[0])


def test_an_operator_sets_up_an_application_through_the_cli(
    tmp_path: Path, serve: ServeFactory
) -> None:
    data_dir = tmp_path / "data"
    boot = json.loads(run_coffer("init", "--data-dir", data_dir, "--output", "json").stdout)
    port = free_port()
    serve("--data-dir", data_dir, "--port", str(port), port=port)
    env = clean_env(COFFER_URL=f"http://127.0.0.1:{port}", COFFER_TOKEN=boot["token"])

    org = cli(env, "org", "create", "Acme Payments")
    assert org["slug"] == "acme-payments"
    assert org["kmsEnabled"] is True
    assert "acme-payments" in [o["slug"] for o in cli(env, "org", "list")["items"]]
    project = cli(env, "project", "create", "--org", "acme-payments", "Checkout")
    assert project["slug"] == "checkout"
    assert cli(env, "project", "list", "--org", org["identity"])["items"] == [project]
    account = cli(env, "service-account", "create", "--org", "acme-payments", "checkout-api")
    assert cli(env, "service-account", "list", "--org", "acme-payments")["items"] == [account]

    # The operator needs a key to bind to: as platform administrator, give themself
    # kms:KeyAdministrator on the organisation and create it.
    cli(env, "role", "bind", "--org", "acme-payments", "--principal", boot["principal"],
        "--policy", "kms:KeyAdministrator")  # fmt: skip
    key = cli(env, "keys", "create", "--org", "acme-payments", "cards", "--type", "aes256-gcm96")
    assert key["slug"] == "cards"

    binding = cli(env, "role", "bind", "--org", "acme-payments", "--principal", "checkout-api",
                  "--policy", "kms:CryptoUser", "--key", key["identity"])  # fmt: skip
    assert binding["scope"] == "key"
    assert binding["keyIdentity"] == key["identity"]
    issued = cli(env, "token", "create", "--org", "acme-payments",
                 "--service-account", "checkout-api", "--expires-in", "90d")  # fmt: skip
    SUITE_SECRETS.add(issued["token"])
    assert issued["token"].startswith("coffer_")
    assert issued["expiresAt"] is not None

    app = {"Authorization": f"Bearer {issued['token']}", "X-Organisation-Identity": "acme-payments"}
    status, sealed = http_post(port, "/v1/kms/nl-01/keys/cards/encrypt", {"plaintext": "AA=="}, app)
    assert status == 200, sealed
    status, _ = http_post(port, "/v1/kms/nl-01/keys/cards/disable", {}, app)
    assert status == 403

    listed = cli(env, "token", "list", "--org", "acme-payments")["items"]
    assert [t["identity"] for t in listed] == [issued["identity"]]
    assert "token" not in listed[0]
    cli(env, "role", "unbind", "--org", "acme-payments", binding["identity"])
    status, _ = http_post(port, "/v1/kms/nl-01/keys/cards/encrypt", {"plaintext": "AA=="}, app)
    assert status == 403  # its only binding is gone: no longer a member of the organisation
    revoked = cli(env, "token", "revoke", "--org", "acme-payments", issued["identity"])
    assert revoked["revokedAt"] is not None
    status, _ = http_post(port, "/v1/kms/nl-01/keys/cards/encrypt", {"plaintext": "AA=="}, app)
    assert status == 401

    disabled = cli(env, "org", "disable-kms", "acme-payments")
    assert disabled["kmsEnabled"] is False
    assert cli(env, "org", "enable-kms", org["identity"])["kmsEnabled"] is True
    roles = cli(env, "role", "list", "--org", "acme-payments")["items"]
    assert [r["policy"] for r in roles] == ["kms:KeyAdministrator"]

    # Errors: one line on stderr, exit 1; usage errors exit 2.
    refused = run_coffer("project", "create", "--org", "no-such-org", "X", env=env)
    assert refused.returncode == 1
    assert refused.stderr.strip().count("\n") == 0
    assert "(forbidden, request " in refused.stderr
    assert run_coffer("token", "create", "--org", "acme-payments", env=env).returncode == 2
    text = run_coffer("service-account", "list", "--org", "acme-payments", env=env)
    assert text.returncode == 0
    assert "checkout-api" in text.stdout


def test_the_administrators_token_expires_is_listed_revoked_and_recovered_offline(
    tmp_path: Path, serve: ServeFactory
) -> None:
    data_dir = tmp_path / "data"
    boot = json.loads(run_coffer("init", "--data-dir", data_dir, "--admin-token-ttl", "30d",
                                 "--output", "json").stdout)  # fmt: skip
    SUITE_SECRETS.add(boot["token"])
    assert boot["tokenExpiresAt"] is not None
    port = free_port()
    serve("--data-dir", data_dir, "--port", str(port), port=port)
    # COFFER_ORG names an organisation: --admin still lists the platform's tokens.
    env = clean_env(COFFER_URL=f"http://127.0.0.1:{port}", COFFER_TOKEN=boot["token"],
                    COFFER_ORG="default")  # fmt: skip
    (init,) = cli(env, "token", "list", "--admin")["items"]
    assert init["principalIdentity"] == boot["principal"]
    assert init["expiresAt"] is not None
    second = cli(env, "token", "create", "--admin", "--expires-in", "1h")
    SUITE_SECRETS.add(second["token"])
    revoked = run_coffer("token", "revoke", init["identity"], env=env)
    assert revoked.returncode == 0, revoked.stderr
    assert "warning" not in revoked.stderr
    assert run_coffer("org", "list", env=env).returncode == 1  # the init token: 401
    env["COFFER_TOKEN"] = second["token"]
    last = run_coffer("token", "revoke", second["identity"], env=env)
    assert last.returncode == 0, last.stderr
    assert "warning: no working platform administrator token is left" in last.stderr
    assert "generate-admin-token" in last.stderr
    assert run_coffer("org", "list", env=env).returncode == 1

    recovered = cli(clean_env(), "operator", "generate-admin-token", "--data-dir", data_dir)
    SUITE_SECRETS.add(recovered["token"])
    assert recovered["principalIdentity"] == boot["principal"]
    env["COFFER_TOKEN"] = recovered["token"]
    assert "default" in [o["slug"] for o in cli(env, "org", "list")["items"]]
    assert len(cli(env, "token", "list", "--admin")["items"]) == 3
