"""BYOK wrapping keys per organisation and region, rotated; the regional ones dropped

Revision ID: 0009
Revises: 0008

A blob wrapped for one organisation must not import into another: each organisation gets its
own wrapping keys (made on first use, wrapped by its KEK). The regional keys of before are
dropped: a blob made with one of them no longer imports (fetch the organisation's key again).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "byok_wrapping_keys",
        sa.Column("identity", sa.String(length=64), nullable=False),
        sa.Column("organisation_identity", sa.String(length=64), nullable=False),
        sa.Column("region", sa.String(length=64), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("wrapped_private", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["organisation_identity"],
            ["organisations.identity"],
            name=op.f("fk_byok_wrapping_keys_organisation_identity_organisations"),
        ),
        sa.PrimaryKeyConstraint("identity", name=op.f("pk_byok_wrapping_keys")),
        sa.UniqueConstraint(
            "organisation_identity",
            "region",
            "number",
            name=op.f("uq_byok_wrapping_keys_organisation_identity_region_number"),
        ),
    )
    op.drop_table("wrapping_keys")


def downgrade() -> None:
    op.create_table(
        "wrapping_keys",
        sa.Column("region", sa.String(length=64), nullable=False),
        sa.Column("wrapped_private", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("root_generation", sa.Integer(), server_default="1", nullable=False),
        sa.PrimaryKeyConstraint("region", name=op.f("pk_wrapping_keys")),
    )
    op.create_index(op.f("ix_wrapping_keys_root_generation"), "wrapping_keys", ["root_generation"])
    op.drop_table("byok_wrapping_keys")
