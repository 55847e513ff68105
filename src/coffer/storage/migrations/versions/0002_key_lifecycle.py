"""key lifecycle: due times for rotation and purge

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

from datetime import timedelta

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
    _fill_next_rotation()


def _fill_next_rotation() -> None:
    """Keys made before this revision that rotate automatically get their due time."""
    keys = sa.table(
        "keys",
        sa.column("identity", sa.String),
        sa.column("key_rotation_enabled", sa.Boolean),
        sa.column("rotation_period_days", sa.Integer),
        sa.column("imported", sa.Boolean),
        sa.column("allow_rotation", sa.Boolean),
        sa.column("latest_version", sa.Integer),
        sa.column("next_rotation_at", sa.DateTime(timezone=True)),
    )
    versions = sa.table(
        "key_versions",
        sa.column("key_identity", sa.String),
        sa.column("version", sa.Integer),
        sa.column("created_at", sa.DateTime(timezone=True)),
    )
    bind = op.get_bind()
    due = bind.execute(
        sa.select(keys.c.identity, keys.c.rotation_period_days, versions.c.created_at)
        .join(
            versions,
            sa.and_(
                versions.c.key_identity == keys.c.identity,
                versions.c.version == keys.c.latest_version,
            ),
        )
        .where(
            keys.c.key_rotation_enabled.is_(True),
            keys.c.rotation_period_days.is_not(None),
            sa.or_(keys.c.imported.is_(False), keys.c.allow_rotation.is_(True)),
        )
    ).all()
    for identity, days, last_rotated in due:
        bind.execute(
            keys.update()
            .where(keys.c.identity == identity)
            .values(next_rotation_at=last_rotated + timedelta(days=days))
        )


def downgrade() -> None:
    with op.batch_alter_table("keys", schema=None) as batch_op:
        batch_op.drop_index("ix_keys_deletion_scheduled_at")
        batch_op.drop_index("ix_keys_next_rotation_at")
        batch_op.drop_column("next_rotation_at")
