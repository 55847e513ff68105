"""Keyed audit links and anchored checkpoints

Revision ID: 0010
Revises: 0009

Records from now on are linked with HMAC-SHA-256 under a purpose key (the server notes the first
one in ``installation.audit_keyed_from`` when it first opens the root: storage version 2), and
checkpoints name the one before them, the first keyed record, and the anchor file outside the
database they were appended to. Records and checkpoints written before keep their format and
still verify.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("installation") as batch:
        batch.add_column(sa.Column("audit_keyed_from", sa.BigInteger(), nullable=True))
    with op.batch_alter_table("audit_checkpoints") as batch:
        batch.add_column(sa.Column("prev", sa.LargeBinary(length=32), nullable=True))
        batch.add_column(sa.Column("keyed_from", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("anchor", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("audit_checkpoints") as batch:
        batch.drop_column("anchor")
        batch.drop_column("keyed_from")
        batch.drop_column("prev")
    with op.batch_alter_table("installation") as batch:
        batch.drop_column("audit_keyed_from")
