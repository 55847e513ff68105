"""Every endpoint of the API as a ``Call``: what to send and how to read the answer.

The functions here do no I/O. ``Client`` and ``AsyncClient`` run the same calls, one blocking and
one with ``await``, so the two stay alike by construction. Bodies are the server's own request
structs (``coffer.schemas``), so the SDK and the server cannot disagree on a field's name.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, TypeVar
from urllib.parse import quote

import msgspec

from coffer.client.connection import Connection
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

T = TypeVar("T")
_ENCODER = msgspec.json.Encoder()


@dataclass(frozen=True, slots=True)
class Call(Generic[T]):
    """One HTTP exchange. ``idempotent`` calls are retried on 429/502/503/504 and lost
    connections; others only when the connection could not be opened (nothing was sent)."""

    method: str
    path: str
    decode: Callable[[bytes], T]
    body: bytes | None = None
    params: Sequence[tuple[str, str]] = field(default_factory=tuple)
    idempotent: bool = True
    organisation: bool = True  # sends X-Organisation-Identity (and X-Project-Identity)
    #: A paged list: the client asks for big pages and follows ``X-Next-Cursor`` to the end.
    paged: bool = False


def _decoder(kind: type[T]) -> Callable[[bytes], T]:
    return msgspec.json.Decoder(kind).decode


#: Paged lists are asked for in the largest pages the server gives.
_BIG_PAGES = (("limit", "1000"),)
_KEY = _decoder(KmsKey)
_KEYS = _decoder(list[KmsKey])


def _segment(value: str) -> str:
    return quote(value, safe="")


def _keys_path(c: Connection, region: str | None) -> str:
    return f"/v1/kms/{_segment(region or c.region)}/keys"


def _key_path(c: Connection, key: str, region: str | None, action: str = "") -> str:
    return f"{_keys_path(c, region)}/{_segment(key)}{action}"


def _body(struct: msgspec.Struct) -> bytes:
    return _ENCODER.encode(struct)


# --- keys -----------------------------------------------------------------------------------


def create_key(
    c: Connection,
    name: str,
    key_type: str,
    *,
    description: str | None = None,
    labels: Mapping[str, str] | None = None,
    annotations: Mapping[str, str] | None = None,
    export_allowed: bool = False,
    key_rotation_enabled: bool = False,
    rotation_period_in_days: int | None = None,
    import_key_material: bytes | None = None,
    hash_function: str | None = None,
    allow_rotation: bool = False,
    region: str | None = None,
) -> Call[KmsKey]:
    """Create a key (``import_key_material``: bring your own key, see docs/byok.md)."""
    request = CreateKeyRequest(
        name=name,
        key_type=key_type,
        description=description,
        labels=dict(labels) if labels is not None else None,
        annotations=dict(annotations) if annotations is not None else None,
        export_allowed=export_allowed,
        key_rotation_enabled=key_rotation_enabled,
        rotation_period_in_days=rotation_period_in_days,
        import_key_material=import_key_material,
        hash_function=hash_function,
        allow_rotation=allow_rotation,
    )
    return Call("POST", _keys_path(c, region), _KEY, _body(request), idempotent=False)


def list_keys(
    c: Connection,
    *,
    identity: str | None = None,
    name: str | None = None,
    slug: str | None = None,
    status: str | None = None,
    key_type: str | None = None,
    labels: Mapping[str, str] | None = None,
    region: str | None = None,
) -> Call[list[KmsKey]]:
    """Keys of the active scope, oldest first; every filter given must match."""
    filters = {"identity": identity, "name": name, "slug": slug, "status": status}
    params = [(k, v) for k, v in filters.items() if v is not None]
    if key_type is not None:
        params.append(("keyType", key_type))
    params += [(f"matchLabels[{k}]", v) for k, v in (labels or {}).items()]
    return Call("GET", _keys_path(c, region), _KEYS, params=[*params, *_BIG_PAGES], paged=True)


def get_key(c: Connection, key: str, *, region: str | None = None) -> Call[KmsKey]:
    """One key, by identity or slug."""
    return Call("GET", _key_path(c, key, region), _KEY)


def rotate_key(c: Connection, key: str, *, region: str | None = None) -> Call[KmsKey]:
    """A new latest version; older ones keep decrypting and verifying."""
    return Call("POST", _key_path(c, key, region, "/rotate"), _KEY, idempotent=False)


def update_rotation(
    c: Connection,
    key: str,
    *,
    key_rotation_enabled: bool | None = None,
    rotation_period_in_days: int | None = None,
    region: str | None = None,
) -> Call[KmsKey]:
    """Change automatic rotation; what is not given stays as it is."""
    request = UpdateRotationRequest(
        key_rotation_enabled=key_rotation_enabled, rotation_period_in_days=rotation_period_in_days
    )
    return Call("PATCH", _key_path(c, key, region, "/rotation"), _KEY, _body(request))


def set_min_decryption_version(
    c: Connection, key: str, version: int, *, region: str | None = None
) -> Call[KmsKey]:
    """Retire the versions below ``version``: they no longer decrypt or verify."""
    request = UpdateVersionsRequest(min_decryption_version=version)
    return Call("PATCH", _key_path(c, key, region, "/versions"), _KEY, _body(request))


def _transition(action: str, method: str = "POST") -> Callable[..., Call[KmsKey]]:
    def build(c: Connection, key: str, *, region: str | None = None) -> Call[KmsKey]:
        return Call(method, _key_path(c, key, region, action), _KEY, idempotent=False)

    return build


disable_key = _transition("/disable")
disable_key.__doc__ = "Disable an active key: no cryptographic operation until it is enabled."
enable_key = _transition("/enable")
enable_key.__doc__ = "Enable a disabled key."
delete_key = _transition("", "DELETE")
delete_key.__doc__ = "Schedule a key for deletion after the server's retention period."
cancel_deletion = _transition("/cancel-deletion", "DELETE")
cancel_deletion.__doc__ = "Cancel a scheduled deletion: the key is active again."


def public_key(
    c: Connection, key: str, *, version: int | None = None, region: str | None = None
) -> Call[PublicKeyResponse]:
    """PEM (RSA, ECDSA) or base64 raw (Ed25519) public keys by version."""
    params = [("version", str(version))] if version is not None else []
    path = _key_path(c, key, region, "/public-key")
    return Call("GET", path, _decoder(PublicKeyResponse), params=params)


def export_key(
    c: Connection, key: str, *, version: int | None = None, region: str | None = None
) -> Call[ExportResponse]:
    """Break-glass export of key material (only keys created with ``export_allowed``)."""
    request = ExportRequest(key_version=version)
    # Not retried: each export is a break-glass event of its own in the audit log.
    return Call("POST", _key_path(c, key, region, "/export"), _decoder(ExportResponse),
                _body(request), idempotent=False)  # fmt: skip


def wrapping_key(c: Connection, *, region: str | None = None) -> Call[WrappingKeyResponse]:
    """The region's RSA-4096 key to wrap key material for import."""
    path = f"/v1/kms/{_segment(region or c.region)}/wrapping-key"
    return Call("GET", path, _decoder(WrappingKeyResponse))


def summary(c: Connection) -> Call[SummaryResponse]:
    """Whether the KMS is on for the organisation, and key counts per region."""
    return Call("GET", "/v1/kms/summary", _decoder(SummaryResponse))


# --- cryptography ---------------------------------------------------------------------------


def encrypt(
    c: Connection,
    key: str,
    plaintext: bytes,
    *,
    version: int | None = None,
    region: str | None = None,
) -> Call[EncryptResponse]:
    """Encrypt up to 64 KiB (RSA: the OAEP limit); larger data: ``coffer.client.envelope``."""
    request = EncryptRequest(plaintext=plaintext, key_version=version)
    return Call("POST", _key_path(c, key, region, "/encrypt"), _decoder(EncryptResponse),
                _body(request))  # fmt: skip


def decrypt(
    c: Connection, key: str, ciphertext: str, *, region: str | None = None
) -> Call[DecryptResponse]:
    """Decrypt a ``thalassa:vN:`` ciphertext of this key."""
    request = DecryptRequest(ciphertext=ciphertext)
    return Call("POST", _key_path(c, key, region, "/decrypt"), _decoder(DecryptResponse),
                _body(request))  # fmt: skip


def sign(
    c: Connection,
    key: str,
    data: bytes,
    *,
    version: int | None = None,
    hash_algorithm: str | None = None,
    prehashed: bool = False,
    context: bytes | None = None,
    signature_algorithm: str | None = None,
    marshaling_algorithm: str | None = None,
    region: str | None = None,
) -> Call[SignResponse]:
    """Sign ``data`` (or, with ``prehashed``, its digest)."""
    request = SignRequest(
        input=data,
        key_version=version,
        hash_algorithm=hash_algorithm,
        prehashed=prehashed,
        context=context,
        signature_algorithm=signature_algorithm,
        marshaling_algorithm=marshaling_algorithm,
    )
    return Call("POST", _key_path(c, key, region, "/sign"), _decoder(SignResponse),
                _body(request))  # fmt: skip


def _valid(data: bytes) -> bool:
    return msgspec.json.decode(data, type=VerifyResponse).valid


def verify(
    c: Connection,
    key: str,
    data: bytes,
    signature: str,
    *,
    hash_algorithm: str | None = None,
    prehashed: bool = False,
    context: bytes | None = None,
    signature_algorithm: str | None = None,
    marshaling_algorithm: str | None = None,
    region: str | None = None,
) -> Call[bool]:
    """Whether ``signature`` is a valid signature of ``data`` by this key."""
    request = VerifyRequest(
        input=data,
        signature=signature,
        hash_algorithm=hash_algorithm,
        prehashed=prehashed,
        context=context,
        signature_algorithm=signature_algorithm,
        marshaling_algorithm=marshaling_algorithm,
    )
    return Call("POST", _key_path(c, key, region, "/verify"), _valid, _body(request))


def hmac(
    c: Connection,
    key: str,
    data: bytes,
    *,
    version: int | None = None,
    algorithm: str | None = None,
    region: str | None = None,
) -> Call[HmacResponse]:
    """The HMAC of ``data`` (``algorithm`` sha2-256 or sha2-512 where the key type allows)."""
    request = HmacRequest(input=data, key_version=version, algorithm=algorithm)
    return Call("POST", _key_path(c, key, region, "/hmac"), _decoder(HmacResponse),
                _body(request))  # fmt: skip


def _mac_valid(data: bytes) -> bool:
    return msgspec.json.decode(data, type=VerifyHmacResponse).valid


def verify_hmac(
    c: Connection,
    key: str,
    data: bytes,
    mac: str,
    *,
    algorithm: str | None = None,
    region: str | None = None,
) -> Call[bool]:
    """Whether ``mac`` is this key's HMAC of ``data`` (compared in constant time)."""
    request = VerifyHmacRequest(input=data, hmac=mac, hash_algorithm=algorithm)
    return Call("POST", _key_path(c, key, region, "/verify-hmac"), _mac_valid, _body(request))


# --- audit ----------------------------------------------------------------------------------


def list_audit(
    c: Connection,
    *,
    page: int | None = None,
    limit: int | None = None,
    action: str | None = None,
    resource_type: str | None = None,
    resource_identity: str | None = None,
    service_account: str | None = None,
    user_identity: str | None = None,
    response_status: int | None = None,
    since: datetime | str | None = None,
    until: datetime | str | None = None,
    order: str | None = None,
    after_seq: int | None = None,
) -> Call[AuditPageResponse]:
    """One page of the organisation's audit records (needs ``audit:ReadAccess``)."""
    filters: dict[str, Any] = {
        "page": page,
        "limit": limit,
        "action": action,
        "resourceType": resource_type,
        "resourceIdentity": resource_identity,
        "serviceAccount": service_account,
        "userIdentity": user_identity,
        "responseStatus": response_status,
        "since": since,
        "until": until,
        "order": order,
        "afterSeq": after_seq,
    }
    params = [
        (name, value.isoformat() if isinstance(value, datetime) else str(value))
        for name, value in filters.items()
        if value is not None
    ]
    return Call("GET", "/v1/audit", _decoder(AuditPageResponse), params=params)


def audit_public_key(c: Connection) -> Call[str]:
    """The PEM public key that verifies the audit log's signed checkpoints."""
    decode = _decoder(AuditPublicKeyResponse)
    return Call("GET", "/v1/audit/public-key", lambda data: decode(data).public_key,
                organisation=False)  # fmt: skip


# --- the seal and the root key ----------------------------------------------------------------

_SEAL_STATUS = _decoder(SealStatusResponse)
_ROOT_STATUS = _decoder(RootStatusResponse)


def seal_status(c: Connection) -> Call[SealStatusResponse]:
    """Whether the server is sealed, and how many unseal key shares it has (no token needed)."""
    return Call("GET", "/v1/sys/seal-status", _SEAL_STATUS, organisation=False)


def unseal(
    c: Connection, share: str | None = None, *, reset: bool = False
) -> Call[SealStatusResponse]:
    """Give one unseal key share (base64, as ``coffer init`` printed it), or ``reset`` the
    shares given so far. Never retried: a share counts once."""
    request = UnsealRequest(key=share, reset=reset)
    return Call("POST", "/v1/sys/unseal", _SEAL_STATUS, _body(request), idempotent=False,
                organisation=False)  # fmt: skip


def seal(c: Connection) -> Call[SealStatusResponse]:
    """Seal the server now (platform administrators)."""
    return Call("POST", "/v1/sys/seal", _SEAL_STATUS, idempotent=False, organisation=False)


def root_status(c: Connection) -> Call[RootStatusResponse]:
    """The root key's active generation and any rotation under way (platform administrators)."""
    return Call("GET", "/v1/sys/root", _ROOT_STATUS, organisation=False)


def rotate_root(c: Connection) -> Call[RootStatusResponse]:
    """Begin a rotation of the root key (platform administrators); ``root_status`` follows it."""
    return Call("POST", "/v1/sys/rotate-root", _ROOT_STATUS, idempotent=False,
                organisation=False)  # fmt: skip


# --- administration -------------------------------------------------------------------------


def create_organisation(
    c: Connection, name: str, *, slug: str | None = None, kms_enabled: bool = True
) -> Call[OrganisationItem]:
    """Create an organisation (platform administrators)."""
    request = CreateOrganisationRequest(name=name, slug=slug, kms_enabled=kms_enabled)
    return Call("POST", "/v1/organisations", _decoder(OrganisationItem), _body(request),
                idempotent=False, organisation=False)  # fmt: skip


def list_organisations(c: Connection) -> Call[list[OrganisationItem]]:
    """The organisations the caller belongs to (all, for platform administrators)."""
    return Call("GET", "/v1/organisations", _decoder(list[OrganisationItem]), organisation=False,
                params=_BIG_PAGES, paged=True)  # fmt: skip


def _kms_switch(action: str) -> Callable[..., Call[OrganisationItem]]:
    def build(c: Connection, organisation: str) -> Call[OrganisationItem]:
        path = f"/v1/organisations/{_segment(organisation)}/{action}"
        return Call("POST", path, _decoder(OrganisationItem), organisation=False)

    return build


def shred_organisation(c: Connection, organisation: str, confirm: str) -> Call[OrganisationItem]:
    """Crypto-shred an organisation: its KEK and every key are destroyed for good (platform
    administrators). ``confirm`` names the organisation again."""
    path = f"/v1/organisations/{_segment(organisation)}/shred"
    body = _body(ShredOrganisationRequest(confirm=confirm))
    return Call("POST", path, _decoder(OrganisationItem), body, idempotent=False,
                organisation=False)  # fmt: skip


enable_kms = _kms_switch("enable-kms")
enable_kms.__doc__ = "Switch the KMS on for an organisation (platform administrators)."
disable_kms = _kms_switch("disable-kms")
disable_kms.__doc__ = "Switch the KMS off for an organisation (platform administrators)."


def create_project(c: Connection, name: str) -> Call[ProjectView]:
    """Create a project in the client's organisation."""
    return Call("POST", "/v1/projects", _decoder(ProjectView),
                _body(CreateProjectRequest(name=name)), idempotent=False)  # fmt: skip


def list_projects(c: Connection) -> Call[list[ProjectView]]:
    """The organisation's projects."""
    return Call("GET", "/v1/projects", _decoder(list[ProjectView]), params=_BIG_PAGES, paged=True)


def create_service_account(c: Connection, name: str) -> Call[ServiceAccountView]:
    """Create a service account in the client's organisation."""
    return Call("POST", "/v1/iam/service-accounts", _decoder(ServiceAccountView),
                _body(CreateServiceAccountRequest(name=name)), idempotent=False)  # fmt: skip


def list_service_accounts(c: Connection) -> Call[list[ServiceAccountView]]:
    """The organisation's service accounts."""
    return Call("GET", "/v1/iam/service-accounts", _decoder(list[ServiceAccountView]),
                params=_BIG_PAGES, paged=True)  # fmt: skip


def create_token(
    c: Connection, service_account: str | None = None, *, expires_in_seconds: int | None = None
) -> Call[NewTokenResponse]:
    """A new token for a service account of the client's organisation, or (``service_account``
    ``None``) for the calling platform administrator; its secret is in the answer, and only
    there."""
    request = CreateTokenRequest(
        service_account=service_account, expires_in_seconds=expires_in_seconds
    )
    return Call("POST", "/v1/iam/tokens", _decoder(NewTokenResponse), _body(request),
                idempotent=False, organisation=service_account is not None)  # fmt: skip


def list_tokens(c: Connection, *, platform_admin: bool = False) -> Call[list[TokenView]]:
    """Tokens of the organisation's service accounts, or (``platform_admin``) the platform
    administrators' tokens (never their secrets)."""
    return Call("GET", "/v1/iam/tokens", _decoder(list[TokenView]),
                organisation=not platform_admin, params=_BIG_PAGES, paged=True)  # fmt: skip


def revoke_token(c: Connection, token: str) -> Call[TokenView]:
    """Revoke a token by its identity; it fails from the next request on."""
    path = f"/v1/iam/tokens/{_segment(token)}"
    return Call("DELETE", path, _decoder(TokenView), idempotent=False)


def create_role_binding(
    c: Connection,
    principal: str,
    policy: str,
    *,
    project: str | None = None,
    key: str | None = None,
) -> Call[RoleBindingView]:
    """Bind a built-in policy to a principal, on the organisation, a project or one key."""
    request = CreateRoleBindingRequest(principal=principal, policy=policy, project=project, key=key)
    return Call("POST", "/v1/iam/role-bindings", _decoder(RoleBindingView), _body(request),
                idempotent=False)  # fmt: skip


def list_role_bindings(c: Connection) -> Call[list[RoleBindingView]]:
    """The organisation's role bindings."""
    return Call("GET", "/v1/iam/role-bindings", _decoder(list[RoleBindingView]),
                params=_BIG_PAGES, paged=True)  # fmt: skip


def delete_role_binding(c: Connection, binding: str) -> Call[RoleBindingView]:
    """Remove a role binding by its identity."""
    path = f"/v1/iam/role-bindings/{_segment(binding)}"
    return Call("DELETE", path, _decoder(RoleBindingView), idempotent=False)
