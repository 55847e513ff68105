"""What the row MAC of each authenticated table covers (docs/security.md, storage barrier).

Every row whose content decides authority or whether a key may be used carries a MAC, under a
purpose key of the root of trust, over the fields below: its content **and its identity and
owner**, so that a row cannot be forged, edited, or moved to another organisation, principal or
key. The fields are listed by name, in a fixed order, with the table's name first; ``canonical``
turns them into the bytes that are MACed. A test reads the schema and fails if a column of an
authenticated table is neither covered here nor listed as not deciding anything.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from coffer.domain.keys import Key
from coffer.domain.permissions import RoleBinding
from coffer.domain.tenants import Organisation, Principal

#: The columns of each authenticated table that the MAC covers, in order (the row's identity
#: first).
COVERED: dict[str, tuple[str, ...]] = {
    "organisations": ("identity", "kms_enabled", "shredded_at", "object_version"),
    "principals": ("identity", "kind", "platform_admin", "organisation_identity"),
    "tokens": (
        "identity", "principal_identity", "digest", "expires_at", "revoked_at", "object_version",
    ),
    "role_bindings": (
        "identity", "principal_identity", "organisation_identity", "policy", "scope_kind",
        "scope_identity",
    ),
    "keys": (
        "identity", "organisation_identity", "region", "project_identity", "key_type", "status",
        "export_allowed", "imported", "allow_rotation", "key_rotation_enabled",
        "rotation_period_days", "latest_version", "min_decryption_version",
        "deletion_scheduled_at", "object_version",
    ),
}  # fmt: skip

#: Tables whose rows are authenticated by the AES-GCM associated data of the blob they hold (a
#: blob moved to another row does not open), and the columns that associated data binds.
AEAD_BOUND: dict[str, tuple[str, ...]] = {
    "key_versions": ("key_identity", "version"),  # with the key's organisation and type
    "organisation_keks": ("organisation_identity",),
    "byok_wrapping_keys": (
        "identity",
        "organisation_identity",
        "region",
        "number",
        "created_at",
        "expires_at",
    ),
    "purpose_keys": ("purpose",),
}

#: Columns of authenticated tables that decide nothing: names, descriptions, labels, times of
#: creation, derived values (``next_rotation_at`` follows from the key's covered fields and is
#: only a hint for the scheduler, which checks the key itself), and the MAC.
NOT_COVERED: dict[str, frozenset[str]] = {
    "organisations": frozenset({"slug", "name", "created_at", "mac"}),
    "principals": frozenset({"name", "created_at", "mac"}),
    "tokens": frozenset({"created_at", "mac"}),
    "role_bindings": frozenset({"created_at", "mac"}),
    "keys": frozenset({"name", "slug", "description", "labels", "annotations", "next_rotation_at",
                       "created_at", "updated_at", "mac"}),
}  # fmt: skip


def _value(value: Any) -> Any:
    if isinstance(value, datetime):
        if value.tzinfo is None:  # SQLite hands back naive datetimes; every stored time is UTC
            value = value.replace(tzinfo=UTC)
        return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    if isinstance(value, bytes):
        return value.hex()
    if hasattr(value, "value") and not isinstance(value, bool | int | str):
        return value.value  # an enum
    return value


def canonical(table: str, values: tuple[Any, ...]) -> bytes:
    """The bytes a row's MAC is computed over: the table and the covered values, in order."""
    return json.dumps([table, *map(_value, values)], separators=(",", ":")).encode()


def organisation_fields(organisation: Organisation) -> tuple[Any, ...]:
    o = organisation
    return (o.identity, o.kms_enabled, o.shredded_at, o.object_version)


def principal_fields(principal: Principal) -> tuple[Any, ...]:
    p = principal
    return (p.identity, p.kind, p.platform_admin, p.organisation_identity)


def token_fields(
    identity: str,
    principal_identity: str,
    digest: bytes,
    expires_at: datetime | None,
    revoked_at: datetime | None,
    object_version: int,
) -> tuple[Any, ...]:
    return (identity, principal_identity, digest, expires_at, revoked_at, object_version)


def binding_fields(binding: RoleBinding) -> tuple[Any, ...]:
    b = binding
    return (b.identity, b.principal_identity, b.organisation_identity, b.policy, b.scope_kind,
            b.scope_identity)  # fmt: skip


def key_fields(key: Key) -> tuple[Any, ...]:
    k = key
    return (
        k.identity, k.organisation_identity, k.region, k.project_identity or "", k.key_type,
        k.status, k.export_allowed, k.imported, k.allow_rotation, k.key_rotation_enabled,
        k.rotation_period_days, k.latest_version, k.min_decryption_version,
        k.deletion_scheduled_at, k.object_version,
    )  # fmt: skip


#: The audit actions that change a row of each authenticated table (and so name its resource
#: and, since the storage barrier, its new ``objectVersion`` in their record).
CHANGE_ACTIONS: dict[str, tuple[str, ...]] = {
    "organisations": ("iam.organisation.create", "iam.organisation.enable_kms",
                      "iam.organisation.disable_kms", "iam.organisation.shred"),
    "tokens": ("iam.token.create", "iam.token.revoke"),
    "role_bindings": ("iam.role_binding.create", "iam.role_binding.delete"),
    "keys": ("kms.key.create", "kms.rotate", "kms.rotate.scheduled", "kms.rotation.update",
             "kms.versions.update", "kms.key.disable", "kms.key.enable", "kms.key.delete",
             "kms.key.cancel_deletion", "kms.key.purge"),
}  # fmt: skip
#: The action after which a row must no longer exist.
REMOVING_ACTIONS: dict[str, str] = {
    "role_bindings": "iam.role_binding.delete",
    "keys": "kms.key.purge",
}


#: The action after which a row must be revoked (records written before versions say no more).
REVOKING_ACTIONS: dict[str, str] = {"tokens": "iam.token.revoke"}


def rolled_back(
    table: str,
    stored_version: int | None,
    newest_action: str,
    recorded_version: int | None,
    *,
    revoked: bool = False,
) -> bool:
    """Whether a row (at ``stored_version``; ``None`` for rows without versions) is older than
    the newest change the audit trail records of it: a writer of the database put back an
    authentic but outdated row (an un-revoked token, a re-enabled key, a removed binding)."""
    if REMOVING_ACTIONS.get(table) == newest_action:
        return True
    if REVOKING_ACTIONS.get(table) == newest_action and not revoked:
        return True
    return (
        stored_version is not None
        and recorded_version is not None
        and stored_version < recorded_version
    )
