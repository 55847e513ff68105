"""key lifecycle: due times for rotation and purge

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("keys", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("next_rotation_at", sa.DateTime(timezone=True), nullable=True)
        )
        batch_op.create_index("ix_keys_next_rotation_at", ["next_rotation_at"], unique=False)
        batch_op.create_index(
            "ix_keys_deletion_scheduled_at", ["deletion_scheduled_at"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("keys", schema=None) as batch_op:
        batch_op.drop_index("ix_keys_deletion_scheduled_at")
        batch_op.drop_index("ix_keys_next_rotation_at")
        batch_op.drop_column("next_rotation_at")
