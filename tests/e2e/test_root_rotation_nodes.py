"""Root rotation on two real nodes on one PostgreSQL, under an encrypt/decrypt load on both, with
the node that drives it killed (``kill -9``) half way: the other node finishes it, no request of
the load fails, every ciphertext from before decrypts, and the old root key opens nothing."""

from __future__ import annotations

import http.client
import json
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

from coffer.crypto.root import SoftwareCipher, open_blob
from coffer.crypto.wrapping import kek_aad, purpose_key_aad
from coffer.errors import KeyIntegrityError
from tests.conftest import SUITE_SECRETS
from tests.e2e.processes import clean_env, http_get, http_post, run_coffer, stop
from tests.e2e.test_two_nodes import start, until
from tests.postgres import new_schema

# Two nodes on PostgreSQL whichever engine the suite runs on (a private cluster in the SQLite
# run): once is enough.
pytestmark = [pytest.mark.slow, pytest.mark.one_engine]

KEYS = "/v1/kms/nl-01/keys"
ORGANISATIONS = 150
CONFIG = (
    "root_rotation_batch_size = 1\nroot_rotation_grace_seconds = 3\n"
    "scheduler_interval_seconds = 0.5\nscheduler_takeover_seconds = 1\n"
)


class Load:
    """Encrypt, decrypt and decrypt-an-old-ciphertext in a loop against one node."""

    def __init__(self, port: int, headers: dict[str, str], old: list[tuple[str, str]]) -> None:
        self.port = port
        self.headers = {**headers, "Content-Type": "application/json"}
        self.old = old
        self.answers: list[int] = []
        self.wrong: list[str] = []
        self.stopped = threading.Event()
        self.killed = threading.Event()  # the node was killed: lost connections are expected
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _call(self, conn: http.client.HTTPConnection, path: str, body: dict[str, str]) -> Any:
        conn.request("POST", path, body=json.dumps(body), headers=self.headers)
        response = conn.getresponse()
        answer = json.loads(response.read())
        self.answers.append(response.status)
        return answer

    def _run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            self._loop(conn)
        finally:
            conn.close()

    def _loop(self, conn: http.client.HTTPConnection) -> None:
        n = 0
        while not self.stopped.is_set():
            n += 1
            try:
                sealed = self._call(conn, f"{KEYS}/k/encrypt", {"plaintext": "bG9hZA=="})
                opened = self._call(conn, f"{KEYS}/k/decrypt", {"ciphertext": sealed["ciphertext"]})
                if opened.get("plaintext") != "bG9hZA==":
                    self.wrong.append(str(opened))
                ciphertext, plaintext = self.old[n % len(self.old)]
                opened = self._call(conn, f"{KEYS}/k/decrypt", {"ciphertext": ciphertext})
                if opened.get("plaintext") != plaintext:
                    self.wrong.append(str(opened))
            except (OSError, http.client.HTTPException, ValueError):
                if self.killed.is_set():
                    return
                raise

    def start(self) -> Load:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stopped.set()
        self.thread.join(timeout=20)


def root_blobs(url: str) -> list[tuple[bytes, bytes, int]]:
    with psycopg.connect(url) as conn:
        rows = [
            (bytes(blob), kek_aad(ref), gen)
            for ref, blob, gen in conn.execute(
                "SELECT organisation_identity, wrapped_kek, root_generation FROM organisation_keks"
            )
        ]
        rows += [
            (bytes(blob), purpose_key_aad(ref), gen)
            for ref, blob, gen in conn.execute(
                "SELECT purpose, wrapped, root_generation FROM purpose_keys"
            )
        ]
    return rows  # fmt: skip


def remaining(port: int, headers: dict[str, str]) -> dict[str, Any]:
    status, body = http_get(port, "/v1/sys/root", headers)
    assert status == 200, body
    found: dict[str, Any] = body
    return found


def test_root_rotation_survives_load_and_a_killed_node(
    postgres_cluster: tuple[str, Path | None], tmp_path: Path
) -> None:
    url = new_schema(postgres_cluster[0])
    first, second = tmp_path / "node-a", tmp_path / "node-b"
    done = run_coffer("init", "--data-dir", first, "--output", "json",
                      env=clean_env(COFFER_DATABASE_URL=url))  # fmt: skip
    boot = json.loads(done.stdout)
    SUITE_SECRETS.add(boot["token"])
    second.mkdir(mode=0o700)
    shutil.copy2(first / "root.key", second / "root.key")
    old_key = (first / "root.key").read_bytes()
    cluster = {"url": url, "tmp": tmp_path}
    headers = {"Authorization": f"Bearer {boot['token']}", "X-Organisation-Identity": "default"}
    a, b = start(cluster, first, CONFIG), start(cluster, second, CONFIG)
    loads: list[Load] = []
    try:
        for n in range(ORGANISATIONS):
            assert (
                http_post(a.port, "/v1/organisations", {"name": f"Tenant {n}"}, headers)[0] == 201
            )
        assert http_post(a.port, KEYS, {"name": "k", "keyType": "aes256-gcm96"}, headers)[0] == 201
        assert http_get(b.port, "/v1/kms/nl-01/wrapping-key", headers)[0] == 200
        old = []
        for n in range(20):
            plain = f"b2xk{n:04d}"
            status, sealed = http_post(a.port, f"{KEYS}/k/encrypt", {"plaintext": plain}, headers)
            assert status == 200
            old.append((sealed["ciphertext"], plain))
        loads = [Load(node.port, headers, old).start() for node in (a, a, b, b)]
        time.sleep(0.5)

        began = time.monotonic()
        status, answer = http_post(a.port, "/v1/sys/rotate-root", {}, headers)
        assert status == 202, answer
        # Kill the node that drives it once it is well under way.
        while remaining(b.port, headers)["remaining"] > ORGANISATIONS // 2:
            assert time.monotonic() - began < 60, "the rotation does not progress"
            time.sleep(0.02)
        left = remaining(b.port, headers)["remaining"]
        for load in loads[:2]:
            load.killed.set()
        a.process.kill()
        a.process.wait()
        assert left > 0, "the rotation was over before the node could be killed"
        while remaining(b.port, headers)["rotating"]:
            assert time.monotonic() - began < 90, "the surviving node did not finish it"
            time.sleep(0.1)
        took = time.monotonic() - began
        time.sleep(0.5)
        for load in loads:
            load.stop()
        print(f"rotation of {ORGANISATIONS + 1} organisations under load: {took:.1f} s, node A "
              f"killed with {left} blob(s) left; {sum(len(x.answers) for x in loads)} requests")  # fmt: skip

        for load in loads[2:]:  # the surviving node's load: every answer a 200
            assert load.answers, "the load ran"
            assert set(load.answers) == {200}, sorted(set(load.answers))
        for load in loads:
            assert load.wrong == []
            assert set(load.answers) <= {200}

        state = remaining(b.port, headers)
        assert (state["activeGeneration"], state["remaining"]) == (2, 0)
        blobs = root_blobs(url)
        # The KEKs, the Default organisation's, three purpose keys.
        assert len(blobs) == ORGANISATIONS + 1 + 4
        assert {generation for _, _, generation in blobs} == {2}
        for blob, aad, _ in blobs:
            with pytest.raises(KeyIntegrityError):
                open_blob(SoftwareCipher(old_key), blob, aad)
        assert (second / "root.key").read_bytes() != old_key, "B took the new key"
        assert not (second / "root.key.old").exists()
        for ciphertext, plain in old:
            status, opened = http_post(b.port, f"{KEYS}/k/decrypt", {"ciphertext": ciphertext},
                                       headers)  # fmt: skip
            assert (status, opened["plaintext"]) == (200, plain)

        restarted = start(cluster, first, CONFIG)  # A comes back after the rotation
        a.process = restarted.process
        # It removes the retired key it still had once it has read the generations (at once,
        # or at its seal check two seconds later).
        until(lambda: not (first / "root.key.old").exists(), 5)
        status, opened = http_post(restarted.port, f"{KEYS}/k/decrypt",
                                   {"ciphertext": old[0][0]}, headers)  # fmt: skip
        assert (status, opened["plaintext"]) == (200, old[0][1])
    finally:
        for load in loads:
            load.stop()
        stop(a.process)
        stop(b.process)
    verified = run_coffer("audit", "verify", "--data-dir", second,
                          env=clean_env(COFFER_DATABASE_URL=url))  # fmt: skip
    assert verified.returncode == 0, verified.stderr
