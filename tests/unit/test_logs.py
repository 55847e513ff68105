"""A repeated failure's traceback is logged once a minute; every occurrence keeps its line. A
dependency's outage is two lines, down and back. The JSON format is an object a line."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta

import pytest

from coffer.errors import Unavailable
from coffer.logs import (
    LOGGER,
    DependencyState,
    JsonFormatter,
    Throttled,
    dependency,
    dependency_of,
    describe,
    logging_config,
)


def test_a_repeated_failure_logs_its_traceback_once_a_minute(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [0.0]
    throttled = Throttled(logging.getLogger("coffer.test"), lambda: now[0])
    try:
        raise OSError(28, "No space left on device")
    except OSError as exc:
        failure = exc
    with caplog.at_level(logging.WARNING):
        for n in range(100):
            throttled.failure(logging.WARNING, "disk", "request %d failed", n, exc_info=failure)
        now[0] = 61.0
        throttled.failure(logging.WARNING, "disk", "request %d failed", 100, exc_info=failure)
    assert len(caplog.records) == 101, "every failure has its line"
    traced = [r for r in caplog.records if r.exc_info]
    assert [r.getMessage() for r in traced] == ["request 0 failed", "request 100 failed"]
    assert caplog.records[5].getMessage() == "request 5 failed (OSError; traceback logged before)"
    assert caplog.text.count("Traceback") == 2


def test_a_dependency_logs_one_line_down_and_one_back(caplog: pytest.LogCaptureFixture) -> None:
    now = [100.0]
    state = DependencyState("database", timer=lambda: now[0])
    refused = ConnectionRefusedError(111, "Connection refused")
    with caplog.at_level(logging.DEBUG, logger=LOGGER):
        state.ok()  # up: nothing to say
        for _ in range(50):
            state.failed(refused)
            state.request_failed()
        now[0] = 105.25
        state.ok()
        state.ok()
    said = [(r.levelno, r.getMessage()) for r in caplog.records if r.levelno > logging.DEBUG]
    assert said == [
        (logging.ERROR, "database is down: ConnectionRefusedError: [Errno 111] Connection refused"),
        (logging.INFO, "database is back after 5.2 s (50 request(s) failed)"),
    ]
    assert not any(r.exc_info for r in caplog.records), "an outage is no bug: no traceback"
    assert not state.down


def test_a_dependency_down_again_is_said_again_and_counts_afresh(
    caplog: pytest.LogCaptureFixture,
) -> None:
    state = DependencyState("audit sink siem", level=logging.WARNING, timer=lambda: 0.0)
    with caplog.at_level(logging.INFO, logger=LOGGER):
        state.failed("SinkError: audit sink siem: HTTP 502")
        state.request_failed()
        state.ok()
        state.request_failed()  # up: not counted
        state.failed(TimeoutError("timed out"))
        state.ok()
    assert [r.getMessage() for r in caplog.records] == [
        "audit sink siem is down: SinkError: audit sink siem: HTTP 502",
        "audit sink siem is back after 0.0 s (1 request(s) failed)",
        "audit sink siem is down: TimeoutError: timed out",
        "audit sink siem is back after 0.0 s (0 request(s) failed)",
    ]
    assert caplog.records[0].levelno == logging.WARNING


def test_a_driver_error_is_described_by_its_first_line_and_a_failure_names_its_dependency() -> None:
    class Wrapped(Exception):  # as SQLAlchemy wraps the driver's error in ``orig``
        def __init__(self, orig: Exception) -> None:
            super().__init__(f"({type(orig).__name__}) {orig}\n[SQL: SELECT 1]")
            self.orig = orig

    class OperationalError(Exception):
        pass

    driver = OperationalError("connection failed: server closed the connection\nunexpectedly")
    assert describe(Wrapped(driver)) == "OperationalError: connection failed: server closed " \
                                        "the connection"  # fmt: skip
    assert describe("said by another process") == "said by another process"

    outage = Unavailable(dependency="database")
    try:
        try:
            raise outage
        except Unavailable as exc:
            raise RuntimeError("the audit log cannot be written") from exc
    except RuntimeError as exc:
        later = exc
    assert dependency_of(later) == "database"
    assert dependency_of(Unavailable()) is None
    assert dependency_of(None) is None
    assert dependency("database") is dependency("database")


def test_json_lines_carry_time_level_logger_message_and_the_traceback(
    capsys: pytest.CaptureFixture[str],
) -> None:
    logger = logging.getLogger("coffer.test.json")
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning('two\nlines and a quote " and é')
        try:
            raise ValueError("a bug")
        except ValueError:
            logger.exception("request %s failed", "r1")
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2, "one line per record, whatever the message holds"
    first, second = (json.loads(line) for line in lines)
    assert set(first) == {"time", "level", "logger", "message"}
    assert first["level"] == "WARNING"
    assert first["logger"] == "coffer.test.json"
    assert first["message"] == 'two\nlines and a quote " and é'
    stamp = datetime.fromisoformat(first["time"])
    assert stamp.utcoffset() == timedelta(0)
    assert first["time"].endswith("Z")
    assert abs((datetime.now(UTC) - stamp).total_seconds()) < 60
    assert second["message"] == "request r1 failed"
    assert second["exc"].startswith("Traceback (most recent call last):")
    assert second["exc"].endswith("ValueError: a bug")


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_the_logging_config_sends_uvicorn_and_the_server_the_same_way(log_format: str) -> None:
    config = logging_config("info", log_format)
    assert config["root"] == {"level": "INFO", "handlers": ["stderr"]}
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        assert config["loggers"][name] == {"handlers": [], "propagate": True}
    formatter = config["formatters"]["coffer"]
    assert (formatter.get("()") is JsonFormatter) == (log_format == "json")
