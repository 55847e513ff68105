"""``IamStore`` on SQLAlchemy Core: the reads of IAM administration (organisations, projects,
service accounts, tokens, role bindings). Its writes go through ``SqlTransaction``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.engine import Row

from coffer.domain.permissions import RoleBinding
from coffer.domain.tenants import Organisation, Principal, PrincipalKind, Project, TokenInfo
from coffer.storage import schema
from coffer.storage.rows import (
    binding_of,
    identity_first,
    organisation_of,
    principal_of,
    project_of,
    utc,
    utc_or_none,
)
from coffer.storage.sql import SqlStore


def _token(row: Row[Any]) -> TokenInfo:
    return TokenInfo(
        identity=row.identity,
        principal_identity=row.principal_identity,
        created_at=utc(row.created_at),
        expires_at=utc_or_none(row.expires_at),
        revoked_at=utc_or_none(row.revoked_at),
    )


class SqlIamStore:
    def __init__(self, store: SqlStore) -> None:
        self._store = store

    async def _rows(self, query: Any) -> Sequence[Row[Any]]:
        async with self._store.reading() as conn:
            return (await conn.execute(query)).all()

    async def organisations(self, member: str | None) -> Sequence[Organisation]:
        """Every organisation (``member`` ``None``), or those ``member`` has a binding in."""
        table = schema.organisations
        query = select(table).order_by(table.c.created_at, table.c.identity)
        if member is not None:
            bound = select(schema.role_bindings.c.organisation_identity).where(
                schema.role_bindings.c.principal_identity == member
            )
            query = query.where(table.c.identity.in_(bound))
        return [organisation_of(row) for row in await self._rows(query)]

    async def projects(self, organisation_identity: str) -> Sequence[Project]:
        table = schema.projects
        query = (
            select(table)
            .where(table.c.organisation_identity == organisation_identity)
            .order_by(table.c.created_at, table.c.identity)
        )
        return [project_of(row) for row in await self._rows(query)]

    async def service_accounts(self, organisation_identity: str) -> Sequence[Principal]:
        table = schema.principals
        query = (
            select(table)
            .where(
                table.c.organisation_identity == organisation_identity,
                table.c.kind == PrincipalKind.SERVICE_ACCOUNT.value,
            )
            .order_by(table.c.created_at, table.c.identity)
        )
        return [principal_of(row) for row in await self._rows(query)]

    async def find_service_account(self, organisation_identity: str, ref: str) -> Principal | None:
        """A service account of the organisation, by identity or by name."""
        table = schema.principals
        query = select(table).where(
            table.c.organisation_identity == organisation_identity,
            table.c.kind == PrincipalKind.SERVICE_ACCOUNT.value,
            or_(table.c.identity == ref, table.c.name == ref),
        )
        rows = identity_first(await self._rows(query), ref)
        return principal_of(rows[0]) if rows else None

    async def find_principal(self, identity: str) -> Principal | None:
        table = schema.principals
        rows = await self._rows(select(table).where(table.c.identity == identity))
        return principal_of(rows[0]) if rows else None

    @staticmethod
    def _tokens_of(organisation_identity: str) -> Any:
        tokens, principals = schema.tokens, schema.principals
        return (
            select(tokens)
            .join(principals, principals.c.identity == tokens.c.principal_identity)
            .where(principals.c.organisation_identity == organisation_identity)
        )

    async def tokens(self, organisation_identity: str) -> Sequence[TokenInfo]:
        """The tokens of the organisation's service accounts."""
        query = self._tokens_of(organisation_identity).order_by(
            schema.tokens.c.created_at, schema.tokens.c.identity
        )
        return [_token(row) for row in await self._rows(query)]

    async def find_token(self, organisation_identity: str, identity: str) -> TokenInfo | None:
        query = self._tokens_of(organisation_identity).where(schema.tokens.c.identity == identity)
        rows = await self._rows(query)
        return _token(rows[0]) if rows else None

    async def role_bindings(self, organisation_identity: str) -> Sequence[RoleBinding]:
        table = schema.role_bindings
        query = (
            select(table)
            .where(table.c.organisation_identity == organisation_identity)
            .order_by(table.c.created_at, table.c.identity)
        )
        return [binding_of(row) for row in await self._rows(query)]

    async def has_key(self, organisation_identity: str, key_identity: str) -> bool:
        """Whether the organisation has a key with identity ``key_identity``."""
        table = schema.keys
        query = select(table.c.identity).where(
            table.c.organisation_identity == organisation_identity,
            table.c.identity == key_identity,
        )
        return bool(await self._rows(query))
