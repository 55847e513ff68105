"""The endpoint table: one row per endpoint, used both for routing and for the OpenAPI document."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from coffer.api import audit, crypto, health, iam, keys, lifecycle, metrics, summary, sys
from coffer.schemas import (
    AuditPageResponse,
    AuditPublicKeyResponse,
    CreateKeyRequest,
    CreateOrganisationRequest,
    CreateProjectRequest,
    CreateRoleBindingRequest,
    CreateServiceAccountRequest,
    CreateTokenRequest,
    DecryptRequest,
    DecryptResponse,
    EncryptRequest,
    EncryptResponse,
    ExportRequest,
    ExportResponse,
    HealthResponse,
    HmacRequest,
    HmacResponse,
    KmsKey,
    NewTokenResponse,
    OrganisationItem,
    ProjectView,
    PublicKeyResponse,
    RoleBindingView,
    RootStatusResponse,
    SealStatusResponse,
    ServiceAccountView,
    ShredOrganisationRequest,
    SignRequest,
    SignResponse,
    SummaryResponse,
    TokenView,
    UnsealRequest,
    UpdateRotationRequest,
    UpdateVersionsRequest,
    VerifyHmacRequest,
    VerifyHmacResponse,
    VerifyRequest,
    VerifyResponse,
    WrappingKeyResponse,
)

Handler = Callable[[Request], Awaitable[Response]]
METRICS_CONTENT_TYPE = metrics.CONTENT_TYPE


@dataclass(frozen=True, slots=True)
class Endpoint:
    method: str
    path: str
    handler: Handler
    summary: str
    request: type[Any] | None = None
    response: Any = None
    status: int = 200
    kms: bool = True  # needs a token and X-Organisation-Identity
    token_only: bool = False  # needs a token, no organisation header
    #: Without X-Organisation-Identity, acts on the platform (a platform administrator's tokens).
    organisation_optional: bool = False
    sealed_ok: bool = False  # answers while sealed (every other endpoint: 503 sealed)
    changes: bool = False  # stores a change (with its audit record, in one transaction)
    query: tuple[str, ...] = ()
    media_type: str = "application/json"

    @property
    def operation(self) -> str:
        """The operation's name: its OpenAPI operation id and its metrics label."""
        return self.handler.__name__


KEY = "/v1/kms/{region}/keys/{key}"
#: The query of a paged list: ``limit`` and the ``cursor`` a page's ``X-Next-Cursor`` gave.
PAGED = ("limit", "cursor")

ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint("GET", "/v1/kms/summary", summary.summary, "KMS availability and key counts",
             response=SummaryResponse),
    Endpoint("GET", "/v1/kms/{region}/keys", keys.list_keys, "List keys", response=list[KmsKey],
             query=("identity", "name", "slug", "status", "keyType", *PAGED)),
    Endpoint("POST", "/v1/kms/{region}/keys", keys.create_key, "Create a key",
             request=CreateKeyRequest, response=KmsKey, status=201, changes=True),
    Endpoint("GET", "/v1/kms/{region}/wrapping-key", keys.wrapping_key,
             "The organisation's BYOK wrapping key in the region (RSA-4096, RSA_OAEP_AES_KWP; "
             "made on first use and when the last one is past its lifetime)",
             response=WrappingKeyResponse, changes=True),
    Endpoint("GET", KEY, keys.get_key, "Get a key", response=KmsKey),
    Endpoint("POST", f"{KEY}/encrypt", crypto.encrypt, "Encrypt with a key",
             request=EncryptRequest, response=EncryptResponse),
    Endpoint("POST", f"{KEY}/decrypt", crypto.decrypt, "Decrypt with a key",
             request=DecryptRequest, response=DecryptResponse),
    Endpoint("POST", f"{KEY}/sign", crypto.sign, "Sign with an asymmetric key",
             request=SignRequest, response=SignResponse),
    Endpoint("POST", f"{KEY}/verify", crypto.verify, "Verify a signature",
             request=VerifyRequest, response=VerifyResponse),
    Endpoint("POST", f"{KEY}/hmac", crypto.hmac, "Compute an HMAC",
             request=HmacRequest, response=HmacResponse),
    Endpoint("POST", f"{KEY}/verify-hmac", crypto.verify_hmac, "Verify an HMAC",
             request=VerifyHmacRequest, response=VerifyHmacResponse),
    Endpoint("GET", f"{KEY}/public-key", crypto.public_key,
             "Public keys of an asymmetric key's usable versions", response=PublicKeyResponse,
             query=("version",)),
    Endpoint("POST", f"{KEY}/export", crypto.export,
             "Export key material (break-glass; only with exportAllowed)",
             request=ExportRequest, response=ExportResponse),
    Endpoint("POST", f"{KEY}/rotate", lifecycle.rotate, "Rotate a key: a new latest version",
             response=KmsKey, changes=True),
    Endpoint("PATCH", f"{KEY}/rotation", lifecycle.update_rotation,
             "Change automatic rotation settings", request=UpdateRotationRequest, response=KmsKey,
             changes=True),
    Endpoint("PATCH", f"{KEY}/versions", lifecycle.update_versions,
             "Set the minimum decryption version (extension)", request=UpdateVersionsRequest,
             response=KmsKey, changes=True),
    Endpoint("POST", f"{KEY}/disable", lifecycle.disable, "Disable a key", response=KmsKey,
             changes=True),
    Endpoint("POST", f"{KEY}/enable", lifecycle.enable, "Enable a disabled key", response=KmsKey,
             changes=True),
    Endpoint("DELETE", KEY, lifecycle.delete_key, "Schedule a key for deletion", response=KmsKey,
             changes=True),
    Endpoint("DELETE", f"{KEY}/cancel-deletion", lifecycle.cancel_deletion,
             "Cancel a scheduled deletion", response=KmsKey, changes=True),
    Endpoint("GET", "/v1/audit", audit.list_audit, "The organisation's audit records",
             response=AuditPageResponse,
             query=("page", "limit", "action", "resourceType", "resourceIdentity",
                    "serviceAccount", "userIdentity", "responseStatus", "since", "until",
                    "order", "afterSeq")),
    Endpoint("POST", "/v1/organisations", iam.create_organisation,
             "Create an organisation (platform administrators)", request=CreateOrganisationRequest,
             response=OrganisationItem, status=201, kms=False, token_only=True, changes=True),
    Endpoint("GET", "/v1/organisations", iam.list_organisations,
             "Organisations the caller belongs to (all, for platform administrators)",
             response=list[OrganisationItem], kms=False, token_only=True, query=PAGED),
    Endpoint("POST", "/v1/organisations/{organisation}/enable-kms", iam.enable_kms,
             "Switch the KMS feature on (platform administrators)", response=OrganisationItem,
             kms=False, token_only=True, changes=True),
    Endpoint("POST", "/v1/organisations/{organisation}/disable-kms", iam.disable_kms,
             "Switch the KMS feature off (platform administrators)", response=OrganisationItem,
             kms=False, token_only=True, changes=True),
    Endpoint("POST", "/v1/organisations/{organisation}/shred", iam.shred_organisation,
             "Crypto-shred an organisation: destroy its KEK and every key (platform "
             "administrators; cannot be undone)", request=ShredOrganisationRequest,
             response=OrganisationItem, kms=False, token_only=True, changes=True),
    Endpoint("POST", "/v1/projects", iam.create_project, "Create a project",
             request=CreateProjectRequest, response=ProjectView, status=201, changes=True),
    Endpoint("GET", "/v1/projects", iam.list_projects, "The organisation's projects",
             response=list[ProjectView], query=PAGED),
    Endpoint("POST", "/v1/iam/service-accounts", iam.create_service_account,
             "Create a service account", request=CreateServiceAccountRequest,
             response=ServiceAccountView, status=201, changes=True),
    Endpoint("GET", "/v1/iam/service-accounts", iam.list_service_accounts,
             "The organisation's service accounts", response=list[ServiceAccountView],
             query=PAGED),
    Endpoint("POST", "/v1/iam/tokens", iam.create_token,
             "Create a token for a service account, or without an organisation for the calling "
             "platform administrator (shown once)", request=CreateTokenRequest,
             response=NewTokenResponse, status=201, changes=True, organisation_optional=True),
    Endpoint("GET", "/v1/iam/tokens", iam.list_tokens,
             "Tokens of the organisation's service accounts, or without an organisation the "
             "platform administrators' tokens (never the secrets)",
             response=list[TokenView], organisation_optional=True, query=PAGED),
    Endpoint("DELETE", "/v1/iam/tokens/{token}", iam.revoke_token,
             "Revoke a token (a platform administrator's too, with or without an organisation)",
             response=TokenView, changes=True, organisation_optional=True),
    Endpoint("POST", "/v1/iam/role-bindings", iam.create_role_binding,
             "Bind a built-in policy to a principal", request=CreateRoleBindingRequest,
             response=RoleBindingView, status=201, changes=True),
    Endpoint("GET", "/v1/iam/role-bindings", iam.list_role_bindings,
             "The organisation's role bindings", response=list[RoleBindingView], query=PAGED),
    Endpoint("DELETE", "/v1/iam/role-bindings/{binding}", iam.delete_role_binding,
             "Remove a role binding", response=RoleBindingView, changes=True),
    Endpoint("GET", "/v1/audit/public-key", sys.audit_public_key,
             "The public key that verifies audit checkpoints (PEM)",
             response=AuditPublicKeyResponse, kms=False, token_only=True),
    Endpoint("GET", "/v1/sys/seal-status", sys.seal_status,
             "Whether the root key is sealed, and the unseal progress (no token)",
             response=SealStatusResponse, kms=False, sealed_ok=True),
    Endpoint("POST", "/v1/sys/unseal", sys.unseal,
             "Give one unseal key share (Shamir seal; no token)", request=UnsealRequest,
             response=SealStatusResponse, kms=False, sealed_ok=True),
    Endpoint("POST", "/v1/sys/seal", sys.seal, "Seal this server (platform administrators)",
             response=SealStatusResponse, kms=False, token_only=True),
    Endpoint("GET", "/v1/sys/root", sys.root_status,
             "The root key's generation and any rotation under way (platform administrators)",
             response=RootStatusResponse, kms=False, token_only=True),
    Endpoint("POST", "/v1/sys/rotate-root", sys.rotate_root,
             "Begin a root key rotation (platform administrators)", response=RootStatusResponse,
             status=202, kms=False, token_only=True, changes=True),
    Endpoint("GET", "/healthz", health.healthz, "The process is up", response=HealthResponse,
             kms=False, sealed_ok=True),
    Endpoint("GET", "/readyz", health.readyz, "Database and root key are usable (503 sealed)",
             response=HealthResponse, kms=False, sealed_ok=True),
    Endpoint("GET", "/metrics", metrics.metrics,
             "Prometheus metrics (no token; absent with metrics = false)", response=str,
             kms=False, media_type=METRICS_CONTENT_TYPE, sealed_ok=True),
)  # fmt: skip
