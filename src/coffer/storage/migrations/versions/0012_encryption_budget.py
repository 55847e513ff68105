"""Encryptions counted per key version

Revision ID: 0012
Revises: 0011

AES-GCM and ChaCha20-Poly1305 versions take random 96-bit nonces, so one version may encrypt only
so many times (NIST SP 800-38D: 2^32). Each version counts the encryptions reserved against its
budget; versions made before start at 0 (what they encrypted before is not known).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("key_versions") as batch:
        batch.add_column(
            sa.Column("encryptions", sa.BigInteger(), nullable=False, server_default="0")
        )


def downgrade() -> None:
    with op.batch_alter_table("key_versions") as batch:
        batch.drop_column("encryptions")
