"""The relational schema (SQLAlchemy Core), one definition for SQLite and PostgreSQL.

Changes to it are made only through a migration in ``storage/migrations/versions``.
Times are stored as timezone-aware UTC datetimes. A key's project is stored as ``""`` for
organisation-scoped keys so that the slug uniqueness constraint also holds for them (NULLs are
distinct in unique constraints on both engines).
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

Timestamp = DateTime(timezone=True)

organisations = Table(
    "organisations",
    metadata,
    Column("identity", String(64), primary_key=True),
    Column("slug", String(63), nullable=False, unique=True),
    Column("name", String(255), nullable=False),
    Column("kms_enabled", Boolean, nullable=False),
    Column("created_at", Timestamp, nullable=False),
    Column("object_version", Integer, nullable=False),
    # Set when the organisation was crypto-shredded: its KEK and keys are gone for good.
    Column("shredded_at", Timestamp, nullable=True),
    Column("mac", LargeBinary(32), nullable=True),
)

organisation_keks = Table(
    "organisation_keks",
    metadata,
    Column(
        "organisation_identity",
        String(64),
        ForeignKey("organisations.identity"),
        primary_key=True,
    ),
    Column("wrapped_kek", LargeBinary, nullable=False),
    Column("created_at", Timestamp, nullable=False),
    # The root key generation that wrapped it (a root rotation rewraps the older ones).
    Column("root_generation", Integer, nullable=False, server_default="1", index=True),
)

#: Cache invalidations between server processes on one SQLite file (PostgreSQL uses NOTIFY).
change_events = Table(
    "change_events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("payload", String(200), nullable=False),
    Column("created_at", Timestamp, nullable=False),
)

#: BYOK (spec §5.11): a region's RSA-4096 import key, private part wrapped by the root key.
#: BYOK wrapping keys (RSA-4096), one series per organisation and region: number 1, 2, … (a new
#: one when the newest is past ``expires_at``). The private key is wrapped by the organisation's
#: KEK, with associated data binding every other column, so a row is authentic or does not open.
byok_wrapping_keys = Table(
    "byok_wrapping_keys",
    metadata,
    Column("identity", String(64), primary_key=True),
    Column(
        "organisation_identity", String(64), ForeignKey("organisations.identity"), nullable=False
    ),
    Column("region", String(64), nullable=False),
    Column("number", Integer, nullable=False),
    Column("wrapped_private", LargeBinary, nullable=False),
    Column("created_at", Timestamp, nullable=False),
    Column("expires_at", Timestamp, nullable=False),
    UniqueConstraint("organisation_identity", "region", "number"),
)

# --- the root of trust (docs/security.md) ---------------------------------------------------------

#: The one row of this installation: its identity, its seal's non-secret settings, and the root
#: key generation that wraps what is written now.
installation = Table(
    "installation",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("identity", String(64), nullable=False),
    Column("seal_type", String(16), nullable=False),
    Column("seal_config", JSON, nullable=False),
    Column("active_generation", Integer, nullable=False),
    Column("created_at", Timestamp, nullable=False),
    # 0: rows without MACs and plain token digests (before 0008); 1: the storage barrier;
    # 2: keyed audit links.
    Column("storage_version", Integer, nullable=False, server_default="0"),
    # The first audit record whose link is keyed (set by the upgrade to storage version 2).
    Column("audit_keyed_from", BigInteger, nullable=True),
)

#: One row per generation of the root key: its check value, and its key sealed for other nodes
#: (Shamir: under the unseal key; file seal: under the previous generation while rotating).
root_keys = Table(
    "root_keys",
    metadata,
    Column("generation", Integer, primary_key=True, autoincrement=False),
    Column("seal_type", String(16), nullable=False),
    Column("check_value", LargeBinary, nullable=False),
    Column("sealed_key", LargeBinary, nullable=True),
    Column("created_at", Timestamp, nullable=False),
    Column("retired_at", Timestamp, nullable=True),
    # Where the seal keeps the key (PKCS #11: the key object's label, unique per attempt).
    Column("seal_ref", String(200), nullable=True),
)

#: Random keys for one purpose each (the audit checkpoint signing key, …), wrapped by the root.
purpose_keys = Table(
    "purpose_keys",
    metadata,
    Column("purpose", String(64), primary_key=True),
    Column("root_generation", Integer, nullable=False),
    Column("wrapped", LargeBinary, nullable=False),
    Column("created_at", Timestamp, nullable=False),
)

projects = Table(
    "projects",
    metadata,
    Column("identity", String(64), primary_key=True),
    Column(
        "organisation_identity",
        String(64),
        ForeignKey("organisations.identity"),
        nullable=False,
    ),
    Column("slug", String(63), nullable=False),
    Column("name", String(255), nullable=False),
    Column("created_at", Timestamp, nullable=False),
    UniqueConstraint("organisation_identity", "slug"),
)

principals = Table(
    "principals",
    metadata,
    Column("identity", String(64), primary_key=True),
    Column("kind", String(32), nullable=False),
    Column("name", String(255), nullable=False),
    Column("platform_admin", Boolean, nullable=False),
    Column("created_at", Timestamp, nullable=False),
    # A service account's organisation (users, platform administrators included, have none).
    Column(
        "organisation_identity", String(64), ForeignKey("organisations.identity"), nullable=True
    ),
    Column("mac", LargeBinary(32), nullable=True),
    Index("ix_principals_organisation_name", "organisation_identity", "name", unique=True),
)

tokens = Table(
    "tokens",
    metadata,
    Column("identity", String(64), primary_key=True),
    Column(
        "principal_identity",
        String(64),
        ForeignKey("principals.identity"),
        nullable=False,
    ),
    # HMAC(k_tokens, SHA-256(token)) (crypto/integrity.py); the token itself is never stored.
    Column("digest", LargeBinary(32), nullable=False, unique=True),
    Column("created_at", Timestamp, nullable=False),
    Column("expires_at", Timestamp, nullable=True),
    Column("revoked_at", Timestamp, nullable=True),
    Column("object_version", Integer, nullable=False, server_default="1"),
    Column("mac", LargeBinary(32), nullable=True),
)

role_bindings = Table(
    "role_bindings",
    metadata,
    Column("identity", String(64), primary_key=True),
    Column(
        "principal_identity",
        String(64),
        ForeignKey("principals.identity"),
        nullable=False,
        index=True,
    ),
    Column(
        "organisation_identity",
        String(64),
        ForeignKey("organisations.identity"),
        nullable=False,
    ),
    Column("policy", String(64), nullable=False),
    Column("scope_kind", String(32), nullable=False),
    Column("scope_identity", String(64), nullable=True),
    Column("created_at", Timestamp, nullable=False),
    Column("mac", LargeBinary(32), nullable=True),
)

keys = Table(
    "keys",
    metadata,
    Column("identity", String(64), primary_key=True),
    Column(
        "organisation_identity",
        String(64),
        ForeignKey("organisations.identity"),
        nullable=False,
    ),
    Column("region", String(64), nullable=False),
    Column("project_identity", String(64), nullable=False),
    Column("name", String(255), nullable=False),
    Column("slug", String(63), nullable=False),
    Column("description", String(1024), nullable=True),
    Column("labels", JSON, nullable=False),
    Column("annotations", JSON, nullable=False),
    Column("key_type", String(32), nullable=False),
    Column("status", String(32), nullable=False),
    Column("export_allowed", Boolean, nullable=False),
    Column("imported", Boolean, nullable=False),
    Column("allow_rotation", Boolean, nullable=False),
    Column("key_rotation_enabled", Boolean, nullable=False),
    Column("rotation_period_days", Integer, nullable=True),
    Column("latest_version", Integer, nullable=False),
    Column("min_decryption_version", Integer, nullable=False),
    Column("deletion_scheduled_at", Timestamp, nullable=True, index=True),
    # When automatic rotation is next due (derived from the key; stored so the scheduler can find
    # due keys with one indexed range scan).
    Column("next_rotation_at", Timestamp, nullable=True, index=True),
    Column("created_at", Timestamp, nullable=False),
    Column("updated_at", Timestamp, nullable=False),
    Column("object_version", Integer, nullable=False),
    # HMAC of the covered fields under a purpose key (domain/integrity.py).
    Column("mac", LargeBinary(32), nullable=True),
    UniqueConstraint("organisation_identity", "region", "project_identity", "slug"),
    # Listing walks one scope in (createdAt, identity) order.
    Index(
        "ix_keys_scope_created",
        "organisation_identity",
        "region",
        "project_identity",
        "created_at",
        "identity",
    ),
)

key_versions = Table(
    "key_versions",
    metadata,
    Column("key_identity", String(64), ForeignKey("keys.identity"), primary_key=True),
    Column("version", Integer, primary_key=True),
    # Material wrapped by the organisation KEK, bound to (organisation, key, version, type).
    Column("wrapped_material", LargeBinary, nullable=False),
    Column("created_at", Timestamp, nullable=False),
    # Encryptions reserved against the version's budget (an upper bound of those made).
    Column("encryptions", BigInteger, nullable=False, server_default="0"),
)

# --- audit ----------------------------------------------------------------------------------------
# One hash chain over every record of this database: ``hash = SHA-256(prev_hash ‖ record)``, where
# ``record`` is the canonical JSON stored beside the columns that queries filter on.

audit_events = Table(
    "audit_events",
    metadata,
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("event_id", String(64), nullable=False, unique=True),
    Column("created_at", Timestamp, nullable=False),
    Column("organisation_identity", String(64), nullable=True),
    Column("project_identity", String(64), nullable=True),
    Column("action", String(64), nullable=False),
    Column("principal_identity", String(64), nullable=True),
    Column("resource_identity", String(64), nullable=True),
    Column("status", Integer, nullable=False),
    Column("record", Text, nullable=False),
    Column("prev_hash", LargeBinary(32), nullable=False),
    Column("hash", LargeBinary(32), nullable=False),
    Index("ix_audit_events_organisation_seq", "organisation_identity", "seq"),
    Index("ix_audit_events_project_seq", "organisation_identity", "project_identity", "seq"),
    Index("ix_audit_events_created_at", "created_at"),
    # The newest change of an object (a row rolled back to an older version is told by it).
    Index("ix_audit_events_resource_changes", "resource_identity", "action", "seq"),
)

# The newest link of the chain. Every append moves it in the same transaction, compare-and-swap:
# one writer at a time extends the chain, whichever node it runs on.
audit_chain_head = Table(
    "audit_chain_head",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("seq", BigInteger, nullable=False),
    Column("hash", LargeBinary(32), nullable=False),
)

# Signed (Ed25519) statements "the chain had this hash at this sequence number": a truncated tail
# or a rewritten chain no longer matches them.
audit_checkpoints = Table(
    "audit_checkpoints",
    metadata,
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("hash", LargeBinary(32), nullable=False),
    Column("created_at", Timestamp, nullable=False),
    Column("signature", LargeBinary(64), nullable=False),
    # Format 2 (keyed links): the previous checkpoint's digest, the first keyed record, and the
    # anchor file the checkpoint was appended to. Format 1 checkpoints have none.
    Column("prev", LargeBinary(32), nullable=True),
    Column("keyed_from", BigInteger, nullable=True),
    Column("anchor", String(64), nullable=True),
)

# Signed statements "records up to this sequence number were pruned on purpose": the only way a
# chain may start after record 1.
audit_prunes = Table(
    "audit_prunes",
    metadata,
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("created_at", Timestamp, nullable=False),
    Column("signature", LargeBinary(64), nullable=False),
)
