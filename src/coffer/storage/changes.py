"""Changes: every write a request makes, as a value applied in the transaction of its audit record.

A service builds a change and hands it to its operation (``Operation.commit``); the audit log
applies it in the same transaction as the request's record (``AuditStore.append_audit``), in a
savepoint of its own, so a change is never stored without its record and a record that cannot be
written leaves no change. A change that is refused — a ``Conflict``, a row that moved, an
organisation shredded meanwhile — rolls back alone, and its record says so. Changes travel to the
audit writer process in a pickle: they hold domain values and bytes, and their ``apply`` runs on
a synchronous connection there. Every authenticated row a change writes is written with its MAC
(``coffer.domain.integrity``), computed there over exactly what is written; a change that
updates such a row reads it first and refuses if its MAC is not the row's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, ClassVar

from sqlalchemy import select
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from coffer.domain import integrity
from coffer.domain.keys import Key
from coffer.domain.permissions import RoleBinding
from coffer.domain.seal import RootGeneration, SealConfig, Wrapped
from coffer.domain.tenants import Organisation, Principal, Project
from coffer.errors import Conflict, KeyIntegrityError, NotFound, OrganisationShredded
from coffer.storage import schema, sql_root
from coffer.storage.repositories import Macs, WrappingKeyRecord
from coffer.storage.rows import organisation_of, utc_or_none
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

    @property
    def object_version(self) -> int | None:
        return self.organisation.object_version

    def apply(self, conn: Connection, macs: Macs) -> None:
        organisation = self.organisation
        conn.execute(
            schema.organisations.insert().values(
                identity=organisation.identity,
                slug=organisation.slug,
                name=organisation.name,
                kms_enabled=organisation.kms_enabled,
                created_at=organisation.created_at,
                object_version=organisation.object_version,
                mac=macs.of("organisations", integrity.organisation_fields(organisation)),
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

    @property
    def object_version(self) -> int | None:
        return self.organisation.object_version

    def apply(self, conn: Connection, macs: Macs) -> None:
        table = schema.organisations
        organisation = self.organisation
        result = conn.execute(
            table.update()
            .where(
                table.c.identity == organisation.identity,
                table.c.object_version == organisation.object_version - 1,
            )
            .values(
                kms_enabled=organisation.kms_enabled,
                object_version=organisation.object_version,
                mac=macs.of("organisations", integrity.organisation_fields(organisation)),
            )
        )
        if result.rowcount != 1:
            raise Conflict("the organisation was changed by another request; retry")


@dataclass(frozen=True, slots=True)
class ShredOrganisation:
    """Destroy the organisation's KEK and every key and version of it; mark it shredded."""

    identity: str
    at: datetime
    #: Its version after the change, for the audit record (as the service read it, plus one).
    object_version: int | None = None
    quiet_if_refused: bool = False

    def apply(self, conn: Connection, macs: Macs) -> None:
        organisations, keys, versions = schema.organisations, schema.keys, schema.key_versions
        # The organisation row first: its lock orders this against key creations (AddKey).
        conn.execute(
            organisations.update()
            .where(organisations.c.identity == self.identity)
            .values(identity=organisations.c.identity)
        )
        row = conn.execute(
            select(organisations).where(organisations.c.identity == self.identity)
        ).first()
        if row is None:
            raise NotFound("organisation not found")
        if row.shredded_at is not None:
            raise Conflict("this organisation was shredded already")
        stored = organisation_of(row)
        authentic = macs.verify(
            "organisations", integrity.organisation_fields(stored), _bytes(row.mac)
        )
        # A row that is not Coffer's is shredded all the same, but none of its values is
        # vouched for by the new MAC: the feature gate is closed.
        shredded = replace(
            stored,
            kms_enabled=stored.kms_enabled and authentic,
            object_version=row.object_version + 1,
            shredded_at=self.at,
        )
        conn.execute(
            organisations.update()
            .where(organisations.c.identity == self.identity)
            .values(
                shredded_at=self.at,
                kms_enabled=shredded.kms_enabled,
                object_version=shredded.object_version,
                mac=macs.of("organisations", integrity.organisation_fields(shredded)),
            )
        )
        owned = select(keys.c.identity).where(keys.c.organisation_identity == self.identity)
        conn.execute(versions.delete().where(versions.c.key_identity.in_(owned)))
        conn.execute(keys.delete().where(keys.c.organisation_identity == self.identity))
        conn.execute(
            schema.byok_wrapping_keys.delete().where(
                schema.byok_wrapping_keys.c.organisation_identity == self.identity
            )
        )
        conn.execute(
            schema.organisation_keks.delete().where(
                schema.organisation_keks.c.organisation_identity == self.identity
            )
        )


@dataclass(frozen=True, slots=True)
class AddProject:
    project: Project
    quiet_if_refused: bool = False
    object_version: ClassVar[None] = None

    def apply(self, conn: Connection, macs: Macs) -> None:
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
    object_version: ClassVar[None] = None

    def apply(self, conn: Connection, macs: Macs) -> None:
        principal = self.principal
        conn.execute(
            schema.principals.insert().values(
                identity=principal.identity,
                kind=principal.kind.value,
                name=principal.name,
                platform_admin=principal.platform_admin,
                created_at=principal.created_at,
                organisation_identity=principal.organisation_identity,
                mac=macs.of("principals", integrity.principal_fields(principal)),
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
    object_version: ClassVar[int] = 1

    def apply(self, conn: Connection, macs: Macs) -> None:
        fields = integrity.token_fields(
            self.identity, self.principal_identity, self.digest, self.expires_at, None, 1
        )
        conn.execute(
            schema.tokens.insert().values(
                identity=self.identity,
                principal_identity=self.principal_identity,
                digest=self.digest,
                created_at=self.created_at,
                expires_at=self.expires_at,
                object_version=1,
                mac=macs.of("tokens", fields),
            )
        )


@dataclass(frozen=True, slots=True)
class RevokeToken:
    identity: str
    at: datetime
    #: Its version after the change, for the audit record (as the service read it, plus one).
    object_version: int | None = None
    quiet_if_refused: bool = False

    def apply(self, conn: Connection, macs: Macs) -> None:
        table = schema.tokens
        row = conn.execute(
            select(table).where(table.c.identity == self.identity).with_for_update()
        ).first()
        if row is None or row.revoked_at is not None:
            return
        expires_at = utc_or_none(row.expires_at)
        stored = integrity.token_fields(
            row.identity, row.principal_identity, bytes(row.digest), expires_at, None,
            row.object_version,
        )  # fmt: skip
        if not macs.verify("tokens", stored, _bytes(row.mac)):
            raise KeyIntegrityError()  # not a row Coffer wrote: nothing to revoke from it
        revoked = integrity.token_fields(
            row.identity, row.principal_identity, bytes(row.digest), expires_at, self.at,
            row.object_version + 1,
        )  # fmt: skip
        conn.execute(
            table.update()
            .where(table.c.identity == self.identity)
            .values(
                revoked_at=self.at,
                object_version=row.object_version + 1,
                mac=macs.of("tokens", revoked),
            )
        )


@dataclass(frozen=True, slots=True)
class AddBinding:
    binding: RoleBinding
    created_at: datetime
    quiet_if_refused: bool = False
    object_version: ClassVar[None] = None

    def apply(self, conn: Connection, macs: Macs) -> None:
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
                mac=macs.of("role_bindings", integrity.binding_fields(binding)),
            )
        )


@dataclass(frozen=True, slots=True)
class RemoveBinding:
    identity: str
    quiet_if_refused: bool = False
    object_version: ClassVar[None] = None

    def apply(self, conn: Connection, macs: Macs) -> None:
        table = schema.role_bindings
        conn.execute(table.delete().where(table.c.identity == self.identity))


@dataclass(frozen=True, slots=True)
class AddKey:
    """A new key and its versions; ``Conflict`` if its slug is taken in its scope,
    ``OrganisationShredded`` if its organisation was shredded meanwhile."""

    key: Key
    wrapped_versions: Mapping[int, bytes] = field(repr=False)
    quiet_if_refused: bool = False

    @property
    def object_version(self) -> int | None:
        return self.key.object_version

    def apply(self, conn: Connection, macs: Macs) -> None:
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
        conn.execute(key_insert_statement(self.key, _key_mac(macs, self.key)))
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

    @property
    def object_version(self) -> int | None:
        return self.update.object_version if self.update is not None else None

    def __repr__(self) -> str:
        key = self.update or self.delete
        identity = key.identity if key is not None else "-"
        return f"KeyWrite(key={identity!r}, new_version={self.new_version is not None})"

    def apply(self, conn: Connection, macs: Macs) -> None:
        if self.update is not None:
            statement = update_key_statement(self.update, _key_mac(macs, self.update))
            expect_one(conn.execute(statement), UPDATED_ELSEWHERE)
            if self.new_version is not None:
                version, wrapped = self.new_version
                conn.execute(add_version_statement(self.update, version, wrapped))
        if self.delete is not None:
            conn.execute(delete_versions_statement(self.delete))
            expect_one(conn.execute(delete_key_statement(self.delete)), CHANGED_SINCE_READ)


@dataclass(frozen=True, slots=True)
class AddWrappingKey:
    """The next BYOK wrapping key of an organisation in a region, unless another node made that
    number first (then nothing is written, and the caller reads the one that was)."""

    record: WrappingKeyRecord
    quiet_if_refused: bool = False
    object_version: ClassVar[None] = None

    def apply(self, conn: Connection, macs: Macs) -> None:
        r = self.record
        organisations = schema.organisations
        # As AddKey: ordered against a shredding of the organisation.
        shredded = conn.execute(
            select(organisations.c.shredded_at)
            .where(organisations.c.identity == r.organisation_identity)
            .with_for_update(read=True)
        ).scalar()
        if shredded is not None:
            raise OrganisationShredded()
        insert = schema.byok_wrapping_keys.insert().values(
            identity=r.identity, organisation_identity=r.organisation_identity, region=r.region,
            number=r.number, wrapped_private=r.wrapped_private, created_at=r.created_at,
            expires_at=r.expires_at,
        )  # fmt: skip
        try:
            with conn.begin_nested():
                conn.execute(insert)
        except IntegrityError:
            pass  # another node made this number first


@dataclass(frozen=True, slots=True)
class BeginRootRotation:
    """Store a new root key generation as the active one (``Conflict`` if a rotation is under
    way, or another began first)."""

    generation: RootGeneration
    seal: SealConfig
    quiet_if_refused: bool = False
    object_version: ClassVar[None] = None

    def apply(self, conn: Connection, macs: Macs) -> None:
        sql_root.begin_rotation(conn, self.generation, self.seal)


@dataclass(frozen=True, slots=True)
class FinishRootRotation:
    """Retire every generation before the active one; refused (``RotationIncomplete``, with no
    record) while a blob is still wrapped by one of them."""

    at: datetime
    quiet_if_refused: bool = True
    object_version: ClassVar[None] = None

    def apply(self, conn: Connection, macs: Macs) -> None:
        sql_root.finish_rotation(conn, self.at)


@dataclass(frozen=True, slots=True)
class ChangeSet:
    """Several changes of one request, all or none."""

    changes: Sequence[Any]
    quiet_if_refused: bool = False
    object_version: ClassVar[None] = None

    def apply(self, conn: Connection, macs: Macs) -> None:
        for change in self.changes:
            change.apply(conn, macs)


def _key_mac(macs: Macs, key: Key) -> bytes:
    return macs.of("keys", integrity.key_fields(key))


def _bytes(value: Any) -> bytes | None:
    return bytes(value) if value is not None else None
