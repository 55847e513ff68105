"""A repeated failure's traceback is logged once a minute; every occurrence keeps its line."""

from __future__ import annotations

import logging

import pytest

from coffer.logs import Throttled


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
