"""The database as a dependency: a call that fails because the database cannot be reached or
used now (the connection refused, lost or timed out, the disk full) is an outage, logged once as
the database's state (``coffer.logs``), and the requests it fails answer 503 without a line each.
Any other failure of the driver is a fault: its 503 is logged with the traceback."""

from __future__ import annotations

from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from coffer.errors import Unavailable
from coffer.logs import dependency

DATABASE = dependency("database")

_OUTAGES = (OperationalError, InterfaceError, PoolTimeout, OSError)


def is_outage(exc: BaseException) -> bool:
    return isinstance(exc, _OUTAGES) or (isinstance(exc, DBAPIError) and exc.connection_invalidated)


def unavailable(exc: BaseException, message: str | None = None) -> Unavailable:
    """The ``Unavailable`` to raise from ``exc``, a failed call to the database."""
    if is_outage(exc):
        DATABASE.failed(exc)
        return Unavailable(message, dependency=DATABASE.name)
    return Unavailable(message)


def reached() -> None:
    """A call to the database succeeded: if it was down, it is back."""
    DATABASE.ok()
