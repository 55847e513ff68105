"""Upgrades: a node older than the schema it finds refuses to start, says why, changes nothing."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import text

from tests.e2e.processes import free_port, open_database, run_coffer


def test_a_node_older_than_the_database_schema_refuses_to_start_and_changes_nothing(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "data"
    assert run_coffer("init", "--data-dir", data_dir).returncode == 0
    engine = open_database(data_dir)
    with engine.begin() as conn:  # as a newer Coffer's migration would leave it
        conn.execute(text("UPDATE alembic_version SET version_num = '0999'"))
    done = run_coffer("serve", "--data-dir", data_dir, "--port", str(free_port()))
    assert done.returncode == 1
    assert "made by a newer Coffer" in done.stderr
    assert "upgrade this node" in done.stderr
    assert "Traceback" not in done.stderr
    with engine.connect() as conn:
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == "0999"
    engine.dispose()
