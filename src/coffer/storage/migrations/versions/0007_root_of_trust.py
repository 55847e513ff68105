"""the root of trust: installation, root key generations, purpose keys, crypto-shredding

Revision ID: 0007
Revises: 0006

Rows that the root key wrapped before this revision belong to its first generation. The
installation row and the first generation's check value need the root key, so ``coffer serve``
(or any command that opens the data directory) writes them after this revision, once it has
checked the key (``coffer.bootstrap``).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "installation",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("identity", sa.String(length=64), nullable=False),
        sa.Column("seal_type", sa.String(length=16), nullable=False),
        sa.Column("seal_config", sa.JSON(), nullable=False),
        sa.Column("active_generation", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_installation")),
    )
    op.create_table(
        "root_keys",
        sa.Column("generation", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("seal_type", sa.String(length=16), nullable=False),
        sa.Column("check_value", sa.LargeBinary(), nullable=False),
        sa.Column("sealed_key", sa.LargeBinary(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("retired_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("seal_ref", sa.String(length=200), nullable=True),
        sa.PrimaryKeyConstraint("generation", name=op.f("pk_root_keys")),
    )
    op.create_table(
        "purpose_keys",
        sa.Column("purpose", sa.String(length=64), nullable=False),
        sa.Column("root_generation", sa.Integer(), nullable=False),
        sa.Column("wrapped", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("purpose", name=op.f("pk_purpose_keys")),
    )
    for table in ("organisation_keks", "wrapping_keys"):
        with op.batch_alter_table(table) as batch:
            batch.add_column(
                sa.Column("root_generation", sa.Integer(), nullable=False, server_default="1")
            )
            batch.create_index(f"ix_{table}_root_generation", ["root_generation"])
    with op.batch_alter_table("organisations") as batch:
        batch.add_column(sa.Column("shredded_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("organisations") as batch:
        batch.drop_column("shredded_at")
    for table in ("organisation_keks", "wrapping_keys"):
        with op.batch_alter_table(table) as batch:
            batch.drop_index(f"ix_{table}_root_generation")
            batch.drop_column("root_generation")
    op.drop_table("purpose_keys")
    op.drop_table("root_keys")
    op.drop_table("installation")
