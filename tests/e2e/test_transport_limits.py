"""Transport limits of a real server: header floods, silent and slow connections, too many
connections or requests in flight, malformed HTTP — each answered with the JSON error body, and a
normal client served meanwhile."""

from __future__ import annotations

import contextlib
import json
import resource
import select
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.processes import (
    COFFER,
    clean_env,
    database_env,
    free_port,
    run_coffer,
    stop,
    wait_until_healthy,
)

pytestmark = [pytest.mark.slow, pytest.mark.one_engine]  # the transport: no storage involved


@dataclass(frozen=True)
class Server:
    port: int
    pid: int
    token: str
    log: Path

    def rss_kib(self) -> int:
        status = Path(f"/proc/{self.pid}/status").read_text()
        return int(
            next(line for line in status.splitlines() if line.startswith("VmRSS")).split()[1]
        )

    def connect(self) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        return sock

    def request(self, raw: bytes) -> tuple[int, dict[str, str], bytes]:
        with self.connect() as sock:
            sock.sendall(raw)
            return read_answer(sock)

    def get(self, path: str = "/v1/kms/summary") -> int:
        raw = (f"GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {self.token}\r\n"
               "X-Organisation-Identity: default\r\nConnection: close\r\n\r\n").encode()  # fmt: skip
        return self.request(raw)[0]


def read_answer(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed without an answer: {data!r}")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    while len(body) < int(headers.get("content-length", "0")):
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return int(lines[0].split()[1]), headers, body


@contextlib.contextmanager
def running(tmp: Path, config_text: str) -> Iterator[Server]:
    """A server started with a soft open-file limit of 1,024 (it raises it to the hard limit)."""
    data_dir = tmp / "data"
    init = run_coffer("init", "--data-dir", data_dir, "--output", "json")
    assert init.returncode == 0, init.stderr
    token = json.loads(init.stdout)["token"]
    config = tmp / "coffer.toml"
    config.write_text(config_text)
    port = free_port()
    log = tmp / "serve.log"
    args = ("--data-dir", data_dir, "--port", str(port), "--config", config)
    env = clean_env(**database_env(args))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard < 2048:
        pytest.fail(f"the open-file hard limit {hard} is too low for this test (ulimit -Hn)")
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # the tests open 1,100 sockets
    with log.open("wb") as out:
        process = subprocess.Popen(
            ["sh", "-c", 'ulimit -Sn 1024; exec "$0" serve "$@"', str(COFFER), *map(str, args)],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
        )  # fmt: skip
    try:
        wait_until_healthy(process, port, log)
        yield Server(port, process.pid, token, log)
    finally:
        stop(process)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Short timeouts, so that the tests need not wait long."""
    with running(tmp_path_factory.mktemp("transport"),
                 "header_timeout_seconds = 2\nbody_timeout_seconds = 3\n"
                 "max_concurrent_requests = 64\nmax_connections = 3000\n") as started:  # fmt: skip
        yield started


def test_start_up_raises_the_open_file_limit_and_logs_it(server: Server) -> None:
    text = server.log.read_text()
    soft, hard = (int(x) for x in Path(f"/proc/{server.pid}/limits").read_text().split(
        "Max open files")[1].split()[:2])  # fmt: skip
    assert soft == hard
    if hard > 1024:
        assert f"open files: soft limit raised from 1024 to the hard limit {hard}" in text


def test_a_flood_of_huge_headers_gets_431_and_memory_stays_bounded(server: Server) -> None:
    before = server.rss_kib()
    header = b"X-Flood: " + b"a" * (16 << 20) + b"\r\n"
    answers = []
    for _ in range(20):
        with server.connect() as sock:
            sock.sendall(b"GET /v1/kms/summary HTTP/1.1\r\nHost: x\r\n")
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                sock.sendall(header)  # the server may answer and close before taking it all
            answers.append(read_answer(sock))
    assert {status for status, _, _ in answers} == {431}
    body = json.loads(answers[0][2])
    assert body["code"] == "request_header_fields_too_large"
    grown = (server.rss_kib() - before) / 1024
    print(f"\nRSS grew {grown:.1f} MiB over 20 × 16 MiB of headers")
    assert grown < 50
    assert server.get() == 200


def test_too_many_header_fields_get_431(server: Server) -> None:
    many = b"".join(b"X-H%d: v\r\n" % n for n in range(101))
    status, _, body = server.request(b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + many + b"\r\n")
    assert status == 431
    assert json.loads(body)["code"] == "request_header_fields_too_large"
    fine = b"".join(b"X-H%d: v\r\n" % n for n in range(98))
    assert server.request(b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + fine + b"\r\n")[0] == 200


def test_a_big_head_sent_whole_gets_431(server: Server) -> None:
    """Headers that arrive complete in one chunk are measured too."""
    head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 40_000 + b"\r\n\r\n"
    assert server.request(head)[0] == 431
    just = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 16_000 + b"\r\n\r\n"
    assert server.request(just)[0] == 200


def test_malformed_http_gets_the_json_error_body(server: Server) -> None:
    status, headers, body = server.request(b"GARBAGE\x01 / HTTP/9\r\n\r\n")
    assert status == 400
    assert headers["content-type"] == "application/json"
    assert json.loads(body)["code"] == "invalid_request"


def test_silent_and_slow_connections_do_not_keep_a_normal_client_from_being_served(
    server: Server,
) -> None:
    silent = [server.connect() for _ in range(1_100)]
    slow = [server.connect() for _ in range(20)]
    try:
        for sock in slow:
            sock.sendall(b"GET /v1/kms/summary HTTP/1.1\r\n")
        latencies = []
        for n in range(200):
            if n % 20 == 0:
                for sock in slow:
                    with contextlib.suppress(OSError):
                        sock.sendall(b"X-Slow: 1\r\n")  # a header now and then: slowloris
            started = time.perf_counter()
            assert server.get() == 200
            latencies.append(time.perf_counter() - started)
        latencies.sort()
        p99 = latencies[int(len(latencies) * 0.99) - 1]
        print(f"\nwith 1,100 silent and 20 slow connections: p99 {p99 * 1000:.1f} ms")
        assert p99 < 0.2
        # The slow ones got 408 and the silent ones were closed, within the header timeout.
        time.sleep(2.5)
        status, _, body = read_answer(slow[0])
        assert status == 408
        assert json.loads(body)["code"] == "request_timeout"
        silent[0].settimeout(5)
        assert silent[0].recv(1) == b"", "closed by the server"
    finally:
        for sock in silent + slow:
            sock.close()


def test_requests_beyond_the_concurrency_limit_get_503_busy_with_retry_after(
    server: Server,
) -> None:
    """64 requests whose bodies never come are in progress; the next is refused."""
    head = (f"POST /v1/kms/nl-01/keys HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {server.token}"
            "\r\nX-Organisation-Identity: default\r\nContent-Length: 100\r\n\r\n").encode()  # fmt: skip
    waiting = [server.connect() for _ in range(64)]
    try:
        for sock in waiting:
            sock.sendall(head)
        time.sleep(0.3)
        status, headers, body = server.request(head + b" " * 100)
        assert status == 503
        assert headers["retry-after"] == "1"
        assert json.loads(body)["code"] == "busy"
    finally:
        for sock in waiting:
            sock.close()
    time.sleep(0.3)
    assert server.get() == 200


def test_when_connections_run_out_an_idle_one_makes_room_and_busy_ones_get_503(
    tmp_path: Path,
) -> None:
    with running(tmp_path, "max_connections = 50\nmax_concurrent_requests = 1000\n") as server:
        idle = [server.connect() for _ in range(50)]
        time.sleep(0.2)
        assert server.get() == 200, "a silent connection was closed for it"
        time.sleep(0.2)
        closed, _, _ = select.select(idle, [], [], 2)
        assert len(closed) == 1
        assert closed[0].recv(1) == b""
        assert closed[0] in idle[:3], "one of the oldest"
        for sock in idle:
            sock.close()
        time.sleep(0.2)
        head = (f"POST /v1/kms/nl-01/keys HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                f"{server.token}\r\nX-Organisation-Identity: default\r\nContent-Length: 9\r\n"
                "\r\n").encode()  # fmt: skip
        busy = [server.connect() for _ in range(50)]
        try:
            for sock in busy:
                sock.sendall(head)  # requests in progress: none of these may be closed
            time.sleep(0.3)
            with server.connect() as sock:
                status, headers, body = read_answer(sock)
            assert (status, headers["retry-after"]) == (503, "1")
            assert json.loads(body)["code"] == "busy"
        finally:
            for sock in busy:
                sock.close()
        time.sleep(0.3)
        assert server.get() == 200


def test_the_limits_hold_in_every_worker(tmp_path: Path, serve: Any) -> None:
    """With --workers, each worker process applies the configured limits."""
    data_dir = tmp_path / "data"
    assert run_coffer("init", "--data-dir", data_dir).returncode == 0
    config = tmp_path / "coffer.toml"
    config.write_text("max_header_bytes = 2048\n")
    port = free_port()
    serve("--data-dir", data_dir, "--port", str(port), "--workers", "2", "--config", config,
          port=port)  # fmt: skip
    answers = []
    for _ in range(8):  # connections land on either worker
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 5000 + b"\r\n\r\n")
            answers.append(read_answer(sock)[0])
    assert answers == [431] * 8


def test_a_pipelined_head_is_bounded_while_a_response_is_under_way(server: Server) -> None:
    """The first request takes a while (an RSA-4096 key is made); the second's head streams
    in meanwhile: it is counted all the same, and refused past the limit."""
    body = json.dumps({"name": "slow", "keyType": "rsa-4096"}).encode()
    first = (f"POST /v1/kms/nl-01/keys HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
             f"{server.token}\r\nX-Organisation-Identity: default\r\nContent-Type: "
             f"application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body  # fmt: skip
    with server.connect() as sock:
        sock.sendall(first + b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ")
        with contextlib.suppress(OSError):
            for _ in range(64):
                sock.sendall(b"b" * 16_384)
        status, _, _ = read_answer(sock)
        assert status in (201, 431)
        if status == 201:
            assert read_answer(sock)[0] == 431
    assert server.get() == 200


def test_an_early_answer_does_not_count_the_rest_of_the_body_as_a_head(server: Server) -> None:
    """A body over the limit is answered 413 at once; the rest of it, still arriving, is a
    body, not the next request's head: no second answer."""
    head = (b"POST /v1/kms/nl-01/keys HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 2000000\r\nConnection: close\r\n\r\n")  # fmt: skip
    with server.connect() as sock:
        sock.sendall(head)
        with contextlib.suppress(OSError):
            for _ in range(8):
                sock.sendall(b"a" * 65_536)
        status, _, body = read_answer(sock)
        assert status in (401, 413), body
        sock.settimeout(3)
        rest = b""
        with contextlib.suppress(OSError):
            while chunk := sock.recv(65536):
                rest += chunk
        assert b"HTTP/1.1" not in rest, "one answer only"
