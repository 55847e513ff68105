"""Engines and migrations.

SQLite runs in WAL mode with ``synchronous=FULL``: a commit that returned is on disk, so an
acknowledged key survives a crash of the process or the machine.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

_MIGRATIONS = Path(__file__).with_name("migrations")


def _sync_url(url: str) -> str:
    parsed = make_url(url)
    if parsed.drivername == "sqlite+aiosqlite":
        return parsed.set(drivername="sqlite").render_as_string(hide_password=False)
    return url


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA foreign_keys=ON")
    # Deleted rows (a purged key's wrapped material) are overwritten, not left in free pages.
    cursor.execute("PRAGMA secure_delete=ON")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


#: How long connecting to PostgreSQL may take before the request answers 503.
CONNECT_TIMEOUT_SECONDS = 5


def _pool_options(url: str, pool_size: int) -> dict[str, Any]:
    if make_url(url).get_backend_name() != "postgresql":
        return {}
    # A connection the database dropped (a restart, a fail-over) is found out before use and
    # replaced, so requests succeed again by themselves once the database is back.
    return {
        "pool_size": pool_size,
        "max_overflow": pool_size,
        "pool_pre_ping": True,
        "pool_timeout": CONNECT_TIMEOUT_SECONDS,
        # Keepalives find a half-open connection (a database host that vanished) in about a
        # minute instead of the system's two hours.
        "connect_args": {
            "connect_timeout": CONNECT_TIMEOUT_SECONDS,
            "keepalives": 1,
            "keepalives_idle": 30,
            "keepalives_interval": 10,
            "keepalives_count": 3,
        },
    }


def create_engine_for(url: str, pool_size: int = 10) -> AsyncEngine:
    # Parameters stay out of logs and error texts: they include token digests and wrapped keys.
    engine = create_async_engine(url, hide_parameters=True, **_pool_options(url, pool_size))
    if engine.dialect.name == "sqlite":
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
    return engine


def create_sync_engine_for(url: str) -> Engine:
    """A synchronous engine on the same database, for work done in a worker thread.

    On SQLite its transactions begin with ``BEGIN IMMEDIATE`` (the write lock is taken at once,
    so a writer never has to upgrade a read snapshot) and SQLAlchemy, not the driver, emits them,
    which savepoints need (the driver's own implicit transactions break them).
    """
    engine = create_engine(_sync_url(url), hide_parameters=True, **_pool_options(url, 2))
    if engine.dialect.name == "sqlite":

        def connect(dbapi_connection: Any, record: Any) -> None:
            _sqlite_pragmas(dbapi_connection, record)
            dbapi_connection.isolation_level = None  # the driver issues no BEGIN of its own

        def begin(connection: Any) -> None:
            connection.exec_driver_sql("BEGIN IMMEDIATE")

        event.listen(engine, "connect", connect)
        event.listen(engine, "begin", begin)
    return engine


def create_read_engine_for(url: str) -> Engine | None:
    """On SQLite, a synchronous engine for reads done in a worker thread (``SqlStore``); on
    PostgreSQL ``None``: its async driver needs no thread. The driver issues no transaction
    statements of its own: readers say ``BEGIN`` (a deferred, read-only snapshot in WAL mode)."""
    if make_url(url).get_backend_name() != "sqlite":
        return None
    engine = create_engine(_sync_url(url), hide_parameters=True, pool_size=4, max_overflow=4)

    def connect(dbapi_connection: Any, record: Any) -> None:
        _sqlite_pragmas(dbapi_connection, record)
        dbapi_connection.isolation_level = None

    event.listen(engine, "connect", connect)
    return engine


def plain_engine(url: str) -> Engine:
    """A synchronous engine without a pool, for one-off work (migrations, backups)."""
    engine = create_engine(_sync_url(url), poolclass=NullPool, hide_parameters=True)
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def _alembic_config(engine: Engine | None) -> Any:
    # Alembic is imported only when migrations are needed: it costs ~0.4 s at start.
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS))
    config.attributes["engine"] = engine
    return config


def upgrade(url: str) -> None:
    """Bring the schema at ``url`` to the newest migration."""
    from alembic import command

    engine = plain_engine(url)
    try:
        command.upgrade(_alembic_config(engine), "head")
    finally:
        engine.dispose()


def is_known_revision(revision: str) -> bool:
    """Whether this code knows the schema revision ``revision`` (a newer Coffer made it if not)."""
    from alembic.script import ScriptDirectory
    from alembic.util import CommandError

    config = _alembic_config(None)
    try:
        return ScriptDirectory.from_config(config).get_revision(revision) is not None
    except CommandError:
        return False


class DatabaseUnreadable(Exception):
    """The database cannot be opened or is not a database."""


def read_only_engine(url: str) -> Engine:
    parsed = make_url(_sync_url(url))
    if parsed.get_backend_name() == "sqlite" and parsed.database:
        # Looking must not write: a plain connection would switch the file to WAL mode.
        return create_engine(
            f"sqlite:///file:{parsed.database}?mode=ro&uri=true",
            poolclass=NullPool,
            hide_parameters=True,
        )
    return create_engine(parsed, poolclass=NullPool, hide_parameters=True)


def schema_revision(url: str) -> tuple[str | None, str | None]:
    """(current revision of the database, newest revision this code knows), without writing.

    Raises ``DatabaseUnreadable`` if the database cannot be read.
    """
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    engine = read_only_engine(url)
    try:
        head = ScriptDirectory.from_config(_alembic_config(engine)).get_current_head()
        with engine.connect() as connection:
            current = MigrationContext.configure(connection).get_current_revision()
        return current, head
    except DBAPIError as exc:
        raise DatabaseUnreadable(str(exc.orig)) from None
    finally:
        engine.dispose()
