"""The audit log as an operator relies on it: every answered request has its record even when
the server is killed with ``kill -9`` under load, and ``coffer audit verify`` tells an intact
chain from a changed one."""

from __future__ import annotations

import base64
import http.client
import json
import signal
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from tests.e2e.processes import (
    ServeFactory,
    free_port,
    http_post,
    open_database,
    run_coffer,
    start_serve,
    stop,
    wait_until_healthy,
)

pytestmark = pytest.mark.slow

THREADS = 8
LOAD_SECONDS = 1.5
MIN_ACKNOWLEDGED = 50
ENCRYPT_PATH = "/v1/kms/nl-01/keys/k/encrypt"
PLAINTEXT = b"audited under load"


@dataclass(frozen=True)
class Initialised:
    data_dir: Path
    headers: dict[str, str]


def initialise(data_dir: Path) -> Initialised:
    result = run_coffer("init", "--data-dir", data_dir, "--output", "json")
    assert result.returncode == 0, result.stderr
    boot = json.loads(result.stdout)
    return Initialised(
        data_dir,
        {
            "Authorization": f"Bearer {boot['token']}",
            "X-Organisation-Identity": boot["organisation"],
        },
    )


def create_key(port: int, coffer: Initialised) -> None:
    status, key = http_post(
        port, "/v1/kms/nl-01/keys", {"name": "k", "keyType": "aes256-gcm96"}, coffer.headers
    )
    assert status == 201, key


def audit_records(data_dir: Path) -> list[dict[str, Any]]:
    """Every audit record, in chain order, read straight from the database (server stopped)."""
    engine = open_database(data_dir)
    try:
        with engine.connect() as connection:
            rows = connection.execute(text("SELECT record FROM audit_events ORDER BY seq")).all()
    finally:
        engine.dispose()
    return [json.loads(record) for (record,) in rows]


def verify(data_dir: Path) -> tuple[int, str, str]:
    result = run_coffer("audit", "verify", "--data-dir", data_dir)
    return result.returncode, result.stdout, result.stderr


@dataclass
class Load:
    """What the load threads saw: request ids sent, those answered 200 (with the echoed id),
    and any other answer the server gave."""

    sent: set[str] = field(default_factory=set)
    acknowledged: list[str] = field(default_factory=list)
    echo_mismatches: list[tuple[str, str | None]] = field(default_factory=list)
    other_answers: list[tuple[str, int, bytes]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    stop: threading.Event = field(default_factory=threading.Event)


def run_load(port: int, headers: dict[str, str], worker: int, load: Load) -> None:
    body = json.dumps({"plaintext": base64.b64encode(PLAINTEXT).decode()})
    connection: http.client.HTTPConnection | None = None
    n = 0
    while not load.stop.is_set():
        request_id = f"load-{worker}-{n}"
        n += 1
        try:
            if connection is None:
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            with load.lock:
                load.sent.add(request_id)
            connection.request(
                "POST",
                ENCRYPT_PATH,
                body=body,
                headers={
                    **headers,
                    "Content-Type": "application/json",
                    "X-Request-Id": request_id,
                },
            )
            response = connection.getresponse()
            payload = response.read()
            echoed = response.getheader("X-Request-Id")
        except (OSError, http.client.HTTPException):
            # After the kill: refused, reset or cut-off answers. Nothing was acknowledged.
            if connection is not None:
                connection.close()
            connection = None
            time.sleep(0.01)
            continue
        with load.lock:
            if response.status == 200:
                load.acknowledged.append(request_id)
                if echoed != request_id:
                    load.echo_mismatches.append((request_id, echoed))
            else:
                load.other_answers.append((request_id, response.status, payload[:200]))
    if connection is not None:
        connection.close()


def test_every_request_answered_200_before_kill_9_has_exactly_one_audit_record(
    tmp_path: Path,
) -> None:
    coffer = initialise(tmp_path / "data")
    port = free_port()
    args = ("--data-dir", coffer.data_dir, "--port", str(port))

    process = start_serve(*args, log=tmp_path / "first.log")
    load = Load()
    threads = [
        threading.Thread(target=run_load, args=(port, coffer.headers, i, load), daemon=True)
        for i in range(THREADS)
    ]
    try:
        wait_until_healthy(process, port, tmp_path / "first.log")
        create_key(port, coffer)
        for thread in threads:
            thread.start()
        time.sleep(LOAD_SECONDS)
        with load.lock:
            answered_before_kill = len(load.acknowledged)
        process.send_signal(signal.SIGKILL)  # while the threads are still sending
        process.wait(timeout=10)
        time.sleep(0.2)  # let the threads see the dead server
    finally:
        load.stop.set()
        for thread in threads:
            thread.join(timeout=10)
        stop(process)

    assert process.returncode == -signal.SIGKILL
    assert not any(thread.is_alive() for thread in threads)
    acknowledged = load.acknowledged
    print(f"\n{len(acknowledged)} encrypt request(s) answered 200 before kill -9")
    assert answered_before_kill > MIN_ACKNOWLEDGED, (
        f"only {answered_before_kill} requests answered within {LOAD_SECONDS} s: the kill "
        "did not happen under load"
    )
    assert len(set(acknowledged)) == len(acknowledged)
    assert load.echo_mismatches == [], "X-Request-Id not echoed"
    assert load.other_answers == [], "the server answered something other than 200 under load"

    records = audit_records(coffer.data_dir)
    encrypt_records = [r for r in records if r["action"] == "kms.encrypt"]
    by_request = Counter(r["context"]["requestId"] for r in encrypt_records)

    missing = [rid for rid in acknowledged if by_request[rid] == 0]
    assert missing == [], f"{len(missing)} acknowledged request(s) have no audit record"
    duplicated = {rid: n for rid, n in by_request.items() if n > 1}
    assert duplicated == {}, "requests with more than one audit record"
    for record in encrypt_records:
        if record["context"]["requestId"] in set(acknowledged):
            assert record["context"]["status"] == 200, record
            assert record["context"]["outcome"] is not None
    # No record for a request that was never sent; at most the ones in flight at the kill
    # have a record without having had an answer.
    phantom = set(by_request) - load.sent
    assert phantom == set(), "audit records of requests that were never sent"
    in_flight = set(by_request) - set(acknowledged)
    assert len(in_flight) <= THREADS, in_flight
    assert [r["seq"] for r in records] == list(range(1, len(records) + 1))
    assert len({r["eventId"] for r in records}) == len(records)
    stored = json.dumps(records)
    token = coffer.headers["Authorization"].removeprefix("Bearer ")
    assert token not in stored
    assert PLAINTEXT.decode() not in stored
    assert base64.b64encode(PLAINTEXT).decode() not in stored

    code, out, err = verify(coffer.data_dir)
    assert code == 0, err
    assert "audit chain intact" in out
    assert f"{len(records)} record(s)" in out

    # The chain goes on after the crash: a restarted server appends to it, and a clean stop
    # leaves it intact with a checkpoint of its end.
    process = start_serve(*args, log=tmp_path / "second.log")
    try:
        wait_until_healthy(process, port, tmp_path / "second.log")
        status, sealed = http_post(
            port,
            ENCRYPT_PATH,
            {"plaintext": base64.b64encode(b"after the crash").decode()},
            {**coffer.headers, "X-Request-Id": "after-restart"},
        )
        assert status == 200, sealed
    finally:
        stop(process)
    after = audit_records(coffer.data_dir)
    assert after[: len(records)] == records
    assert [r["context"]["requestId"] for r in after[len(records) :]] == ["after-restart"]
    code, out, err = verify(coffer.data_dir)
    assert code == 0, err
    assert f"audit chain intact: {len(after)} record(s) up to {len(after)}" in out


def test_audit_verify_reports_an_intact_chain_then_the_changed_record(
    tmp_path: Path, serve: ServeFactory
) -> None:
    coffer = initialise(tmp_path / "data")
    port = free_port()
    serve("--data-dir", coffer.data_dir, "--port", str(port), port=port)
    create_key(port, coffer)
    for i in range(3):
        status, sealed = http_post(
            port,
            ENCRYPT_PATH,
            {"plaintext": base64.b64encode(b"x").decode()},
            {**coffer.headers, "X-Request-Id": f"verify-{i}"},
        )
        assert status == 200, sealed

    # The server may still be running: verify reads a consistent snapshot (WAL).
    code, out, err = verify(coffer.data_dir)
    assert code == 0, err
    assert out.startswith("audit chain intact: 4 record(s) up to 4"), out
    assert err == ""

    engine = open_database(coffer.data_dir)
    try:
        with engine.begin() as connection:
            (record,) = connection.execute(
                text("SELECT record FROM audit_events WHERE seq = 2")
            ).one()
            assert json.loads(record)["action"] == "kms.encrypt"
            changed = connection.execute(
                text(
                    "UPDATE audit_events SET record = replace(record, 'kms.encrypt', "
                    "'kms.decrypt') WHERE seq = 2"
                )
            )
            assert changed.rowcount == 1
    finally:
        engine.dispose()

    code, out, err = verify(coffer.data_dir)
    assert code == 1, (out, err)
    assert "audit chain BROKEN after 1 good record(s)" in err, err
    assert "record 2 " in err, err
    assert "intact" not in out


def test_audit_verify_on_an_uninitialised_directory_says_to_run_init(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    for directory in (empty, tmp_path / "absent"):
        code, out, err = verify(directory)
        assert code == 1, (out, err)
        assert "coffer init" in err
        assert "Traceback" not in err
        assert out == ""
        assert not (directory / "coffer.db").exists()


def test_a_wiped_log_is_caught_by_an_anchor_on_another_path_even_with_the_public_key_only(
    tmp_path: Path,
) -> None:
    coffer = initialise(tmp_path / "data")
    elsewhere = tmp_path / "other-disk" / "anchor.jsonl"
    config = tmp_path / "coffer.toml"
    config.write_text(f'audit_checkpoint_every = 2\naudit_anchor_path = "{elsewhere}"\n')
    port = free_port()
    args = ("--data-dir", coffer.data_dir, "--port", str(port), "--config", config)
    process = start_serve(*args, log=tmp_path / "serve.log")
    try:
        wait_until_healthy(process, port, tmp_path / "serve.log")
        create_key(port, coffer)
        for i in range(4):
            status, sealed = http_post(port, ENCRYPT_PATH, {"plaintext": "AA=="},
                                       {**coffer.headers, "X-Request-Id": f"anchor-{i}"})  # fmt: skip
            assert status == 200, sealed
        done = run_coffer("audit", "public-key", "--url", f"http://127.0.0.1:{port}",
                          "--token", coffer.headers["Authorization"].removeprefix("Bearer "))  # fmt: skip
        assert done.returncode == 0, done.stderr
    finally:
        stop(process)
    pem = tmp_path / "audit.pem"
    pem.write_text(done.stdout)
    assert not (coffer.data_dir / "audit-anchor.jsonl").exists()
    assert len(elsewhere.read_text().splitlines()) >= 3  # the header and two checkpoints

    def verify_with(*extra: str | Path) -> tuple[int, str, str]:
        result = run_coffer("audit", "verify", "--data-dir", coffer.data_dir, *extra)
        return result.returncode, result.stdout, result.stderr

    code, out, err = verify_with("--anchor", elsewhere)
    assert code == 0, err
    assert "audit chain intact: 5 record(s)" in out
    code, out, err = verify_with("--anchor", elsewhere, "--public-key", pem)
    assert code == 0, err
    assert "links not checked: public key only" in out

    engine = open_database(coffer.data_dir)
    try:
        with engine.begin() as connection:
            connection.execute(text("DELETE FROM audit_events"))
            connection.execute(text("DELETE FROM audit_checkpoints"))
            connection.execute(text("UPDATE audit_chain_head SET seq = 0"))
    finally:
        engine.dispose()
    for extra in (
        ("--anchor", elsewhere),
        ("--config", config),
        ("--public-key", pem, "--anchor", elsewhere),
    ):
        code, out, err = verify_with(*extra)
        assert code == 1, (out, err)
        assert "beyond the database's last record 0" in err, err
    code, out, err = verify_with()  # the default anchor: the data directory holds none
    assert code == 1
    assert "no audit anchor at" in err
