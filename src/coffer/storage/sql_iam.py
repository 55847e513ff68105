"""``IamStore`` on SQLAlchemy Core: the reads of IAM administration (organisations, projects,
service accounts, tokens, role bindings), each authenticated row checked before it is shown or
used (``coffer.storage.verified``). Its writes are changes (``coffer.storage.changes``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.engine import Row

from coffer.domain.permissions import RoleBinding
from coffer.domain.tenants import Organisation, Principal, PrincipalKind, Project, TokenInfo
from coffer.storage import schema, verified
from coffer.storage.rows import project_of, utc, utc_or_none
from coffer.storage.sql import SqlStore


def _token(row: Row[Any]) -> TokenInfo:
    return TokenInfo(
        identity=row.identity,
        principal_identity=row.principal_identity,
        created_at=utc(row.created_at),
        expires_at=utc_or_none(row.expires_at),
        revoked_at=utc_or_none(row.revoked_at),
        object_version=row.object_version,
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
        return await self._store.read_verified(
            lambda conn, checker: verified.organisations(
                conn, checker, conn.execute(query).all(), current=False
            )
        )

    async def projects(self, organisation_identity: str) -> Sequence[Project]:
        table = schema.projects
        query = (
            select(table)
            .where(table.c.organisation_identity == organisation_identity)
            .order_by(table.c.created_at, table.c.identity)
        )
        return [project_of(row) for row in await self._rows(query)]

    async def _principals(self, query: Any) -> list[Principal]:
        return await self._store.read_verified(
            lambda conn, checker: verified.principals(checker, conn.execute(query).all())
        )

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
        return await self._principals(query)

    async def find_service_account(self, organisation_identity: str, ref: str) -> Principal | None:
        """A service account of the organisation, by identity or by name."""
        table = schema.principals
        query = select(table).where(
            table.c.organisation_identity == organisation_identity,
            table.c.kind == PrincipalKind.SERVICE_ACCOUNT.value,
            or_(table.c.identity == ref, table.c.name == ref),
        )
        found = sorted(await self._principals(query), key=lambda p: p.identity != ref)
        return found[0] if found else None

    async def find_principal(self, identity: str) -> Principal | None:
        table = schema.principals
        found = await self._principals(select(table).where(table.c.identity == identity))
        return found[0] if found else None

    @staticmethod
    def _tokens_of(organisation_identity: str) -> Any:
        tokens, principals = schema.tokens, schema.principals
        return (
            select(tokens)
            .join(principals, principals.c.identity == tokens.c.principal_identity)
            .where(principals.c.organisation_identity == organisation_identity)
        )

    async def _tokens(self, query: Any) -> list[TokenInfo]:
        # Current: a token put back unrevoked is not listed as usable.
        rows = await self._store.read_verified(
            lambda conn, checker: verified.tokens(
                conn, checker, conn.execute(query).all(), current=True
            )
        )
        return [_token(row) for row in rows]

    async def platform_admins(self) -> Sequence[Principal]:
        """The platform administrators (oldest first)."""
        table = schema.principals
        query = (
            select(table)
            .where(table.c.platform_admin.is_(True), table.c.organisation_identity.is_(None))
            .order_by(table.c.created_at, table.c.identity)
        )
        # Checked rows only: a principal a database writer made an administrator is not one.
        return [p for p in await self._principals(query) if p.platform_admin]

    async def platform_tokens(self) -> Sequence[TokenInfo]:
        """The tokens of the platform administrators."""
        admins = [p.identity for p in await self.platform_admins()]
        tokens = schema.tokens
        query = (
            select(tokens)
            .where(tokens.c.principal_identity.in_(admins))
            .order_by(tokens.c.created_at, tokens.c.identity)
        )
        return [replace(t, platform=True) for t in await self._tokens(query)]

    async def tokens(self, organisation_identity: str) -> Sequence[TokenInfo]:
        """The tokens of the organisation's service accounts."""
        query = self._tokens_of(organisation_identity).order_by(
            schema.tokens.c.created_at, schema.tokens.c.identity
        )
        return await self._tokens(query)

    async def find_token(self, organisation_identity: str, identity: str) -> TokenInfo | None:
        query = self._tokens_of(organisation_identity).where(schema.tokens.c.identity == identity)
        found = await self._tokens(query)
        return found[0] if found else None

    async def role_bindings(self, organisation_identity: str) -> Sequence[RoleBinding]:
        table = schema.role_bindings
        query = (
            select(table)
            .where(table.c.organisation_identity == organisation_identity)
            .order_by(table.c.created_at, table.c.identity)
        )
        return await self._store.read_verified(
            lambda conn, checker: verified.bindings(
                conn, checker, conn.execute(query).all(), current=True
            )
        )

    async def has_key(self, organisation_identity: str, key_identity: str) -> bool:
        """Whether the organisation has a key with identity ``key_identity``."""
        table = schema.keys
        query = select(table).where(
            table.c.organisation_identity == organisation_identity,
            table.c.identity == key_identity,
        )
        return bool(
            await self._store.read_verified(
                lambda conn, checker: verified.key_rows(
                    conn, checker, conn.execute(query).all(), current=False
                )
            )
        )
