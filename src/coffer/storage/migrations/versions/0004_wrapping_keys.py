"""BYOK: one RSA-4096 wrapping key per region, its private part wrapped by the root key

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "wrapping_keys",
        sa.Column("region", sa.String(length=64), nullable=False),
        sa.Column("wrapped_private", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("region", name=op.f("pk_wrapping_keys")),
    )


def downgrade() -> None:
    op.drop_table("wrapping_keys")
