"""initial schema

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "organisations",
        sa.Column("identity", sa.String(length=64), nullable=False),
        sa.Column("slug", sa.String(length=63), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("kms_enabled", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("object_version", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("identity", name=op.f("pk_organisations")),
        sa.UniqueConstraint("slug", name=op.f("uq_organisations_slug")),
    )
    op.create_table(
        "principals",
        sa.Column("identity", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("platform_admin", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("identity", name=op.f("pk_principals")),
    )
    op.create_table(
        "keys",
        sa.Column("identity", sa.String(length=64), nullable=False),
        sa.Column("organisation_identity", sa.String(length=64), nullable=False),
        sa.Column("region", sa.String(length=64), nullable=False),
        sa.Column("project_identity", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("slug", sa.String(length=63), nullable=False),
        sa.Column("description", sa.String(length=1024), nullable=True),
        sa.Column("labels", sa.JSON(), nullable=False),
        sa.Column("annotations", sa.JSON(), nullable=False),
        sa.Column("key_type", sa.String(length=32), nullable=False),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("export_allowed", sa.Boolean(), nullable=False),
        sa.Column("imported", sa.Boolean(), nullable=False),
        sa.Column("allow_rotation", sa.Boolean(), nullable=False),
        sa.Column("key_rotation_enabled", sa.Boolean(), nullable=False),
        sa.Column("rotation_period_days", sa.Integer(), nullable=True),
        sa.Column("latest_version", sa.Integer(), nullable=False),
        sa.Column("min_decryption_version", sa.Integer(), nullable=False),
        sa.Column("deletion_scheduled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("object_version", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["organisation_identity"],
            ["organisations.identity"],
            name=op.f("fk_keys_organisation_identity_organisations"),
        ),
        sa.PrimaryKeyConstraint("identity", name=op.f("pk_keys")),
        sa.UniqueConstraint(
            "organisation_identity",
            "region",
            "project_identity",
            "slug",
            name=op.f("uq_keys_organisation_identity_region_project_identity_slug"),
        ),
    )
    with op.batch_alter_table("keys", schema=None) as batch_op:
        batch_op.create_index(
            "ix_keys_scope_created",
            [
                "organisation_identity",
                "region",
                "project_identity",
                "created_at",
                "identity",
            ],
            unique=False,
        )

    op.create_table(
        "organisation_keks",
        sa.Column("organisation_identity", sa.String(length=64), nullable=False),
        sa.Column("wrapped_kek", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["organisation_identity"],
            ["organisations.identity"],
            name=op.f("fk_organisation_keks_organisation_identity_organisations"),
        ),
        sa.PrimaryKeyConstraint("organisation_identity", name=op.f("pk_organisation_keks")),
    )
    op.create_table(
        "projects",
        sa.Column("identity", sa.String(length=64), nullable=False),
        sa.Column("organisation_identity", sa.String(length=64), nullable=False),
        sa.Column("slug", sa.String(length=63), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["organisation_identity"],
            ["organisations.identity"],
            name=op.f("fk_projects_organisation_identity_organisations"),
        ),
        sa.PrimaryKeyConstraint("identity", name=op.f("pk_projects")),
        sa.UniqueConstraint(
            "organisation_identity",
            "slug",
            name=op.f("uq_projects_organisation_identity_slug"),
        ),
    )
    op.create_table(
        "role_bindings",
        sa.Column("identity", sa.String(length=64), nullable=False),
        sa.Column("principal_identity", sa.String(length=64), nullable=False),
        sa.Column("organisation_identity", sa.String(length=64), nullable=False),
        sa.Column("policy", sa.String(length=64), nullable=False),
        sa.Column("scope_kind", sa.String(length=32), nullable=False),
        sa.Column("scope_identity", sa.String(length=64), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["organisation_identity"],
            ["organisations.identity"],
            name=op.f("fk_role_bindings_organisation_identity_organisations"),
        ),
        sa.ForeignKeyConstraint(
            ["principal_identity"],
            ["principals.identity"],
            name=op.f("fk_role_bindings_principal_identity_principals"),
        ),
        sa.PrimaryKeyConstraint("identity", name=op.f("pk_role_bindings")),
    )
    with op.batch_alter_table("role_bindings", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_role_bindings_principal_identity"),
            ["principal_identity"],
            unique=False,
        )

    op.create_table(
        "tokens",
        sa.Column("identity", sa.String(length=64), nullable=False),
        sa.Column("principal_identity", sa.String(length=64), nullable=False),
        sa.Column("digest", sa.LargeBinary(length=32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["principal_identity"],
            ["principals.identity"],
            name=op.f("fk_tokens_principal_identity_principals"),
        ),
        sa.PrimaryKeyConstraint("identity", name=op.f("pk_tokens")),
        sa.UniqueConstraint("digest", name=op.f("uq_tokens_digest")),
    )
    op.create_table(
        "key_versions",
        sa.Column("key_identity", sa.String(length=64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("wrapped_material", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["key_identity"],
            ["keys.identity"],
            name=op.f("fk_key_versions_key_identity_keys"),
        ),
        sa.PrimaryKeyConstraint("key_identity", "version", name=op.f("pk_key_versions")),
    )


def downgrade() -> None:
    op.drop_table("key_versions")
    op.drop_table("tokens")
    with op.batch_alter_table("role_bindings", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_role_bindings_principal_identity"))

    op.drop_table("role_bindings")
    op.drop_table("projects")
    op.drop_table("organisation_keks")
    with op.batch_alter_table("keys", schema=None) as batch_op:
        batch_op.drop_index("ix_keys_scope_created")

    op.drop_table("keys")
    op.drop_table("principals")
    op.drop_table("organisations")
