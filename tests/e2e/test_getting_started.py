"""The user's getting-started guide, replayed word for word against a real server.

``coffer init`` and ``coffer serve`` run as real processes, and every step of
``seed/getting-started.md`` is sent with the ``curl`` binary and exactly the guide's flags; only the
base URL differs (the spec's compatibility promise).
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.processes import ServeFactory, clean_env, free_port, run_coffer

pytestmark = pytest.mark.slow

KEY_IDENTITY = re.compile(r"kms-[a-z2-7]{20}")  # spec §2: "kms-" + 20 lowercase base32 chars


@pytest.fixture
def curl() -> Callable[..., Any]:
    """Run the ``curl`` binary with the given arguments and return the JSON body it printed."""
    binary = shutil.which("curl")
    if binary is None:
        pytest.fail(
            "the `curl` binary is not on PATH: this test replays the getting-started guide with "
            "curl itself, so install curl (CI does) rather than skipping it"
        )

    def run(*args: str) -> Any:
        result = subprocess.run(
            [binary, *args],
            capture_output=True,
            env=clean_env(),
            stdin=subprocess.DEVNULL,
            timeout=30,
            check=False,
        )
        assert result.returncode == 0, f"curl {args} failed: {result.stderr!r}"
        try:
            return json.loads(result.stdout)
        except ValueError:
            pytest.fail(f"curl {args} printed no JSON: {result.stdout!r}")

    return run


@dataclass
class Coffer:
    base_url: str
    organisation: str
    organisation_slug: str
    token: str


@pytest.fixture
def coffer(tmp_path: Path, serve: ServeFactory) -> Coffer:
    """A data directory made by ``coffer init`` and a ``coffer serve`` process over it."""
    data_dir = tmp_path / "data"
    init = run_coffer("init", "--data-dir", data_dir, "--output", "json", timeout=60)
    assert init.returncode == 0, init.stderr
    printed = json.loads(init.stdout)

    port = free_port()
    serve("--data-dir", data_dir, "--port", str(port), port=port)
    return Coffer(
        f"http://127.0.0.1:{port}",
        organisation=printed["organisation"],
        organisation_slug=printed["organisationSlug"],
        token=printed["token"],
    )


def nl_01(summary: dict[str, Any]) -> dict[str, Any]:
    regions = [r for r in summary["regions"] if r["slug"] == "nl-01"]
    assert len(regions) == 1, summary
    region: dict[str, Any] = regions[0]
    return region


@pytest.mark.parametrize(
    ("scheme", "organisation_ref"),
    [("Bearer", "identity"), ("Token", "slug")],
    ids=["bearer-token-and-organisation-identity", "token-scheme-and-organisation-slug"],
)
def test_getting_started_guide_works_with_curl_against_a_real_server(
    curl: Callable[..., Any], coffer: Coffer, scheme: str, organisation_ref: str
) -> None:
    token = coffer.token
    org_id = coffer.organisation if organisation_ref == "identity" else coffer.organisation_slug
    if organisation_ref == "slug":
        assert org_id == "default"
    auth = f"Authorization: {scheme} {token}"
    org = f"X-Organisation-Identity: {org_id}"
    api = coffer.base_url

    # Step 1: check availability.
    summary = curl("-s", "-H", auth, "-H", org, f"{api}/v1/kms/summary")
    assert summary["featureEnabled"] is True, summary
    region = nl_01(summary)
    assert region["kmsAvailable"] is True
    assert region["identity"]
    assert region["name"]
    for count in ("totalKeys", "activeKeys", "disabledKeys", "pendingDeletionKeys"):
        assert region[count] == 0, region

    # Step 2: create an encryption key.
    key = curl(
        "-s", "-X", "POST",
        "-H", auth,
        "-H", org,
        "-H", "Content-Type: application/json",
        "-d", '{\n"name": "app-encryption",\n'
              '"description": "Envelope encryption for application secrets",\n'
              '"keyType": "aes256-gcm96"\n}',
        f"{api}/v1/kms/nl-01/keys",
    )  # fmt: skip
    assert KEY_IDENTITY.fullmatch(key.get("identity", "")), key
    assert key["slug"] == "app-encryption"
    assert key["name"] == "app-encryption"
    assert key["description"] == "Envelope encryption for application secrets"
    assert key["keyType"] == "aes256-gcm96"
    assert key["status"] == "active"
    assert key["latestVersion"] == 1
    assert key["organisation"]["identity"] == coffer.organisation

    region = nl_01(curl("-s", "-H", auth, "-H", org, f"{api}/v1/kms/summary"))
    assert (region["totalKeys"], region["activeKeys"]) == (1, 1), region
    assert (region["disabledKeys"], region["pendingDeletionKeys"]) == (0, 0), region

    # Step 3: encrypt data, addressing the key by its slug.
    plaintext = base64.b64encode(b"hello, kms").decode("ascii")  # echo -n "hello, kms" | base64
    encrypted = curl(
        "-s", "-X", "POST",
        "-H", auth,
        "-H", org,
        "-H", "Content-Type: application/json",
        "-d", f'{{"plaintext": "{plaintext}"}}',
        f"{api}/v1/kms/nl-01/keys/app-encryption/encrypt",
    )  # fmt: skip
    assert encrypted.get("ciphertext", "").startswith("thalassa:v1:"), encrypted
    assert encrypted["keyVersion"] == "1"
    ciphertext = encrypted["ciphertext"]

    # Step 4: decrypt data, by slug as in the guide and by the saved identity.
    for key_ref in ("app-encryption", key["identity"]):
        decrypted = curl(
            "-s", "-X", "POST",
            "-H", auth,
            "-H", org,
            "-H", "Content-Type: application/json",
            "-d", f'{{"ciphertext": "{ciphertext}"}}',
            f"{api}/v1/kms/nl-01/keys/{key_ref}/decrypt",
        )  # fmt: skip
        assert "plaintext" in decrypted, decrypted
        assert base64.b64decode(decrypted["plaintext"], validate=True) == b"hello, kms"
        assert decrypted["keyVersion"] == "1"
