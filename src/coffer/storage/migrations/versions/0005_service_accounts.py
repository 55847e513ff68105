"""IAM administration: service accounts belong to an organisation, with a name unique in it

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("principals", schema=None) as batch_op:
        batch_op.add_column(sa.Column("organisation_identity", sa.String(length=64), nullable=True))
        batch_op.create_foreign_key(
            batch_op.f("fk_principals_organisation_identity_organisations"),
            "organisations",
            ["organisation_identity"],
            ["identity"],
        )
        batch_op.create_index(
            "ix_principals_organisation_name", ["organisation_identity", "name"], unique=True
        )


def downgrade() -> None:
    with op.batch_alter_table("principals", schema=None) as batch_op:
        batch_op.drop_index("ix_principals_organisation_name")
        batch_op.drop_constraint(
            batch_op.f("fk_principals_organisation_identity_organisations"), type_="foreignkey"
        )
        batch_op.drop_column("organisation_identity")
