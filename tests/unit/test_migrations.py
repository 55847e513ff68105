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

    from coffer.storage.database import _alembic_config, plain_engine

    url = f"sqlite+aiosqlite:///{tmp_path / 'coffer.db'}"
    engine = plain_engine(url)
    try:
        command.upgrade(_alembic_config(engine), "0001")
    finally:
        engine.dispose()
    assert schema_revision(url)[0] == "0001"
    upgrade(url)
    current, head = schema_revision(url)
    assert current == head


def test_keys_made_before_the_lifecycle_revision_get_their_rotation_due_time(
    tmp_path: Path,
) -> None:
    from datetime import UTC, datetime, timedelta

    from alembic import command
    from sqlalchemy import text

    from coffer.storage.database import _alembic_config, plain_engine

    url = f"sqlite+aiosqlite:///{tmp_path / 'coffer.db'}"
    engine = plain_engine(url)
    made = datetime(2026, 1, 1, tzinfo=UTC)
    try:
        command.upgrade(_alembic_config(engine), "0001")
        with engine.begin() as conn:
            conn.execute(
                text("INSERT INTO organisations VALUES ('org-a', 'a', 'A', 1, :t, 1)"), {"t": made}
            )
            for identity, enabled in (("kms-on", 1), ("kms-off", 0)):
                conn.execute(
                    text(
                        "INSERT INTO keys (identity, organisation_identity, region, project_identity,"
                        " name, slug, labels, annotations, key_type, status, export_allowed, imported,"
                        " allow_rotation, key_rotation_enabled, rotation_period_days, latest_version,"
                        " min_decryption_version, created_at, updated_at, object_version) VALUES"
                        " (:i, 'org-a', 'nl-01', '', :i, :i, '{}', '{}', 'aes256-gcm96', 'active',"
                        " 0, 0, 0, :e, 30, 1, 1, :t, :t, 1)"
                    ),
                    {"i": identity, "e": enabled, "t": made},
                )
                conn.execute(
                    text("INSERT INTO key_versions VALUES (:i, 1, x'00', :t)"),
                    {"i": identity, "t": made},
                )
        upgrade(url)
        with engine.connect() as conn:
            due = dict(conn.execute(text("SELECT identity, next_rotation_at FROM keys")).all())
    finally:
        engine.dispose()
    assert due["kms-off"] is None
    assert str(due["kms-on"]).startswith(str((made + timedelta(days=30)).replace(tzinfo=None)))
