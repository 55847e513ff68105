"""Each seal with real ``coffer`` processes: ``init`` → ``serve`` → the getting-started flow →
restart → old ciphertexts decrypt; a wrong root key (file, or another HSM token) stops ``serve``
before it writes anything; an HSM token that goes away seals a running server within seconds and
its return unseals it; ``migrate-seal`` moves an installation to another seal."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from coffer.client import Client
from coffer.crypto.hsm import Pkcs11Token, key_label
from tests.conftest import SUITE_SECRETS, HsmToken, SoftHsm, on_postgresql
from tests.e2e.processes import (
    COFFER,
    clean_env,
    database_env,
    free_port,
    http_get,
    open_database,
    run_coffer,
    start_serve,
    stop,
    wait_until_healthy,
)

pytestmark = pytest.mark.slow


@dataclass
class Installed:
    data_dir: Path
    boot: dict[str, Any]
    env: dict[str, str] = field(default_factory=dict)
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self) -> Client:
        return Client(self.url, self.boot["token"], organisation=self.boot["organisation"])

    def serve(self, **extra: str) -> subprocess.Popen[bytes]:
        self.port = free_port()
        log = self.data_dir.parent / f"serve-{self.port}.log"
        process = start_serve("--data-dir", self.data_dir, "--port", str(self.port), log=log,
                              env={**self.env, **extra})  # fmt: skip
        self.processes.append(process)
        wait_until_healthy(process, self.port, log)
        return process

    def unseal(self, shares: list[str]) -> dict[str, Any]:
        answer: dict[str, Any] = {}
        for share in shares:
            done = subprocess.run(
                [str(COFFER), "operator", "unseal", "--output", "json"], input=share + "\n",
                capture_output=True, text=True, timeout=30, check=False,
                env=clean_env(COFFER_URL=self.url),
            )  # fmt: skip
            assert done.returncode == 0, done.stderr
            answer = json.loads(done.stdout)
        return answer


def init(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> Installed:
    data_dir = tmp_path / "data"
    extra = env or {}
    done = run_coffer("init", "--data-dir", data_dir, "--output", "json", *args,
                      env=clean_env(**{**database_env(("--data-dir", data_dir)), **extra}),
                      timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr
    boot = json.loads(done.stdout)
    SUITE_SECRETS.add(boot["token"])
    SUITE_SECRETS.update(boot.get("unsealKeys", []))
    return Installed(data_dir, boot, extra)


@pytest.fixture
def installs() -> Iterator[list[Installed]]:
    made: list[Installed] = []
    yield made
    for installed in made:
        for process in installed.processes:
            stop(process)


@pytest.fixture
def hsm_token(softhsm: SoftHsm, request: pytest.FixtureRequest) -> HsmToken:
    return softhsm.new_token(f"e{abs(hash(request.node.name)) % 10**8}")


def installed_with(seal: str, tmp_path: Path, softhsm: SoftHsm, token: HsmToken) -> Installed:
    if seal == "shamir":
        return init(tmp_path, "--seal", "shamir", "--key-shares", "3", "--key-threshold", "2")
    if seal == "pkcs11":
        return init(tmp_path, "--seal", "pkcs11", "--pkcs11-library", softhsm.library,
                    "--pkcs11-token", token.label, env={"COFFER_PKCS11_PIN": token.pin})  # fmt: skip
    return init(tmp_path)


@pytest.mark.one_engine  # the seals do not touch the engine: api tests cover both
@pytest.mark.parametrize("seal", ["file", "shamir", "pkcs11"])
def test_each_seal_serves_the_guide_and_old_ciphertexts_after_a_restart(
    seal: str, tmp_path: Path, softhsm: SoftHsm, hsm_token: HsmToken,
    installs: list[Installed],
) -> None:  # fmt: skip
    installed = installed_with(seal, tmp_path, softhsm, hsm_token)
    installs.append(installed)
    assert installed.boot["seal"] == seal
    assert (installed.data_dir / "root.key").exists() == (seal == "file")
    shares = installed.boot.get("unsealKeys", [])
    assert len(shares) == (3 if seal == "shamir" else 0)

    first = installed.serve()
    if seal == "shamir":
        assert http_get(installed.port, "/v1/sys/seal-status")[1]["sealed"] is True
        assert installed.unseal(shares[2:0:-1])["sealed"] is False
    with installed.client() as coffer:
        assert coffer.summary().feature_enabled is True
        coffer.keys.create("app-encryption", "aes256-gcm96")
        sealed = coffer.encrypt("app-encryption", b"hello, kms")
        assert coffer.decrypt("app-encryption", sealed.ciphertext).plaintext == b"hello, kms"
    stop(first)

    installed.serve()
    if seal == "shamir":
        assert http_get(installed.port, "/v1/sys/seal-status")[1]["sealed"] is True
        installed.unseal([shares[0], shares[2]])
    with installed.client() as coffer:
        assert coffer.decrypt("app-encryption", sealed.ciphertext).plaintext == b"hello, kms"


def fingerprint(installed: Installed) -> Any:
    """What a server that wrote anything would have changed."""
    if not on_postgresql():
        return hashlib.sha256((installed.data_dir / "coffer.db").read_bytes()).hexdigest()
    engine = open_database(installed.data_dir)
    with engine.connect() as conn:
        found = [conn.exec_driver_sql(f"SELECT count(*) FROM {t}").scalar()
                 for t in ("audit_events", "audit_checkpoints", "organisation_keks", "root_keys")]  # fmt: skip
    engine.dispose()
    return found


def test_serve_refuses_another_installations_root_key_and_writes_nothing(
    tmp_path: Path,
) -> None:
    """The scenario of the security review: a new user gives a server the root.key of another
    installation. It must not start, not answer 500s, not sign a checkpoint with that key."""
    mine = init(tmp_path / "mine")
    theirs = init(tmp_path / "theirs")
    own_key = (mine.data_dir / "root.key").read_bytes()
    shutil.copyfile(theirs.data_dir / "root.key", mine.data_dir / "root.key")
    before = fingerprint(mine)
    done = run_coffer("serve", "--data-dir", mine.data_dir, "--port", str(free_port()))
    assert done.returncode == 1
    assert (f"the root key does not belong to this database (installation "
            f"{mine.boot['installation']})") in done.stderr  # fmt: skip
    assert fingerprint(mine) == before
    offline = run_coffer("audit", "verify", "--data-dir", mine.data_dir)
    assert offline.returncode == 1
    assert "the root key does not belong to this database" in offline.stderr
    assert fingerprint(mine) == before
    (mine.data_dir / "root.key").write_bytes(own_key)
    verified = run_coffer("audit", "verify", "--data-dir", mine.data_dir)
    assert verified.returncode == 0, verified.stderr
    assert "audit chain intact" in verified.stdout


def test_serve_refuses_another_token_and_a_wrong_pin_seals(
    tmp_path: Path, softhsm: SoftHsm, hsm_token: HsmToken, installs: list[Installed]
) -> None:
    installed = installed_with("pkcs11", tmp_path, softhsm, hsm_token)
    installs.append(installed)
    other = softhsm.new_token(hsm_token.label + "-other")
    impostor = Pkcs11Token(softhsm.library, other.label, other.pin)
    impostor.open()
    impostor.generate_key(key_label(installed.boot["installation"], 1))  # the very label
    impostor.close()
    before = fingerprint(installed)
    done = run_coffer("serve", "--data-dir", installed.data_dir, "--port", str(free_port()),
                      env=clean_env(COFFER_PKCS11_TOKEN=other.label, COFFER_PKCS11_PIN=other.pin,
                                    **database_env(("--data-dir", installed.data_dir))))  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert "the root key does not belong to this database" in done.stderr
    assert fingerprint(installed) == before

    installed.serve(COFFER_PKCS11_PIN="0000")
    status = http_get(installed.port, "/v1/sys/seal-status")[1]
    assert status["sealed"] is True
    assert "PIN" in status["reason"]


@pytest.mark.one_engine  # the seals do not touch the engine: api tests cover both
def test_a_token_that_goes_away_seals_the_server_and_its_return_unseals_it(
    tmp_path: Path, softhsm: SoftHsm, hsm_token: HsmToken, installs: list[Installed]
) -> None:
    installed = installed_with("pkcs11", tmp_path, softhsm, hsm_token)
    installs.append(installed)
    installed.serve()
    with installed.client() as coffer:
        coffer.keys.create("k", "aes256-gcm96")
        ciphertext = coffer.encrypt("k", b"still here").ciphertext

        away = hsm_token.remove()
        try:
            began = time.monotonic()
            while http_get(installed.port, "/readyz")[0] != 503:
                assert time.monotonic() - began < 5, "not sealed within 5 s"
                time.sleep(0.1)
            print(f"sealed {time.monotonic() - began:.2f} s after the token went away")
            assert http_get(installed.port, "/v1/sys/seal-status")[1]["sealed"] is True
        finally:
            hsm_token.restore(away)
        began = time.monotonic()
        while http_get(installed.port, "/readyz")[0] != 200:
            assert time.monotonic() - began < 5, "not unsealed within 5 s of the token's return"
            time.sleep(0.1)
        assert coffer.decrypt("k", ciphertext).plaintext == b"still here"
    assert installed.processes[0].poll() is None, "the same process, never restarted"


@pytest.mark.one_engine  # the seals do not touch the engine: api tests cover both
def test_migrate_seal_moves_a_file_installation_to_shamir(
    tmp_path: Path, installs: list[Installed]
) -> None:
    installed = init(tmp_path)
    installs.append(installed)
    server = installed.serve()
    with installed.client() as coffer:
        coffer.keys.create("k", "aes256-gcm96")
        ciphertext = coffer.encrypt("k", b"moved").ciphertext
    stop(server)

    done = run_coffer("operator", "migrate-seal", "--data-dir", installed.data_dir, "--to",
                      "shamir", "--key-shares", "2", "--key-threshold", "2", "--output", "json")  # fmt: skip
    assert done.returncode == 0, done.stderr
    shares = json.loads(done.stdout)["unsealKeys"]
    SUITE_SECRETS.update(shares)
    assert not list(installed.data_dir.glob("root.key*")), "the file seal's key is gone"

    installed.serve()
    assert http_get(installed.port, "/v1/sys/seal-status")[1]["type"] == "shamir"
    assert installed.unseal(shares)["sealed"] is False
    with installed.client() as coffer:
        assert coffer.decrypt("k", ciphertext).plaintext == b"moved"
        assert coffer.sys.root_status().active_generation == 2


@pytest.mark.one_engine  # the seals do not touch the engine: api tests cover both
def test_the_operator_commands_rotate_the_root_and_shred_an_organisation(
    tmp_path: Path, installs: list[Installed]
) -> None:
    installed = init(tmp_path)
    installs.append(installed)
    installed.serve()
    env = clean_env(COFFER_URL=installed.url, COFFER_TOKEN=installed.boot["token"])

    def cli(*args: str) -> Any:
        done = run_coffer(*args, "--output", "json", env=env)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    assert cli("operator", "seal-status")["sealed"] is False
    with installed.client() as coffer:
        coffer.keys.create("k", "aes256-gcm96")
        ciphertext = coffer.encrypt("k", b"rotated").ciphertext
    rotated = cli("operator", "rotate-root")  # waits until the rotation is complete
    assert (rotated["activeGeneration"], rotated["rotating"]) == (2, False)
    assert cli("operator", "root-status")["activeGeneration"] == 2
    with installed.client() as coffer:
        assert coffer.decrypt("k", ciphertext).plaintext == b"rotated"

    pem = run_coffer("audit", "public-key", env=env)
    assert pem.returncode == 0, pem.stderr
    assert pem.stdout.startswith("-----BEGIN PUBLIC KEY-----")

    tenant = cli("org", "create", "Leaving Soon")
    refused = run_coffer("org", "shred", tenant["slug"], "--confirm", "default", env=env)
    assert refused.returncode == 1
    assert "confirm" in refused.stderr
    shredded = cli("org", "shred", tenant["slug"], "--confirm", tenant["slug"])
    assert shredded["shreddedAt"]


@pytest.mark.one_engine  # the seals do not touch the engine: api tests cover both
def test_shamir_takes_one_server_process_and_offline_commands_read_shares(
    tmp_path: Path, installs: list[Installed]
) -> None:
    installed = init(tmp_path, "--seal", "shamir", "--key-shares", "2", "--key-threshold", "2")
    installs.append(installed)
    done = run_coffer("serve", "--data-dir", installed.data_dir, "--port", str(free_port()),
                      "--workers", "2")  # fmt: skip
    assert done.returncode == 1
    assert "one worker per node" in done.stderr
    shares = installed.boot["unsealKeys"]
    verify = subprocess.run(
        [str(COFFER), "audit", "verify", "--data-dir", str(installed.data_dir)],
        input="\n".join(shares) + "\n", capture_output=True, text=True, timeout=60, check=False,
        env=clean_env(**database_env(("--data-dir", installed.data_dir))),
    )  # fmt: skip
    assert verify.returncode == 0, verify.stderr
    assert "audit chain intact" in verify.stdout
    wrong = subprocess.run(
        [str(COFFER), "audit", "verify", "--data-dir", str(installed.data_dir)],
        input=f"{shares[0]}\n{shares[0]}\n", capture_output=True, text=True, timeout=60,
        check=False, env=clean_env(**database_env(("--data-dir", installed.data_dir))),
    )  # fmt: skip
    assert wrong.returncode == 1
    assert "given already" in wrong.stderr
