"""The audit writer process (``audit_writer = "process"``, the default of ``coffer serve``):
records committed by a child process, which is restarted when it dies and stops with the server."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.api.test_audit import records, verification
from tests.conftest import Kms, initialised, make_settings, open_kms

KEYS = "/v1/kms/nl-01/keys"


def writers() -> list[int]:
    """Pids of this process's audit writer children."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        if parent == os.getpid() and b"coffer.audit_writer" in cmdline and " Z " not in stat:
            found.append(int(entry.name))
    return found


@pytest.fixture
def kms(tmp_path: Path) -> Iterator[Kms]:
    settings = make_settings(tmp_path / "data", audit_writer="process")
    yield from open_kms(settings, initialised(settings))


def test_records_are_committed_by_a_writer_process(kms: Kms) -> None:
    kms.create_key("k")
    for _ in range(20):
        assert kms.post(f"{KEYS}/k/encrypt", {"plaintext": "d3JpdGVy"}).status_code == 200
    assert len(writers()) == 1
    assert [r["action"] for r in records(kms)] == ["kms.key.create"] + ["kms.encrypt"] * 20
    checked = verification(kms)
    assert checked.ok, checked.problem
    assert checked.records == 21


def test_a_dead_writer_fails_closed_and_is_started_again(kms: Kms) -> None:
    kms.create_key("k")
    (writer,) = writers()
    os.kill(writer, signal.SIGKILL)
    time.sleep(0.2)
    answered: list[tuple[int, str]] = []
    for _ in range(10):
        response = kms.post(f"{KEYS}/k/encrypt", {"plaintext": "d3JpdGVy"})
        assert response.status_code in (200, 503), response.text
        answered.append((response.status_code, response.headers["x-request-id"]))
    assert [status for status, _ in answered][-5:] == [200] * 5  # back by itself
    assert writers() != [writer]
    stored = {r["context"]["requestId"] for r in records(kms)}
    assert {request_id for status, request_id in answered if status == 200} <= stored
    checked = verification(kms)
    assert checked.ok, checked.problem


def test_the_writer_stops_with_the_server(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data", audit_writer="process")
    for kms in open_kms(settings, initialised(settings)):
        kms.create_key("k")
        assert len(writers()) == 1
    assert writers() == []


def test_a_writer_that_dies_during_a_batch_fails_that_batch_with_unavailable() -> None:
    import asyncio
    import sys
    from datetime import UTC, datetime

    from coffer.audit.events import AuditEvent
    from coffer.audit.process import ProcessCommitter
    from coffer.errors import Unavailable

    # A "writer" that reads its start-up frame's length and dies without answering.
    async def startup() -> int:
        return 0

    committer = ProcessCommitter(
        [sys.executable, "-c", "import sys; sys.stdin.buffer.read(4)"], startup
    )
    event = AuditEvent(event_id="e", created_at=datetime.now(UTC), action="kms.encrypt",
                       request_id="r")  # fmt: skip

    async def attempt() -> None:
        try:
            with pytest.raises(Unavailable):
                await committer.commit([(event, None)])
        finally:
            await committer.close()

    asyncio.run(attempt())


def test_readiness_goes_through_the_writer_and_a_dead_one_is_replaced_or_reported(
    kms: Kms,
) -> None:
    """``/readyz`` commits an empty batch: it fails while no writer can take a batch (the
    writer hangs), and a killed writer is replaced by the check itself."""
    kms.create_key("k")
    (writer,) = writers()
    os.kill(writer, signal.SIGKILL)
    time.sleep(0.2)
    first = kms.client.get("/readyz")  # the batch to the dead writer fails closed …
    again = kms.client.get("/readyz")  # … and the next one starts a new writer
    assert (first.status_code, again.status_code) in ((503, 200), (200, 200))
    (replaced,) = writers()
    assert replaced != writer
    from coffer.audit import process

    os.kill(replaced, signal.SIGSTOP)  # a writer that takes no batch (a stuck disk)
    saved = process.ANSWER_TIMEOUT_SECONDS
    process.ANSWER_TIMEOUT_SECONDS = 1.0
    try:
        stuck = kms.client.get("/readyz")
        assert stuck.status_code == 503
        assert stuck.json()["code"] == "unavailable"
    finally:
        process.ANSWER_TIMEOUT_SECONDS = saved
        with contextlib.suppress(ProcessLookupError):  # killed by the server as hung
            os.kill(replaced, signal.SIGCONT)
    assert kms.client.get("/readyz").status_code == 200
