"""Failures logged without flooding the log: every one gets its line, but the traceback only the
first of a kind and then once a minute.

A full disk fails every request; a traceback per request (five, from each layer) turned 1,474
requests into 6 MB of log. What an operator needs is each request's line, and the cause once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

#: How often a repeated failure's traceback is logged again.
EVERY_SECONDS = 60.0


class Throttled:
    def __init__(self, logger: logging.Logger, timer: Callable[[], float] = time.monotonic) -> None:
        self._log = logger
        self._timer = timer
        self._traced: dict[str, float] = {}  # kind → when its traceback was last logged

    def failure(self, level: int, kind: str, message: str, *args: object,
                exc_info: BaseException | None = None) -> None:  # fmt: skip
        """Log ``message``; with the traceback of ``exc_info`` if none of this ``kind`` (the
        same failure) was logged in the last minute."""
        now = self._timer()
        last = self._traced.get(kind)
        if exc_info is not None and (last is None or now - last >= EVERY_SECONDS):
            if len(self._traced) > 1000:
                self._traced.clear()
            self._traced[kind] = now
            self._log.log(level, message, *args, exc_info=exc_info)
            return
        if exc_info is not None:
            message += " (%s; traceback logged before)"
            args = (*args, type(exc_info).__name__)
        self._log.log(level, message, *args)
