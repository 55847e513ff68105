"""``IamStore`` on SQLAlchemy Core: the reads of IAM administration (organisations, projects,
service accounts, tokens, role bindings), each authenticated row checked before it is shown or
used (``coffer.storage.verified``). Its writes are changes (``coffer.storage.changes``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.engine import Connection, Row

from coffer.domain.paging import EVERYTHING, Paged, PageRequest
from coffer.domain.permissions import RoleBinding
from coffer.domain.tenants import Organisation, Principal, PrincipalKind, Project, TokenInfo
from coffer.storage import schema, verified
from coffer.storage.paging import cut, paged
from coffer.storage.repositories import Integrity
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

    async def organisations(
        self, member: str | None, page: PageRequest = EVERYTHING
    ) -> Paged[Organisation]:
        """Every organisation (``member`` ``None``), or those ``member`` has a binding in."""
        table = schema.organisations
        query = select(table)
        if member is not None:
            bound = select(schema.role_bindings.c.organisation_identity).where(
                schema.role_bindings.c.principal_identity == member
            )
            query = query.where(table.c.identity.in_(bound))
        query = paged(query, table.c.created_at, table.c.identity, page)

        def read(conn: Connection, checker: Integrity) -> Paged[Organisation]:
            rows, next_after = cut(conn.execute(query).all(), page)
            return Paged(verified.organisations(conn, checker, rows, current=False), next_after)

        return await self._store.read_verified(read)

    async def projects(
        self, organisation_identity: str, page: PageRequest = EVERYTHING
    ) -> Paged[Project]:
        table = schema.projects
        query = paged(select(table).where(table.c.organisation_identity == organisation_identity),
                      table.c.created_at, table.c.identity, page)  # fmt: skip
        rows, next_after = cut(await self._rows(query), page)
        return Paged([project_of(row) for row in rows], next_after)

    async def _principals(self, query: Any, page: PageRequest = EVERYTHING) -> Paged[Principal]:
        def read(conn: Connection, checker: Integrity) -> Paged[Principal]:
            rows, next_after = cut(conn.execute(query).all(), page)
            return Paged(verified.principals(checker, rows), next_after)

        return await self._store.read_verified(read)

    async def service_accounts(
        self, organisation_identity: str, page: PageRequest = EVERYTHING
    ) -> Paged[Principal]:
        table = schema.principals
        query = select(table).where(
            table.c.organisation_identity == organisation_identity,
            table.c.kind == PrincipalKind.SERVICE_ACCOUNT.value,
        )
        return await self._principals(
            paged(query, table.c.created_at, table.c.identity, page), page
        )

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

    async def _tokens(self, query: Any, page: PageRequest = EVERYTHING) -> Paged[TokenInfo]:
        # Current: a token put back unrevoked is not listed as usable.
        def read(conn: Connection, checker: Integrity) -> Paged[TokenInfo]:
            rows, next_after = cut(conn.execute(query).all(), page)
            checked = verified.tokens(conn, checker, rows, current=True)
            return Paged([_token(row) for row in checked], next_after)

        return await self._store.read_verified(read)

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

    async def platform_tokens(self, page: PageRequest = EVERYTHING) -> Paged[TokenInfo]:
        """The tokens of the platform administrators."""
        admins = [p.identity for p in await self.platform_admins()]
        tokens = schema.tokens
        query = select(tokens).where(tokens.c.principal_identity.in_(admins))
        found = await self._tokens(paged(query, tokens.c.created_at, tokens.c.identity, page), page)
        return Paged([replace(t, platform=True) for t in found], found.next_after)

    async def tokens(
        self, organisation_identity: str, page: PageRequest = EVERYTHING
    ) -> Paged[TokenInfo]:
        """The tokens of the organisation's service accounts."""
        tokens = schema.tokens
        query = paged(self._tokens_of(organisation_identity), tokens.c.created_at,
                      tokens.c.identity, page)  # fmt: skip
        return await self._tokens(query, page)

    async def find_token(self, organisation_identity: str, identity: str) -> TokenInfo | None:
        query = self._tokens_of(organisation_identity).where(schema.tokens.c.identity == identity)
        found = await self._tokens(query)
        return found[0] if found else None

    async def role_bindings(
        self, organisation_identity: str, page: PageRequest = EVERYTHING
    ) -> Paged[RoleBinding]:
        table = schema.role_bindings
        query = paged(select(table).where(table.c.organisation_identity == organisation_identity),
                      table.c.created_at, table.c.identity, page)  # fmt: skip

        def read(conn: Connection, checker: Integrity) -> Paged[RoleBinding]:
            rows, next_after = cut(conn.execute(query).all(), page)
            return Paged(verified.bindings(conn, checker, rows, current=True), next_after)

        return await self._store.read_verified(read)

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
