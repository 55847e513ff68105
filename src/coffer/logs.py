"""The server's log: its format, and failures logged without flooding it.

A fault (a bug, a full disk) gets a line per failure, but its traceback only the first time and
then once a minute (``Throttled``): a traceback per request (five, from each layer) turned 1,474
requests into 6 MB of log. A dependency that goes away (the database, an audit sink) gets one
line when it goes and one when it is back (``DependencyState``), not one per request it fails.
"""

from __future__ import annotations

import json
import logging
import logging.config
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

#: The ``text`` format's lines (``json``: ``JsonFormatter``).
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

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


class DependencyState:
    """What the server depends on (the database, an audit sink), as its log tells it:
    one line when it goes away, with the cause (its class and message, no traceback: an outage
    is not a bug), and one when it is back, with how long it was away and how many requests
    failed meanwhile. The failures in between are counted, not logged (DEBUG only).

    A 5-second PostgreSQL restart under load thus writes two lines, not hundreds of lines and
    dozens of tracebacks."""

    def __init__(
        self,
        name: str,
        *,
        level: int = logging.ERROR,
        logger: logging.Logger | None = None,
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self._level = level
        self._log = logger if logger is not None else logging.getLogger(LOGGER)
        self._timer = timer
        self._since: float | None = None  # when it went down (``None``: up)
        self._requests = 0  # requests failed since
        #: The latest failure's cause, in one line.
        self.cause: str | None = None

    @property
    def down(self) -> bool:
        return self._since is not None

    def failed(self, cause: BaseException | str) -> None:
        """It failed (``cause``: the exception, or what a child process said of it): the first
        failure of an outage logs it down, the others only at DEBUG."""
        self.cause = describe(cause)
        if self._since is None:
            self._since = self._timer()
            self._requests = 0
            self._log.log(self._level, "%s is down: %s", self.name, self.cause)
        else:
            self._log.debug("%s still down: %s", self.name, self.cause)

    def request_failed(self) -> None:
        """A request failed because it is down (the request's answer said so, 503)."""
        if self._since is not None:
            self._requests += 1

    def ok(self) -> None:
        """It answered: if it was down, log it back (cheap when it was not)."""
        if self._since is None:
            return
        away = self._timer() - self._since
        self._since = None
        self._log.info("%s is back after %.1f s (%d request(s) failed)", self.name, away,
                       self._requests)  # fmt: skip


#: The logger of the dependencies' down and back lines.
LOGGER = "coffer.dependencies"
_STATES: dict[str, DependencyState] = {}


def dependency(name: str, *, level: int = logging.ERROR) -> DependencyState:
    """The state of the dependency ``name`` in this process (made on first use, with
    ``level`` for its down line): every layer that meets it reports to the same one."""
    state = _STATES.get(name)
    if state is None:
        state = _STATES[name] = DependencyState(name, level=level)
    return state


def describe(cause: BaseException | str) -> str:
    """``cause`` in one line: its class and the first line of its message (a driver's error
    wrapped by SQLAlchemy: the driver's)."""
    if isinstance(cause, str):
        return cause
    cause = getattr(cause, "orig", None) or cause
    message = str(cause).strip().split("\n", 1)[0].strip()
    if len(message) > 300:
        message = message[:300] + "…"
    name = type(cause).__name__
    return f"{name}: {message}" if message else name


def dependency_of(error: BaseException | None) -> str | None:
    """The dependency whose outage ``error`` comes from: the name that ``error``, or an
    exception that caused it, carries in its ``dependency`` attribute."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        name = getattr(error, "dependency", None)
        if isinstance(name, str):
            return name
        error = error.__cause__ or error.__context__
    return None


class JsonFormatter(logging.Formatter):
    """One JSON object a line, for log shippers: ``time`` (RFC 3339, UTC), ``level``,
    ``logger``, ``message``, and ``exc`` (the traceback) when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, str] = {
            "time": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exc"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry)


def logging_config(level: str, log_format: str) -> dict[str, Any]:
    """The ``logging.config.dictConfig`` of a server process (``coffer serve``, each worker, the
    audit writer): every line to stderr in ``log_format``, uvicorn's included."""
    formatter: dict[str, Any] = (
        {"()": JsonFormatter} if log_format == "json" else {"format": TEXT_FORMAT}
    )
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"coffer": formatter},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "coffer",
                "stream": "ext://sys.stderr",
            }
        },
        "root": {"level": level.upper(), "handlers": ["stderr"]},
        "loggers": {
            # uvicorn's lines (and its access log, when on) go the same way as the server's.
            **{
                name: {"handlers": [], "propagate": True}
                for name in ("uvicorn", "uvicorn.error", "uvicorn.access")
            },
            # The schema check each worker makes at start says nothing an operator needs.
            "alembic": {"level": "WARNING"},
        },
    }


def configure(level: str, log_format: str) -> None:
    """Set up this process's logging (``logging_config``)."""
    logging.config.dictConfig(logging_config(level, log_format))
