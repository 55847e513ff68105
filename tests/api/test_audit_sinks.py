"""Audit sinks against real receivers: a file, syslog over a local socket, UDP and TCP, and an
HTTP collector; required sinks fail closed, optional ones catch up, in order, none lost."""

from __future__ import annotations

import contextlib
import json
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from starlette.testclient import TestClient

from coffer.audit.anchor import read_anchor
from coffer.audit.lines import ExportedChain, read_lines
from coffer.audit.verify import Verification, verify_chain
from coffer.bootstrap import build_app
from coffer.config import AuditSinkSettings
from tests.conftest import FakeClock, Kms, initialised, make_settings, sync_engine
from tests.e2e.processes import free_port

KEYS = "/v1/kms/nl-01/keys"
RFC5424 = re.compile(
    rb"<(?P<pri>\d{1,3})>1 (?P<time>\S+) (?P<host>\S+) (?P<app>\S+) (?P<pid>\d+) "
    rb"(?P<msgid>record|checkpoint) - \xef\xbb\xbf(?P<msg>\{.*\})"
)


@dataclass
class Collector:
    """A local HTTP audit collector that can be stopped and started again on its port."""

    port: int
    token: str = "collector-secret"
    bodies: list[bytes] = field(default_factory=list)
    refused: int = 0
    _server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/ingest"

    def start(self) -> None:
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if self.headers.get("Authorization") != f"Bearer {collector.token}":
                    collector.refused += 1
                    self.send_response(401)
                elif self.headers.get("Content-Type") != "application/x-ndjson":
                    self.send_response(415)
                else:
                    collector.bodies.append(body)
                    self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                return None

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def lines(self) -> list[bytes]:
        return [line + b"\n" for body in self.bodies for line in body.splitlines()]


@pytest.fixture
def collector(monkeypatch: pytest.MonkeyPatch) -> Iterator[Collector]:
    made = Collector(free_port())
    monkeypatch.setenv("COFFER_TEST_COLLECTOR_TOKEN", made.token)
    yield made
    made.stop()


@contextlib.contextmanager
def open_with_sinks(tmp_path: Path, *sinks: AuditSinkSettings) -> Iterator[Kms]:
    settings = make_settings(tmp_path / "data", audit_checkpoint_every=5, audit_sinks=sinks)
    boot = initialised(settings)
    clock = FakeClock()
    with TestClient(build_app(settings, clock=clock, run_scheduler=False),
                    raise_server_exceptions=False) as client:  # fmt: skip
        yield Kms(client, settings, boot, clock)


def stored_lines(kms: Kms) -> tuple[list[tuple[int, str, bytes, bytes]], list[int]]:
    """Every stored record (seq, canonical JSON, prev, link) and the checkpoints' seqs."""
    engine = sync_engine(kms.settings)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                text("SELECT seq, record, prev_hash, hash FROM audit_events ORDER BY seq")
            ).all()
            checkpoints = conn.execute(text("SELECT seq FROM audit_checkpoints ORDER BY seq"))
            return ([(r.seq, r.record, bytes(r.prev_hash), bytes(r.hash)) for r in rows],
                    list(checkpoints.scalars()))  # fmt: skip
    finally:
        engine.dispose()


def verify_copy(kms: Kms, copy: ExportedChain) -> Verification:
    """A sink's copy verified with the root of trust: links, checkpoints and the anchor."""
    purposes = kms.services.purposes
    signer = kms.run(purposes.checkpoint_signer)
    anchor = read_anchor(kms.settings.anchor_path)

    async def run() -> Verification:
        return await verify_chain(copy, signer, purposes.audit_link, anchor, copy=copy)

    return kms.run(run)


def assert_copy_is_the_log(kms: Kms, copy: ExportedChain) -> None:
    """The copy holds exactly the stored records, with the same links, and every checkpoint."""
    stored, checkpoints = stored_lines(kms)
    assert [(r.seq, r.record, r.prev_hash, r.hash) for r in copy.rows] == stored
    assert [cp.seq for cp in copy.checkpoints] == checkpoints
    result = verify_copy(kms, copy)
    assert result.ok, result.problem
    assert result.links_checked
    assert result.records == len(stored)


def encrypt(kms: Kms, times: int) -> list[int]:
    return [
        kms.client.post(
            f"{KEYS}/k/encrypt", json={"plaintext": "AA=="}, headers=kms.headers
        ).status_code
        for _ in range(times)
    ]


def wait_for(condition: Callable[[], bool], seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


# --- file ----------------------------------------------------------------------------------------


def test_a_required_file_sink_holds_every_record_with_its_links_rotated_and_private(
    tmp_path: Path,
) -> None:
    path = tmp_path / "sink" / "audit.jsonl"
    sink = AuditSinkSettings(name="file", type="file", path=path, required=True,
                             max_bytes=4096, keep=50)  # fmt: skip
    with open_with_sinks(tmp_path, sink) as kms:
        kms.create_key("k")
        assert set(encrypt(kms, 30)) == {200}
        files = sorted(path.parent.glob("audit.jsonl.*[0-9]"), key=lambda p: -int(p.suffix[1:]))
        assert len(files) >= 3, "rotated by size"
        every = [*files, path]
        assert all(p.stat().st_mode & 0o777 == 0o600 for p in every)
        assert all(p.stat().st_size <= 4096 for p in every)
        copy = read_lines(line for p in every for line in p.read_bytes().splitlines())
        assert_copy_is_the_log(kms, copy)


def test_an_edited_line_of_a_sink_copy_is_detected_by_its_links(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    sink = AuditSinkSettings(name="file", type="file", path=path, required=True)
    with open_with_sinks(tmp_path, sink) as kms:
        kms.create_key("k")
        encrypt(kms, 7)
        lines = path.read_bytes().splitlines()
        lines[3] = lines[3].replace(b'"status":200', b'"status":403')
        result = verify_copy(kms, read_lines(iter(lines)))
        assert result.problem == "record 4 was changed after it was written"


# --- required sinks fail closed ------------------------------------------------------------------


def key_state(kms: Kms) -> tuple[int, int]:
    """The key's newest version and the audit head, read from the database."""
    engine = sync_engine(kms.settings)
    try:
        with engine.connect() as conn:
            version = conn.execute(text("SELECT max(version) FROM key_versions")).scalar_one()
            head = conn.execute(text("SELECT seq FROM audit_chain_head")).scalar_one()
            return int(version), int(head)
    finally:
        engine.dispose()


def test_a_required_sink_that_is_down_fails_every_request_with_503_and_nothing_changes(
    tmp_path: Path, collector: Collector
) -> None:
    sink = AuditSinkSettings(name="siem", type="http", url=collector.url, required=True,
                             token_env="COFFER_TEST_COLLECTOR_TOKEN", timeout_seconds=2)  # fmt: skip
    collector.start()
    with open_with_sinks(tmp_path, sink) as kms:
        kms.create_key("k")
        before = key_state(kms)
        collector.stop()  # the collector is gone: connections are refused
        answer = kms.client.post(f"{KEYS}/k/rotate", headers=kms.headers)
        assert answer.status_code == 503, answer.text
        assert answer.json()["code"] == "unavailable"
        assert set(encrypt(kms, 3)) == {503}
        assert key_state(kms) == before, "no version, no record"
        collector.start()  # back: requests succeed again, the chain goes on unbroken
        assert kms.client.post(f"{KEYS}/k/rotate", headers=kms.headers).status_code == 200
        assert key_state(kms) == (before[0] + 1, before[1] + 1)
        assert set(encrypt(kms, 5)) == {200}  # to a signed checkpoint: a copy proves that far
        assert_copy_is_the_log(kms, read_lines(iter(collector.lines())))


def test_a_required_sink_that_refuses_fails_the_request_too(
    tmp_path: Path, collector: Collector
) -> None:
    collector.start()
    sink = AuditSinkSettings(name="siem", type="http", url=collector.url, required=True,
                             token_env="COFFER_TEST_COLLECTOR_TOKEN")  # fmt: skip
    with open_with_sinks(tmp_path, sink) as kms:
        kms.create_key("k")
        collector.token = "rotated-elsewhere"  # the collector now answers 401
        assert set(encrypt(kms, 2)) == {503}
        assert collector.refused == 2


# --- optional sinks catch up ---------------------------------------------------------------------


def lag(kms: Kms, sink: str) -> float:
    metrics = kms.client.get("/metrics").text
    found = re.search(rf'coffer_audit_sink_lag_records\{{sink="{sink}"\}} (\S+)', metrics)
    return float(found.group(1)) if found else -1.0


def test_an_optional_sink_that_is_down_lags_then_gets_every_record_in_order(
    tmp_path: Path, collector: Collector
) -> None:
    name = f"optional-{collector.port}"
    sink = AuditSinkSettings(name=name, type="http", url=collector.url, batch_records=7,
                             token_env="COFFER_TEST_COLLECTOR_TOKEN", timeout_seconds=1)  # fmt: skip
    with open_with_sinks(tmp_path, sink) as kms:
        kms.create_key("k")
        assert set(encrypt(kms, 25)) == {200}, "an optional sink never fails a request"
        wait_for(lambda: lag(kms, name) >= 26)
        assert collector.bodies == []
        collector.start()
        wait_for(lambda: lag(kms, name) == 0)
        assert len(collector.bodies) >= 4, "batches of at most 7 records"
        copy = read_lines(iter(collector.lines()))
        seqs = [row.seq for row in copy.rows]
        assert seqs == list(range(1, 27)), "in order, none lost, none twice"
        assert_copy_is_the_log(kms, copy)
        encrypt(kms, 3)  # and it keeps up from its cursor
        wait_for(lambda: len(read_lines(iter(collector.lines())).rows) == 29)
        assert_copy_is_the_log(kms, read_lines(iter(collector.lines())))


# --- syslog --------------------------------------------------------------------------------------


@dataclass
class SyslogReceiver:
    address: str
    messages: list[bytes] = field(default_factory=list)

    def lines(self) -> list[bytes]:
        lines = []
        for message in self.messages:
            parsed = RFC5424.fullmatch(message)
            assert parsed is not None, message[:200]
            assert parsed["pri"] == b"134"  # local0 (16) * 8 + informational (6)
            assert parsed["app"] == b"coffer"
            line = parsed["msg"] + b"\n"
            assert json.loads(line)["type"] == parsed["msgid"].decode()
            lines.append(line)
        return lines


def _datagrams(sock: socket.socket, into: list[bytes]) -> None:
    while True:
        try:
            into.append(sock.recv(65535))
        except OSError:
            return


def _octet_counted(server: socket.socket, into: list[bytes]) -> None:
    """RFC 6587 octet counting: ``LEN SP MSG`` frames on a stream."""
    try:
        conn, _ = server.accept()
    except OSError:
        return
    buffer = b""
    with conn:
        while chunk := conn.recv(65535):
            buffer += chunk
            while b" " in buffer:
                size, rest = buffer.split(b" ", 1)
                if len(rest) < int(size):
                    break
                into.append(rest[: int(size)])
                buffer = rest[int(size) :]


@pytest.fixture(params=["unix", "unix-stream", "udp", "tcp"])
def syslog(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SyslogReceiver]:
    kind = request.param
    if kind == "unix":
        path = tmp_path / "log.sock"
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(str(path))
        receiver = SyslogReceiver(f"unix:{path}")
        target: Any = _datagrams
    elif kind == "unix-stream":  # some syslog daemons listen on a stream socket
        path = tmp_path / "log.sock"
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(str(path))
        sock.listen()
        receiver = SyslogReceiver(f"unix:{path}")
        target = _octet_counted
    elif kind == "udp":
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        receiver = SyslogReceiver(f"udp://127.0.0.1:{sock.getsockname()[1]}")
        target = _datagrams
    else:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        receiver = SyslogReceiver(f"tcp://127.0.0.1:{sock.getsockname()[1]}")
        target = _octet_counted
    threading.Thread(target=target, args=(sock, receiver.messages), daemon=True).start()
    yield receiver
    sock.close()


def test_a_syslog_sink_sends_rfc5424_messages_that_verify_as_the_log(
    tmp_path: Path, syslog: SyslogReceiver
) -> None:
    sink = AuditSinkSettings(name="syslog", type="syslog", address=syslog.address, required=True)
    with open_with_sinks(tmp_path, sink) as kms:
        kms.create_key("k")
        assert set(encrypt(kms, 11)) == {200}
        wait_for(lambda: len(syslog.messages) >= 12 + 2)  # 12 records, checkpoints 5 and 10
        assert_copy_is_the_log(kms, read_lines(iter(syslog.lines())))


def test_a_required_syslog_socket_that_is_gone_fails_closed(tmp_path: Path) -> None:
    path = tmp_path / "log.sock"
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind(str(path))
    sink = AuditSinkSettings(name="syslog", type="syslog", address=f"unix:{path}", required=True)
    with open_with_sinks(tmp_path, sink) as kms:
        kms.create_key("k")
        receiver.close()
        path.unlink()  # the syslog daemon stopped
        before = key_state(kms)
        assert kms.client.post(f"{KEYS}/k/rotate", headers=kms.headers).status_code == 503
        assert key_state(kms) == before


def test_an_optional_sink_gets_the_checkpoints_made_on_their_own(
    tmp_path: Path, collector: Collector
) -> None:
    """A scheduler pass or a shutdown signs the chain where it stands, records already sent:
    the sink still gets that checkpoint (the next one names it), and its copy verifies."""
    name = f"standalone-{collector.port}"
    sink = AuditSinkSettings(name=name, type="http", url=collector.url,
                             token_env="COFFER_TEST_COLLECTOR_TOKEN")  # fmt: skip
    collector.start()
    with open_with_sinks(tmp_path, sink) as kms:
        kms.create_key("k")
        encrypt(kms, 2)
        wait_for(lambda: len(read_lines(iter(collector.lines())).rows) == 3)
        assert kms.run(kms.services.audit_log.checkpoint), "a checkpoint of record 3, alone"
        encrypt(kms, 12)
        wait_for(lambda: len(read_lines(iter(collector.lines())).rows) == 15)
        wait_for(lambda: lag(kms, name) == 0)
        copy = read_lines(iter(collector.lines()))
        assert [cp.seq for cp in copy.checkpoints] == [3, 5, 10, 15]
        assert_copy_is_the_log(kms, copy)
