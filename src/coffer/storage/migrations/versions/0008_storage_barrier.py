"""the storage barrier: row MACs, token versions, keyed token digests

Revision ID: 0008
Revises: 0007

Rows written before this revision have no MAC and tokens are stored by plain SHA-256 digests
(``installation.storage_version`` 0). Both need a purpose key of the root of trust, so the
server moves them over (``coffer.storage.barrier.upgrade``) once its root is open —
at start, or at the first unseal — and sets ``storage_version`` to 1.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

MACED = ("organisations", "principals", "tokens", "role_bindings", "keys")


def upgrade() -> None:
    for table in MACED:
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("mac", sa.LargeBinary(length=32), nullable=True))
    with op.batch_alter_table("tokens") as batch:
        batch.add_column(
            sa.Column("object_version", sa.Integer(), nullable=False, server_default="1")
        )
    with op.batch_alter_table("installation") as batch:
        batch.add_column(
            sa.Column("storage_version", sa.Integer(), nullable=False, server_default="0")
        )
    op.create_index(
        "ix_audit_events_resource_changes", "audit_events", ["resource_identity", "action", "seq"]
    )


def downgrade() -> None:
    op.drop_index("ix_audit_events_resource_changes", "audit_events")
    with op.batch_alter_table("installation") as batch:
        batch.drop_column("storage_version")
    with op.batch_alter_table("tokens") as batch:
        batch.drop_column("object_version")
    for table in MACED:
        with op.batch_alter_table(table) as batch:
            batch.drop_column("mac")
