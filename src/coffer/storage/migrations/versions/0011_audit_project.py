"""The project of each audit record as a column

Revision ID: 0011
Revises: 0010

A token limited to one project (an OpenID Connect token naming it) reads only that project's
records, so the project becomes a query column like the organisation (taken from the record's
``projectId``; verification checks that the two agree).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("audit_events") as batch:
        batch.add_column(sa.Column("project_identity", sa.String(length=64), nullable=True))
    if op.get_bind().dialect.name == "postgresql":
        op.execute("UPDATE audit_events SET project_identity = (record::jsonb ->> 'projectId')")
    else:
        op.execute("UPDATE audit_events SET project_identity = json_extract(record, '$.projectId')")
    op.create_index(
        "ix_audit_events_project_seq",
        "audit_events",
        ["organisation_identity", "project_identity", "seq"],
    )


def downgrade() -> None:
    op.drop_index("ix_audit_events_project_seq", table_name="audit_events")
    with op.batch_alter_table("audit_events") as batch:
        batch.drop_column("project_identity")
