"""Organisations and their administrators."""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from coffer.crypto.wrapping import WRAPPING_KEY_BYTES, kek_aad
from coffer.domain.identity import (
    BINDING_PREFIX,
    ORGANISATION_PREFIX,
    TOKEN_PREFIX,
    USER_PREFIX,
    new_identity,
)
from coffer.domain.permissions import RoleBinding, ScopeKind
from coffer.domain.slugs import slugify
from coffer.domain.tenants import Organisation, Principal, PrincipalKind
from coffer.iam.tokens import new_token
from coffer.service.root import RootOfTrust
from coffer.storage.changes import AddBinding, AddOrganisation, AddPrincipal, AddToken, ChangeSet
from coffer.storage.repositories import Change

#: What the administrator ``coffer init`` makes may do in the first organisation.
ADMIN_POLICIES = ("kms:FullAccess", "audit:ReadAccess")


@dataclass(frozen=True, slots=True)
class Bootstrapped:
    """What ``coffer init`` shows once: the organisation and the administrator's token."""

    organisation: Organisation
    principal: Principal
    token: str = field(repr=False)
    token_expires_at: datetime | None = None
    #: The installation's identity (set by ``coffer init``).
    installation: str = ""
    #: Shamir seal: the unseal key shares (base64), shown once and never stored.
    unseal_keys: tuple[str, ...] = field(default=(), repr=False)


#: Commits a change (with the operation's audit record, or on its own at ``coffer init``).
Commit = Callable[[Change], Awaitable[None]]


class TenantService:
    def __init__(
        self,
        root: RootOfTrust,
        clock: Callable[[], datetime],
        token_digest: Callable[[str], bytes],
    ) -> None:
        """``token_digest``: a token's stored digest (``PurposeKeys.token_digest``)."""
        self._root = root
        self._clock = clock
        self.token_digest = token_digest

    def _new_organisation(self, name: str, slug: str | None, kms_enabled: bool) -> Organisation:
        return Organisation(
            identity=new_identity(ORGANISATION_PREFIX),
            slug=slug or slugify(name),
            name=name,
            kms_enabled=kms_enabled,
            created_at=self._clock(),
            object_version=1,
        )

    async def catch_up(self) -> None:
        """Read the root key generations again (a rotation completed unheard)."""
        await self._root.refresh()

    async def new_organisation(
        self, name: str, slug: str | None, *, kms_enabled: bool
    ) -> tuple[Organisation, AddOrganisation]:
        """A new organisation with its own KEK, and the change that stores it (``Conflict`` if
        its slug is taken by then)."""
        organisation = self._new_organisation(name, slug, kms_enabled)
        # Each organisation has its own KEK, stored only wrapped by the root key; destroying it
        # crypto-shreds every key of the organisation.
        kek = await self._root.wrap(os.urandom(WRAPPING_KEY_BYTES), kek_aad(organisation.identity))
        return organisation, AddOrganisation(organisation, kek)

    async def bootstrap(
        self,
        commit: Commit,
        organisation_name: str = "Default",
        *,
        token_lifetime: timedelta | None = None,
    ) -> Bootstrapped:
        """The first organisation (slug ``default``, KMS on) and a platform administrator whose
        token (expiring after ``token_lifetime``, if given) holds ``kms:FullAccess`` and
        ``audit:ReadAccess`` on it, in one transaction."""
        now = self._clock()
        expires_at = now + token_lifetime if token_lifetime is not None else None
        principal = Principal(
            identity=new_identity(USER_PREFIX),
            kind=PrincipalKind.USER,
            name="admin",
            platform_admin=True,
            created_at=now,
        )
        token = new_token()
        organisation, added = await self.new_organisation(
            organisation_name, "default", kms_enabled=True
        )
        bindings = [
            AddBinding(
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
            for policy in ADMIN_POLICIES
        ]
        await commit(
            ChangeSet([
                added,
                AddPrincipal(principal),
                AddToken(new_identity(TOKEN_PREFIX), principal.identity, self.token_digest(token),
                         now, expires_at),
                *bindings,
            ])
        )  # fmt: skip
        return Bootstrapped(organisation, principal, token, expires_at)
