"""``IamService``: administration of organisations, projects, service accounts, tokens and role
bindings (spec §6, §7; the HTTP paths are an extension, the contract being silent on them).

Who may do what: a platform administrator (the principal ``coffer init`` creates) creates
organisations, switches their KMS feature gate, and administers every organisation; a principal
bound to ``iam:Admin`` on an organisation administers that organisation. Anyone else gets 403,
whether or not the organisation exists. Every change is audited, and every change that can narrow
access (a revoked token, a removed binding, a feature gate switched off) empties the access
caches, so that it holds from the next request on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from coffer.domain.identity import (
    BINDING_PREFIX,
    PROJECT_PREFIX,
    SERVICE_ACCOUNT_PREFIX,
    TOKEN_PREFIX,
    USER_PREFIX,
    looks_like_identity,
    new_identity,
    user_identity,
)
from coffer.domain.paging import EVERYTHING, Paged, PageRequest
from coffer.domain.permissions import (
    ORGANISATION_ONLY_POLICIES,
    POLICIES,
    RoleBinding,
    ScopeKind,
)
from coffer.domain.seal import StaleRootGeneration
from coffer.domain.slugs import slugify
from coffer.domain.tenants import Organisation, Principal, PrincipalKind, Project, TokenInfo
from coffer.errors import (
    Conflict,
    Forbidden,
    InvalidRequest,
    KeyNotFound,
    NotFound,
    OrganisationRequired,
    shown,
)
from coffer.iam.tokens import new_token
from coffer.service.access import MAX_REF_LENGTH
from coffer.service.changes import Changes
from coffer.service.context import Input, RequestMeta
from coffer.service.operations import Operation, Operations
from coffer.service.tenants import TenantService
from coffer.storage.changes import (
    AddBinding,
    AddPrincipal,
    AddProject,
    AddToken,
    ChangeSet,
    RemoveBinding,
    RevokeToken,
    SetKmsEnabled,
    ShredOrganisation,
)
from coffer.storage.repositories import Change, IamStore, Store

log = logging.getLogger(__name__)

ADMIN_POLICY = "iam:Admin"
OIDC_PREFIX = "oidc:"
MAX_NAME_LENGTH = 255
#: Longest token lifetime (ten years): a token that must outlive that is a token to rotate.
MAX_TOKEN_LIFETIME = timedelta(days=3650)


@dataclass(frozen=True, slots=True)
class OrganisationSpec:
    name: str
    slug: str | None = None
    kms_enabled: bool = True


@dataclass(frozen=True, slots=True)
class TokenSpec:
    #: ``None``: a token of the calling platform administrator (no organisation given).
    service_account: str | None = None
    expires_in: timedelta | None = None


@dataclass(frozen=True, slots=True)
class BindingSpec:
    principal: str
    policy: str
    project: str | None = None
    key: str | None = None


@dataclass(frozen=True, slots=True)
class NewToken:
    """A token as created: the secret is shown this once and never stored."""

    info: TokenInfo
    #: The service account, or the platform administrator, the token is for.
    owner: Principal
    token: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class RevokedToken:
    info: TokenInfo
    #: Set when no platform administrator token is left that works.
    warning: str | None = None


#: What revoking the last working platform administrator token answers (and logs).
NO_ADMIN_LEFT = (
    "no working platform administrator token is left: `coffer operator generate-admin-token "
    "--data-dir DIR` makes one offline with the root of trust"
)


def _check_name(name: str) -> str:
    if not 1 <= len(name) <= MAX_NAME_LENGTH:
        raise InvalidRequest(f"name must be 1 to {MAX_NAME_LENGTH} characters")
    return name


class IamService:
    def __init__(
        self,
        store: Store,
        iam: IamStore,
        tenants: TenantService,
        operations: Operations,
        clock: Callable[[], datetime],
        changes: Changes,
        *,
        oidc_issuer: str | None = None,
    ) -> None:
        self._changes = changes
        self._oidc_issuer = oidc_issuer
        self._store = store
        self._iam = iam
        self._tenants = tenants
        self._ops = operations
        self._clock = clock

    # --- who may administer ---------------------------------------------------------------------

    async def _platform_admin(self, op: Operation) -> Principal:
        principal = await op.authenticate()
        if not principal.platform_admin:
            raise Forbidden("only a platform administrator may do this")
        return principal

    async def _platform_scope(self, op: Operation) -> Principal:
        """The caller, a platform administrator acting without an organisation (platform
        administrators' tokens); anyone else must name an organisation."""
        principal = await op.authenticate()
        if not principal.platform_admin:
            raise OrganisationRequired()
        return principal

    async def _organisation(self, op: Operation, ref: str | None) -> Organisation:
        """The organisation ``ref`` if the caller administers it (403 otherwise, also when it
        does not exist: never reveal which)."""
        principal, project = await op.authenticate_claims()
        if project is not None:
            raise Forbidden("a token for one project cannot administer the organisation")
        if not ref:
            raise OrganisationRequired()
        organisation = (
            await self._store.find_organisation(ref) if len(ref) <= MAX_REF_LENGTH else None
        )
        if organisation is None:
            raise Forbidden()
        op.in_organisation(organisation)
        if principal.platform_admin:
            return organisation
        bindings = await self._store.bindings(principal.identity, organisation.identity)
        if not any(
            b.policy == ADMIN_POLICY and b.scope_kind is ScopeKind.ORGANISATION for b in bindings
        ):
            raise Forbidden()
        return organisation

    # --- organisations --------------------------------------------------------------------------

    async def create_organisation(
        self, meta: RequestMeta, request: Input[OrganisationSpec]
    ) -> Organisation:
        async with self._ops.begin(meta, "iam.organisation.create") as op:
            await self._platform_admin(op)
            given = request()
            slug = slugify(given.slug if given.slug is not None else _check_name(given.name))
            if given.slug is not None and slug != given.slug:
                raise InvalidRequest("slug must be lowercase letters, digits and single '-'")
            organisation, change = await self._tenants.new_organisation(
                _check_name(given.name), slug, kms_enabled=given.kms_enabled
            )
            op.in_organisation(organisation)
            op.event.resource_identity = organisation.identity
            try:
                await op.commit(change)
            except Conflict:
                raise Conflict(f"an organisation with slug {shown(slug)} already exists") from None
            except StaleRootGeneration:
                # A root rotation completed meanwhile, unheard: the client's retry wraps the KEK
                # with the new generation.
                await self._tenants.catch_up()
                raise
            return organisation

    async def list_organisations(
        self, meta: RequestMeta, page: Input[PageRequest] = lambda: EVERYTHING
    ) -> Paged[Organisation]:
        """Every organisation for a platform administrator; else those the caller is bound in."""
        async with self._ops.begin(meta, None) as op:
            principal = await op.authenticate()
            member = None if principal.platform_admin else principal.identity
            return await self._iam.organisations(member, page())

    async def set_kms_enabled(self, meta: RequestMeta, ref: str, enabled: bool) -> Organisation:
        action = "iam.organisation.enable_kms" if enabled else "iam.organisation.disable_kms"
        async with self._ops.begin(meta, action) as op:
            await self._platform_admin(op)
            found = await self._store.find_organisation(ref) if len(ref) <= MAX_REF_LENGTH else None
            if found is None:
                raise NotFound("organisation not found")
            op.in_organisation(found)
            op.event.resource_identity = found.identity
            if found.kms_enabled == enabled:
                return found
            changed = replace(found, kms_enabled=enabled, object_version=found.object_version + 1)
            await op.commit(SetKmsEnabled(changed))
            await self._changes.access_changed()
            return changed

    async def shred_organisation(
        self, meta: RequestMeta, ref: str, confirm: Input[str]
    ) -> Organisation:
        """Crypto-shred an organisation: its KEK is destroyed, and with it every key of the
        organisation, at once and for good. ``confirm`` must name it again (identity or slug)."""
        async with self._ops.begin(meta, "iam.organisation.shred") as op:
            await self._platform_admin(op)
            found = await self._store.find_organisation(ref) if len(ref) <= MAX_REF_LENGTH else None
            if found is None:
                raise NotFound("organisation not found")
            op.in_organisation(found)
            op.event.resource_identity = found.identity
            if confirm() not in (found.identity, found.slug):
                raise InvalidRequest(
                    f"to shred {found.slug!r}, confirm with its slug or identity (--confirm)"
                )
            now = self._clock()
            await op.commit(
                ShredOrganisation(found.identity, now, object_version=found.object_version + 1)
            )
            await self._store.forget_deleted()
            await self._changes.organisation_shredded(found.identity)
            log.warning("organisation %s crypto-shredded: its KEK and keys destroyed",
                        found.identity)  # fmt: skip
            return replace(found, shredded_at=now)

    # --- projects and service accounts ----------------------------------------------------------

    async def create_project(self, meta: RequestMeta, name: Input[str]) -> Project:
        async with self._ops.begin(meta, "iam.project.create") as op:
            organisation = await self._organisation(op, meta.organisation_ref)
            given = _check_name(name())
            project = Project(
                new_identity(PROJECT_PREFIX), organisation.identity, slugify(given), given,
                self._clock(),
            )  # fmt: skip
            op.event.resource_identity = project.identity
            try:
                await op.commit(AddProject(project))
            except Conflict:
                raise Conflict(
                    f"a project with slug {project.slug!r} already exists in this organisation"
                ) from None
            return project

    async def list_projects(
        self, meta: RequestMeta, page: Input[PageRequest] = lambda: EVERYTHING
    ) -> Paged[Project]:
        async with self._ops.begin(meta, None) as op:
            organisation = await self._organisation(op, meta.organisation_ref)
            return await self._iam.projects(organisation.identity, page())

    async def create_service_account(self, meta: RequestMeta, name: Input[str]) -> Principal:
        async with self._ops.begin(meta, "iam.service_account.create") as op:
            organisation = await self._organisation(op, meta.organisation_ref)
            given = _check_name(name())
            if ":" in given:
                # ``oidc:<subject>`` names a user in bindings; no account may look like one.
                raise InvalidRequest("a service account name must not contain ':'")
            account = Principal(
                identity=new_identity(SERVICE_ACCOUNT_PREFIX),
                kind=PrincipalKind.SERVICE_ACCOUNT,
                name=given,
                platform_admin=False,
                created_at=self._clock(),
                organisation_identity=organisation.identity,
            )
            op.event.resource_identity = account.identity
            try:
                await op.commit(AddPrincipal(account))
            except Conflict:
                raise Conflict(
                    f"a service account named {account.name!r} already exists in this organisation"
                ) from None
            return account

    async def list_service_accounts(
        self, meta: RequestMeta, page: Input[PageRequest] = lambda: EVERYTHING
    ) -> Paged[Principal]:
        async with self._ops.begin(meta, None) as op:
            organisation = await self._organisation(op, meta.organisation_ref)
            return await self._iam.service_accounts(organisation.identity, page())

    # --- tokens ---------------------------------------------------------------------------------

    async def create_token(self, meta: RequestMeta, request: Input[TokenSpec]) -> NewToken:
        """A token for a service account of the organisation; without an organisation, a token
        of the calling platform administrator."""
        async with self._ops.begin(meta, "iam.token.create") as op:
            if not meta.organisation_ref:
                owner = await self._platform_scope(op)
                given = request()
                if given.service_account is not None:
                    raise OrganisationRequired(
                        "a service account's token needs the X-Organisation-Identity header"
                    )
            else:
                organisation = await self._organisation(op, meta.organisation_ref)
                given = request()
                if given.service_account is None:
                    raise InvalidRequest("serviceAccount is required")
                account = await self._iam.find_service_account(
                    organisation.identity, given.service_account
                )
                if account is None:
                    raise NotFound("no such service account in this organisation")
                owner = account
            return await self._add_token(op, owner, given.expires_in)

    async def recover_admin_token(self, expires_in: timedelta | None) -> NewToken:
        """A token for the platform administrator, made offline by an operator who holds the
        root of trust (``coffer operator generate-admin-token``), audited as such."""
        async with self._ops.begin_system("iam.token.create") as op:
            op.event.principal_kind = "operator"
            op.event.user_agent = "coffer operator generate-admin-token"
            admins = await self._iam.platform_admins()
            if not admins:
                raise NotFound("this installation has no platform administrator")
            return await self._add_token(op, admins[0], expires_in)

    async def _add_token(
        self, op: Operation, owner: Principal, expires_in: timedelta | None
    ) -> NewToken:
        if expires_in is not None and not timedelta(seconds=1) <= expires_in <= MAX_TOKEN_LIFETIME:
            raise InvalidRequest("a token must expire within 1 second to 3650 days")
        now = self._clock()
        token = new_token()
        info = TokenInfo(
            identity=new_identity(TOKEN_PREFIX),
            principal_identity=owner.identity,
            created_at=now,
            expires_at=now + expires_in if expires_in is not None else None,
            revoked_at=None,
            platform=owner.platform_admin,
        )
        op.event.resource_identity = info.identity
        await op.commit(
            AddToken(info.identity, owner.identity, self._tenants.token_digest(token), now,
                     info.expires_at)
        )  # fmt: skip
        return NewToken(info, owner, token)

    async def list_tokens(
        self, meta: RequestMeta, page: Input[PageRequest] = lambda: EVERYTHING
    ) -> Paged[TokenInfo]:
        """The tokens of the organisation's service accounts; without an organisation, the
        platform administrators' tokens."""
        async with self._ops.begin(meta, None) as op:
            if not meta.organisation_ref:
                await self._platform_scope(op)
                return await self._iam.platform_tokens(page())
            organisation = await self._organisation(op, meta.organisation_ref)
            return await self._iam.tokens(organisation.identity, page())

    async def revoke_token(self, meta: RequestMeta, identity: str) -> RevokedToken:
        """Revoke a token of the organisation, or (for a platform administrator, with or
        without an organisation) a platform administrator's token. Revoking the last working
        administrator token is allowed, with a warning."""
        async with self._ops.begin(meta, "iam.token.revoke") as op:
            found = None
            if meta.organisation_ref:
                organisation = await self._organisation(op, meta.organisation_ref)
                found = await self._iam.find_token(organisation.identity, identity)
                caller = await op.authenticate()
            else:
                caller = await self._platform_scope(op)
            if found is None and caller.platform_admin:
                platform = await self._iam.platform_tokens()
                found = next((t for t in platform if t.identity == identity), None)
                if found is not None:
                    op.event.organisation_identity = None  # not an organisation's token
                    op.event.project_identity = None
            if found is None:
                raise NotFound("token not found")
            op.event.resource_identity = found.identity
            if found.revoked_at is None:
                now = self._clock()
                revoked = replace(found, revoked_at=now, object_version=found.object_version + 1)
                await op.commit(
                    RevokeToken(found.identity, now, object_version=revoked.object_version)
                )
                await self._changes.access_changed()
                found = revoked
            return RevokedToken(found, await self._warning(found))

    async def _warning(self, revoked: TokenInfo) -> str | None:
        if not revoked.platform:
            return None
        now = self._clock()
        if any(t.usable(now) for t in await self._iam.platform_tokens()):
            return None
        log.warning("token %s revoked: %s", revoked.identity, NO_ADMIN_LEFT)
        return NO_ADMIN_LEFT

    # --- role bindings --------------------------------------------------------------------------

    async def _principal(
        self, organisation: Organisation, ref: str
    ) -> tuple[Principal, Change | None]:
        """A service account of the organisation (identity or name), a user (identity), or
        ``oidc:<subject>``: the user the configured issuer calls so, known from then on (with
        the change that makes that user, if it is new)."""
        if ref.startswith(OIDC_PREFIX) and self._oidc_issuer is not None:
            subject = ref.removeprefix(OIDC_PREFIX)
            if not 1 <= len(subject) <= MAX_NAME_LENGTH:
                raise InvalidRequest("oidc:<subject> needs a subject of 1 to 255 characters")
            identity = user_identity(self._oidc_issuer, subject)
            user = await self._iam.find_principal(identity)
            if user is None:
                user = Principal(identity, PrincipalKind.USER, subject, False, self._clock())
                return user, AddPrincipal(user)
            return user, None
        account = await self._iam.find_service_account(organisation.identity, ref)
        if account is not None:
            return account, None
        if looks_like_identity(ref, USER_PREFIX):
            user = await self._iam.find_principal(ref)
            if user is not None and user.kind is PrincipalKind.USER:
                return user, None
        raise NotFound(
            f"no principal {shown(ref)}: a service account of this organisation (name or "
            "identity), a user's identity, or oidc:<subject>"
        )

    async def _scope(
        self, organisation: Organisation, given: BindingSpec
    ) -> tuple[ScopeKind, str | None]:
        if given.project is not None and given.key is not None:
            raise InvalidRequest("give a project or a key, not both")
        if given.project is None and given.key is None:
            return ScopeKind.ORGANISATION, None
        if given.policy in ORGANISATION_ONLY_POLICIES:
            raise InvalidRequest(f"{given.policy} can only be bound on the whole organisation")
        if given.project is not None:
            project = await self._store.find_project(organisation.identity, given.project)
            if project is None:
                raise NotFound("no such project in this organisation")
            return ScopeKind.PROJECT, project.identity
        assert given.key is not None
        if not await self._iam.has_key(organisation.identity, given.key):
            raise KeyNotFound(f"no key {shown(given.key)} in this organisation")
        return ScopeKind.KEY, given.key

    async def bind(self, meta: RequestMeta, request: Input[BindingSpec]) -> RoleBinding:
        async with self._ops.begin(meta, "iam.role_binding.create") as op:
            organisation = await self._organisation(op, meta.organisation_ref)
            given = request()
            if given.policy not in POLICIES:
                raise InvalidRequest(f"policy must be one of {', '.join(POLICIES)}")
            kind, scope = await self._scope(organisation, given)
            principal, new_user = await self._principal(organisation, given.principal)
            binding = RoleBinding(
                new_identity(BINDING_PREFIX), principal.identity, organisation.identity,
                given.policy, kind, scope,
            )  # fmt: skip
            op.event.resource_identity = binding.identity
            add = AddBinding(binding, self._clock())
            await op.commit(add if new_user is None else ChangeSet([new_user, add]))
            await self._changes.access_changed()
            return binding

    async def unbind(self, meta: RequestMeta, identity: str) -> RoleBinding:
        async with self._ops.begin(meta, "iam.role_binding.delete") as op:
            organisation = await self._organisation(op, meta.organisation_ref)
            found = [b for b in await self._iam.role_bindings(organisation.identity)
                     if b.identity == identity]  # fmt: skip
            if not found:
                raise NotFound("role binding not found")
            op.event.resource_identity = identity
            await op.commit(RemoveBinding(identity))
            await self._changes.access_changed()
            return found[0]

    async def list_bindings(
        self, meta: RequestMeta, page: Input[PageRequest] = lambda: EVERYTHING
    ) -> Paged[RoleBinding]:
        async with self._ops.begin(meta, None) as op:
            organisation = await self._organisation(op, meta.organisation_ref)
            return await self._iam.role_bindings(organisation.identity, page())
