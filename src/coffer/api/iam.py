"""Administration over HTTP (an extension): ``/v1/organisations``, ``/v1/projects`` and
``/v1/iam/...``, with the same error body and camelCase JSON as the KMS API."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

from starlette.requests import Request
from starlette.responses import Response

from coffer.api import http
from coffer.domain.paging import PageRequest
from coffer.domain.permissions import RoleBinding, ScopeKind
from coffer.domain.tenants import Organisation, Principal, Project, TokenInfo
from coffer.errors import InvalidRequest
from coffer.schemas import (
    CreateOrganisationRequest,
    CreateProjectRequest,
    CreateRoleBindingRequest,
    CreateServiceAccountRequest,
    CreateTokenRequest,
    NewTokenResponse,
    OrganisationItem,
    ProjectView,
    RoleBindingView,
    ServiceAccountView,
    ShredOrganisationRequest,
    TokenView,
)
from coffer.service.iam import (
    MAX_TOKEN_LIFETIME,
    BindingSpec,
    IamService,
    OrganisationSpec,
    TokenSpec,
)


def _iam(request: Request) -> IamService:
    return http.services(request).iam


def organisation_item(organisation: Organisation) -> OrganisationItem:
    return OrganisationItem(
        identity=organisation.identity,
        name=organisation.name,
        slug=organisation.slug,
        kms_enabled=organisation.kms_enabled,
        created_at=organisation.created_at,
        object_version=organisation.object_version,
        shredded_at=organisation.shredded_at,
    )


def _project(project: Project) -> ProjectView:
    return ProjectView(
        identity=project.identity,
        name=project.name,
        slug=project.slug,
        organisation_identity=project.organisation_identity,
        created_at=project.created_at,
    )


def _account(account: Principal) -> ServiceAccountView:
    return ServiceAccountView(
        identity=account.identity,
        name=account.name,
        organisation_identity=account.organisation_identity,
        created_at=account.created_at,
    )


def _token(info: TokenInfo, warning: str | None = None) -> TokenView:
    return TokenView(
        identity=info.identity,
        service_account_identity=None if info.platform else info.principal_identity,
        principal_identity=info.principal_identity,
        created_at=info.created_at,
        expires_at=info.expires_at,
        revoked_at=info.revoked_at,
        warning=warning,
    )


def _binding(binding: RoleBinding) -> RoleBindingView:
    return RoleBindingView(
        identity=binding.identity,
        principal_identity=binding.principal_identity,
        organisation_identity=binding.organisation_identity,
        policy=binding.policy,
        scope=binding.scope_kind.value,
        project_identity=binding.scope_identity
        if binding.scope_kind is ScopeKind.PROJECT
        else None,
        key_identity=binding.scope_identity if binding.scope_kind is ScopeKind.KEY else None,
    )


# --- organisations ------------------------------------------------------------------------------


#: Administration lists answer at most this many items a page unless ``limit`` says otherwise.
ADMIN_PAGE = 100


def _page(request: Request) -> Callable[[], PageRequest]:
    return lambda: http.page(request, ADMIN_PAGE)


async def create_organisation(request: Request) -> Response:
    meta = http.meta(request)
    body = await http.read_body(request)

    def given() -> OrganisationSpec:
        parsed = body.decode(CreateOrganisationRequest)
        return OrganisationSpec(parsed.name, parsed.slug, parsed.kms_enabled)

    created = await _iam(request).create_organisation(meta, given)
    return http.json(organisation_item(created), status=201)


async def list_organisations(request: Request) -> Response:
    found = await _iam(request).list_organisations(http.meta(request), _page(request))
    return http.page_json([organisation_item(o) for o in found], found)


async def enable_kms(request: Request) -> Response:
    changed = await _iam(request).set_kms_enabled(
        http.meta(request), request.path_params["organisation"], True
    )
    return http.json(organisation_item(changed))


async def disable_kms(request: Request) -> Response:
    changed = await _iam(request).set_kms_enabled(
        http.meta(request), request.path_params["organisation"], False
    )
    return http.json(organisation_item(changed))


async def shred_organisation(request: Request) -> Response:
    meta = http.meta(request)
    body = await http.read_body(request)
    ref = request.path_params["organisation"]
    # The body is read only after the caller was checked (a missing token answers 401 first).
    shredded = await _iam(request).shred_organisation(
        meta, ref, lambda: body.decode(ShredOrganisationRequest).confirm
    )
    return http.json(organisation_item(shredded))


# --- projects and service accounts --------------------------------------------------------------


async def create_project(request: Request) -> Response:
    meta = http.meta(request)
    body = await http.read_body(request)
    created = await _iam(request).create_project(
        meta, lambda: body.decode(CreateProjectRequest).name
    )
    return http.json(_project(created), status=201)


async def list_projects(request: Request) -> Response:
    found = await _iam(request).list_projects(http.meta(request), _page(request))
    return http.page_json([_project(p) for p in found], found)


async def create_service_account(request: Request) -> Response:
    meta = http.meta(request)
    body = await http.read_body(request)
    created = await _iam(request).create_service_account(
        meta, lambda: body.decode(CreateServiceAccountRequest).name
    )
    return http.json(_account(created), status=201)


async def list_service_accounts(request: Request) -> Response:
    found = await _iam(request).list_service_accounts(http.meta(request), _page(request))
    return http.page_json([_account(a) for a in found], found)


# --- tokens ---------------------------------------------------------------------------------------


async def create_token(request: Request) -> Response:
    meta = http.meta(request)
    body = await http.read_body(request)

    def given() -> TokenSpec:
        parsed = body.decode(CreateTokenRequest)
        seconds = parsed.expires_in_seconds
        if seconds is None:
            return TokenSpec(parsed.service_account)
        if not 1 <= seconds <= MAX_TOKEN_LIFETIME.total_seconds():
            raise InvalidRequest("expiresInSeconds must be between 1 and 315360000 (3650 days)")
        return TokenSpec(parsed.service_account, timedelta(seconds=seconds))

    created = await _iam(request).create_token(meta, given)
    return http.json(
        NewTokenResponse(
            identity=created.info.identity,
            token=created.token,
            service_account_identity=None if created.info.platform else created.owner.identity,
            principal_identity=created.owner.identity,
            created_at=created.info.created_at,
            expires_at=created.info.expires_at,
        ),
        status=201,
    )


async def list_tokens(request: Request) -> Response:
    found = await _iam(request).list_tokens(http.meta(request), _page(request))
    return http.page_json([_token(t) for t in found], found)


async def revoke_token(request: Request) -> Response:
    revoked = await _iam(request).revoke_token(http.meta(request), request.path_params["token"])
    return http.json(_token(revoked.info, revoked.warning))


# --- role bindings --------------------------------------------------------------------------------


async def create_role_binding(request: Request) -> Response:
    meta = http.meta(request)
    body = await http.read_body(request)

    def given() -> BindingSpec:
        parsed = body.decode(CreateRoleBindingRequest)
        return BindingSpec(parsed.principal, parsed.policy, parsed.project, parsed.key)

    created = await _iam(request).bind(meta, given)
    return http.json(_binding(created), status=201)


async def list_role_bindings(request: Request) -> Response:
    found = await _iam(request).list_bindings(http.meta(request), _page(request))
    return http.page_json([_binding(b) for b in found], found)


async def delete_role_binding(request: Request) -> Response:
    removed = await _iam(request).unbind(http.meta(request), request.path_params["binding"])
    return http.json(_binding(removed))
