"""Changes: every write a request makes, as a value applied in the transaction of its audit record.

A service builds a change and hands it to its operation (``Operation.commit``); the audit log
applies it in the same transaction as the request's record (``AuditStore.append_audit``), in a
savepoint of its own, so a change is never stored without its record and a record that cannot be
written leaves no change. A change that is refused — a ``Conflict``, a row that moved, an
organisation shredded meanwhile — rolls back alone, and its record says so. Changes travel to the
audit writer process in a pickle: they hold domain values and bytes, and their ``apply`` runs on
a synchronous connection there.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Connection

from coffer.domain.keys import Key
from coffer.domain.permissions import RoleBinding
from coffer.domain.seal import RootGeneration, SealConfig, Wrapped
from coffer.domain.tenants import Organisation, Principal, Project
from coffer.errors import Conflict, NotFound, OrganisationShredded
from coffer.storage import schema, sql_root
from coffer.storage.sql_writes import (
    CHANGED_SINCE_READ,
    UPDATED_ELSEWHERE,
    add_version_statement,
    delete_key_statement,
    delete_versions_statement,
    expect_one,
    key_insert_statement,
    update_key_statement,
)


@dataclass(frozen=True, slots=True)
class AddOrganisation:
    """A new organisation and its KEK, wrapped by a live root key generation."""

    organisation: Organisation
    kek: Wrapped = field(repr=False)
    quiet_if_refused: bool = False

    def apply(self, conn: Connection) -> None:
        organisation = self.organisation
        conn.execute(
            schema.organisations.insert().values(
                identity=organisation.identity,
                slug=organisation.slug,
                name=organisation.name,
                kms_enabled=organisation.kms_enabled,
                created_at=organisation.created_at,
                object_version=organisation.object_version,
            )
        )
        conn.execute(
            schema.organisation_keks.insert().values(
                organisation_identity=organisation.identity,
                wrapped_kek=self.kek.blob,
                root_generation=self.kek.generation,
                created_at=organisation.created_at,
            )
        )
        sql_root.guard_generation(conn, self.kek.generation)


@dataclass(frozen=True, slots=True)
class SetKmsEnabled:
    """The organisation's feature gate, if the row is still as it was read."""

    organisation: Organisation
    quiet_if_refused: bool = False

    def apply(self, conn: Connection) -> None:
        table = schema.organisations
        result = conn.execute(
            table.update()
            .where(
                table.c.identity == self.organisation.identity,
                table.c.object_version == self.organisation.object_version - 1,
            )
            .values(
                kms_enabled=self.organisation.kms_enabled,
                object_version=self.organisation.object_version,
            )
        )
        if result.rowcount != 1:
            raise Conflict("the organisation was changed by another request; retry")


@dataclass(frozen=True, slots=True)
class ShredOrganisation:
    """Destroy the organisation's KEK and every key and version of it; mark it shredded."""

    identity: str
    at: datetime
    quiet_if_refused: bool = False

    def apply(self, conn: Connection) -> None:
        organisations, keys, versions = schema.organisations, schema.keys, schema.key_versions
        # The organisation row first: its lock orders this against key creations (AddKey).
        marked = conn.execute(
            organisations.update()
            .where(organisations.c.identity == self.identity, organisations.c.shredded_at.is_(None))
            .values(shredded_at=self.at)
        )
        if marked.rowcount != 1:
            exists = conn.scalar(
                select(organisations.c.identity).where(organisations.c.identity == self.identity)
            )
            if exists is None:
                raise NotFound("organisation not found")
            raise Conflict("this organisation was shredded already")
        owned = select(keys.c.identity).where(keys.c.organisation_identity == self.identity)
        conn.execute(versions.delete().where(versions.c.key_identity.in_(owned)))
        conn.execute(keys.delete().where(keys.c.organisation_identity == self.identity))
        conn.execute(
            schema.organisation_keks.delete().where(
                schema.organisation_keks.c.organisation_identity == self.identity
            )
        )


@dataclass(frozen=True, slots=True)
class AddProject:
    project: Project
    quiet_if_refused: bool = False

    def apply(self, conn: Connection) -> None:
        project = self.project
        conn.execute(
            schema.projects.insert().values(
                identity=project.identity,
                organisation_identity=project.organisation_identity,
                slug=project.slug,
                name=project.name,
                created_at=project.created_at,
            )
        )


@dataclass(frozen=True, slots=True)
class AddPrincipal:
    principal: Principal
    quiet_if_refused: bool = False

    def apply(self, conn: Connection) -> None:
        principal = self.principal
        conn.execute(
            schema.principals.insert().values(
                identity=principal.identity,
                kind=principal.kind.value,
                name=principal.name,
                platform_admin=principal.platform_admin,
                created_at=principal.created_at,
                organisation_identity=principal.organisation_identity,
            )
        )


@dataclass(frozen=True, slots=True)
class AddToken:
    """A token, by its digest (the token itself is never stored)."""

    identity: str
    principal_identity: str
    digest: bytes = field(repr=False)
    created_at: datetime
    expires_at: datetime | None
    quiet_if_refused: bool = False

    def apply(self, conn: Connection) -> None:
        conn.execute(
            schema.tokens.insert().values(
                identity=self.identity,
                principal_identity=self.principal_identity,
                digest=self.digest,
                created_at=self.created_at,
                expires_at=self.expires_at,
            )
        )


@dataclass(frozen=True, slots=True)
class RevokeToken:
    identity: str
    at: datetime
    quiet_if_refused: bool = False

    def apply(self, conn: Connection) -> None:
        table = schema.tokens
        conn.execute(
            table.update()
            .where(table.c.identity == self.identity, table.c.revoked_at.is_(None))
            .values(revoked_at=self.at)
        )


@dataclass(frozen=True, slots=True)
class AddBinding:
    binding: RoleBinding
    created_at: datetime
    quiet_if_refused: bool = False

    def apply(self, conn: Connection) -> None:
        binding = self.binding
        conn.execute(
            schema.role_bindings.insert().values(
                identity=binding.identity,
                principal_identity=binding.principal_identity,
                organisation_identity=binding.organisation_identity,
                policy=binding.policy,
                scope_kind=binding.scope_kind.value,
                scope_identity=binding.scope_identity,
                created_at=self.created_at,
            )
        )


@dataclass(frozen=True, slots=True)
class RemoveBinding:
    identity: str
    quiet_if_refused: bool = False

    def apply(self, conn: Connection) -> None:
        table = schema.role_bindings
        conn.execute(table.delete().where(table.c.identity == self.identity))


@dataclass(frozen=True, slots=True)
class AddKey:
    """A new key and its versions; ``Conflict`` if its slug is taken in its scope,
    ``OrganisationShredded`` if its organisation was shredded meanwhile."""

    key: Key
    wrapped_versions: Mapping[int, bytes] = field(repr=False)
    quiet_if_refused: bool = False

    def apply(self, conn: Connection) -> None:
        organisations = schema.organisations
        # Held until commit: a shredding of the organisation waits for this key, or this key
        # sees the organisation shredded (sql_root explains the pattern).
        shredded = conn.execute(
            select(organisations.c.shredded_at)
            .where(organisations.c.identity == self.key.organisation_identity)
            .with_for_update(read=True)
        ).scalar()
        if shredded is not None:
            raise OrganisationShredded()
        conn.execute(key_insert_statement(self.key))
        for version, blob in self.wrapped_versions.items():
            conn.execute(add_version_statement(self.key, version, blob))


@dataclass(frozen=True, slots=True)
class KeyWrite:
    """A lifecycle change of one key: ``update`` (at ``objectVersion - 1``) with an optional
    new version (number, wrapped material), or ``delete`` (purge, if still pending at its
    ``objectVersion``). ``Conflict`` if the key moved since it was read."""

    update: Key | None = None
    new_version: tuple[int, bytes] | None = None
    delete: Key | None = None
    #: Refused (the key moved: another node did it first) leaves no audit record either.
    quiet_if_refused: bool = False

    def __repr__(self) -> str:
        key = self.update or self.delete
        identity = key.identity if key is not None else "-"
        return f"KeyWrite(key={identity!r}, new_version={self.new_version is not None})"

    def apply(self, conn: Connection) -> None:
        if self.update is not None:
            expect_one(conn.execute(update_key_statement(self.update)), UPDATED_ELSEWHERE)
            if self.new_version is not None:
                version, wrapped = self.new_version
                conn.execute(add_version_statement(self.update, version, wrapped))
        if self.delete is not None:
            conn.execute(delete_versions_statement(self.delete))
            expect_one(conn.execute(delete_key_statement(self.delete)), CHANGED_SINCE_READ)


@dataclass(frozen=True, slots=True)
class BeginRootRotation:
    """Store a new root key generation as the active one (``Conflict`` if a rotation is under
    way, or another began first)."""

    generation: RootGeneration
    seal: SealConfig
    quiet_if_refused: bool = False

    def apply(self, conn: Connection) -> None:
        sql_root.begin_rotation(conn, self.generation, self.seal)


@dataclass(frozen=True, slots=True)
class FinishRootRotation:
    """Retire every generation before the active one; refused (``RotationIncomplete``, with no
    record) while a blob is still wrapped by one of them."""

    at: datetime
    quiet_if_refused: bool = True

    def apply(self, conn: Connection) -> None:
        sql_root.finish_rotation(conn, self.at)


@dataclass(frozen=True, slots=True)
class ChangeSet:
    """Several changes of one request, all or none."""

    changes: Sequence[Any]
    quiet_if_refused: bool = False

    def apply(self, conn: Connection) -> None:
        for change in self.changes:
            change.apply(conn)
