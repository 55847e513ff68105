"""Organisations and their administrators."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from coffer.crypto.wrapping import WRAPPING_KEY_BYTES, kek_aad
from coffer.domain.identity import (
    BINDING_PREFIX,
    ORGANISATION_PREFIX,
    TOKEN_PREFIX,
    USER_PREFIX,
    new_identity,
)
from coffer.domain.permissions import RoleBinding, ScopeKind
from coffer.domain.seal import Wrapped
from coffer.domain.slugs import slugify
from coffer.domain.tenants import Organisation, Principal, PrincipalKind
from coffer.iam.tokens import new_token, token_digest
from coffer.service.root import RootOfTrust
from coffer.storage.repositories import Store

#: What the administrator ``coffer init`` makes may do in the first organisation.
ADMIN_POLICIES = ("kms:FullAccess", "audit:ReadAccess")


@dataclass(frozen=True, slots=True)
class Bootstrapped:
    """What ``coffer init`` shows once: the organisation and the administrator's token."""

    organisation: Organisation
    principal: Principal
    token: str = field(repr=False)
    #: The installation's identity (set by ``coffer init``).
    installation: str = ""
    #: Shamir seal: the unseal key shares (base64), shown once and never stored.
    unseal_keys: tuple[str, ...] = field(default=(), repr=False)


class TenantService:
    def __init__(self, store: Store, root: RootOfTrust, clock: Callable[[], datetime]) -> None:
        self._store = store
        self._root = root
        self._clock = clock

    def _new_organisation(self, name: str, slug: str | None, kms_enabled: bool) -> Organisation:
        return Organisation(
            identity=new_identity(ORGANISATION_PREFIX),
            slug=slug or slugify(name),
            name=name,
            kms_enabled=kms_enabled,
            created_at=self._clock(),
            object_version=1,
        )

    async def create_organisation(self, name: str, slug: str, *, kms_enabled: bool) -> Organisation:
        """A new organisation with its own KEK (``Conflict`` if the slug is taken)."""
        organisation = self._new_organisation(name, slug, kms_enabled)

        async def write(kek: Wrapped) -> Organisation:
            async with self._store.transaction() as tx:
                await tx.add_organisation(organisation, kek)
            return organisation

        # Each organisation has its own KEK, stored only wrapped by the root key; destroying it
        # crypto-shreds every key of the organisation.
        return await self._root.write_wrapped(
            os.urandom(WRAPPING_KEY_BYTES), kek_aad(organisation.identity), write
        )

    async def bootstrap(self, organisation_name: str = "Default") -> Bootstrapped:
        """The first organisation (slug ``default``, KMS on) and a platform administrator whose
        token holds ``kms:FullAccess`` and ``audit:ReadAccess`` on it, in one transaction."""
        now = self._clock()
        principal = Principal(
            identity=new_identity(USER_PREFIX),
            kind=PrincipalKind.USER,
            name="admin",
            platform_admin=True,
            created_at=now,
        )
        token = new_token()
        organisation = self._new_organisation(organisation_name, "default", kms_enabled=True)

        async def write(kek: Wrapped) -> None:
            async with self._store.transaction() as tx:
                await tx.add_organisation(organisation, kek)
                await tx.add_principal(principal)
                await tx.add_token(
                    new_identity(TOKEN_PREFIX),
                    principal.identity,
                    token_digest(token),
                    now,
                    None,
                )
                for policy in ADMIN_POLICIES:
                    await tx.add_binding(
                        RoleBinding(
                            identity=new_identity(BINDING_PREFIX),
                            principal_identity=principal.identity,
                            organisation_identity=organisation.identity,
                            policy=policy,
                            scope_kind=ScopeKind.ORGANISATION,
                            scope_identity=None,
                        ),
                        now,
                    )

        await self._root.write_wrapped(
            os.urandom(WRAPPING_KEY_BYTES), kek_aad(organisation.identity), write
        )
        return Bootstrapped(organisation, principal, token)
