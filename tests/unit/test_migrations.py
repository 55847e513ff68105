"""The schema is made only by migrations, and the migrations make exactly the declared schema."""

from __future__ import annotations

from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine

from coffer.storage.database import schema_revision, upgrade
from coffer.storage.schema import metadata


def test_migrations_build_the_declared_schema(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'coffer.db'}"
    upgrade(url)
    current, head = schema_revision(url)
    assert current == head is not None
    engine = create_engine(f"sqlite:///{tmp_path / 'coffer.db'}")
    try:
        with engine.connect() as conn:
            assert compare_metadata(MigrationContext.configure(conn), metadata) == []
    finally:
        engine.dispose()


def test_a_database_of_the_first_revision_upgrades_in_place(tmp_path: Path) -> None:
    from alembic import command

    from coffer.storage.database import _alembic_config, _sync_engine

    url = f"sqlite+aiosqlite:///{tmp_path / 'coffer.db'}"
    engine = _sync_engine(url)
    try:
        command.upgrade(_alembic_config(engine), "0001")
    finally:
        engine.dispose()
    assert schema_revision(url)[0] == "0001"
    upgrade(url)
    current, head = schema_revision(url)
    assert current == head
