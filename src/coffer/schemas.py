"""Request and response bodies of the API (spec §2, §5), as msgspec structs.

The same structs parse requests, encode responses and generate the OpenAPI document. ``bytes``
fields are standard base64 (with padding) on the wire. Requests reject unknown fields.
"""

from __future__ import annotations

from datetime import datetime

import msgspec


class Request(
    msgspec.Struct, rename="camel", forbid_unknown_fields=True, kw_only=True, omit_defaults=True
):
    """A request body. The server decodes these; ``coffer.client`` encodes them (leaving out
    fields at their defaults)."""


class Response(msgspec.Struct, rename="camel", kw_only=True):
    pass


# --- errors ----------------------------------------------------------------------------------


class ErrorBody(Response):
    message: str
    code: str
    request_id: str


# --- keys ------------------------------------------------------------------------------------


class OrganisationView(Response):
    identity: str
    name: str
    slug: str
    created_at: datetime
    object_version: int


class KeyVersionView(Response, omit_defaults=True):
    version: int
    status: str
    created_at: datetime
    #: Extension, in ``GET`` of one AES-GCM or ChaCha20-Poly1305 key: encryptions counted
    #: against the version's budget (an upper bound: reserved in blocks).
    encryptions: int | None = None


class KmsKey(Response):
    identity: str
    name: str
    slug: str
    description: str | None
    labels: dict[str, str]
    annotations: dict[str, str]
    project_id: str | None
    key_type: str
    status: str
    export_allowed: bool
    imported: bool
    key_rotation_enabled: bool
    rotation_period_in_days: int | None
    latest_version: int
    min_decryption_version: int
    versions: list[KeyVersionView]
    deletion_scheduled_at: datetime | None
    created_at: datetime
    updated_at: datetime
    object_version: int
    organisation: OrganisationView


class CreateKeyRequest(Request):
    name: str
    key_type: str
    description: str | None = None
    labels: dict[str, str] | None = None
    annotations: dict[str, str] | None = None
    export_allowed: bool = False
    key_rotation_enabled: bool = False
    rotation_period_in_days: int | None = None
    import_key_material: bytes | None = None
    hash_function: str | None = None
    allow_rotation: bool = False

    def __repr__(self) -> str:
        return f"CreateKeyRequest(name={self.name!r}, key_type={self.key_type!r})"


class WrappingKeyResponse(Response):
    public_key: str
    algorithm: str
    # An extension: when this key stops being handed out (a successor is made then; this one is
    # still accepted for imports for 24 hours after that).
    expires_at: datetime | None = None


class UpdateRotationRequest(Request):
    key_rotation_enabled: bool | None = None
    rotation_period_in_days: int | None = None


class UpdateVersionsRequest(Request):
    """*Extension* (Vault's min_decryption_version): retire versions below N."""

    min_decryption_version: int


# --- crypto ----------------------------------------------------------------------------------

# ``keyVersion`` is a string in responses; requests accept a string or an integer (spec §1).
KeyVersionInput = str | int | None


class EncryptRequest(Request):
    plaintext: bytes
    key_version: KeyVersionInput = None

    def __repr__(self) -> str:
        return f"EncryptRequest(plaintext=<{len(self.plaintext)} bytes>)"


class EncryptResponse(Response):
    ciphertext: str
    key_version: str


class DecryptRequest(Request):
    ciphertext: str


class DecryptResponse(Response):
    plaintext: bytes
    key_version: str

    def __repr__(self) -> str:
        return f"DecryptResponse(plaintext=<{len(self.plaintext)} bytes>)"


class SignRequest(Request):
    input: bytes
    key_version: KeyVersionInput = None
    hash_algorithm: str | None = None
    prehashed: bool = False
    context: bytes | None = None
    signature_algorithm: str | None = None  # *Extension*: pss (default) or pkcs1v15
    marshaling_algorithm: str | None = None  # *Extension*: asn1 (default) or jws

    def __repr__(self) -> str:
        return f"SignRequest(input=<{len(self.input)} bytes>)"


class SignResponse(Response):
    signature: str
    key_version: str


class VerifyRequest(Request):
    input: bytes
    signature: str
    hash_algorithm: str | None = None
    prehashed: bool = False
    context: bytes | None = None
    signature_algorithm: str | None = None
    marshaling_algorithm: str | None = None

    def __repr__(self) -> str:
        return f"VerifyRequest(input=<{len(self.input)} bytes>)"


class VerifyResponse(Response):
    valid: bool


class HmacRequest(Request):
    input: bytes
    key_version: KeyVersionInput = None
    algorithm: str | None = None
    hash_algorithm: str | None = None  # the name verify-hmac uses, accepted here too

    def __repr__(self) -> str:
        return f"HmacRequest(input=<{len(self.input)} bytes>)"


class HmacResponse(Response):
    hmac: str
    key_version: str


class VerifyHmacRequest(Request):
    input: bytes
    hmac: str
    hash_algorithm: str | None = None
    algorithm: str | None = None  # the name hmac uses, accepted here too

    def __repr__(self) -> str:
        return f"VerifyHmacRequest(input=<{len(self.input)} bytes>)"


class VerifyHmacResponse(Response):
    valid: bool
    key_version: str


class PublicKeyResponse(Response):
    keys: dict[str, str]


class ExportRequest(Request):
    key_version: KeyVersionInput = None


class ExportResponse(Response):
    key_material: bytes
    key_version: str

    def __repr__(self) -> str:
        return "ExportResponse(key_material=<redacted>)"


# --- summary ---------------------------------------------------------------------------------


class RegionSummaryView(Response):
    identity: str
    name: str
    slug: str
    kms_available: bool
    total_keys: int
    active_keys: int
    disabled_keys: int
    pending_deletion_keys: int


class SummaryResponse(Response):
    feature_enabled: bool
    regions: list[RegionSummaryView]


# --- administration (extension) ---------------------------------------------------------------


class OrganisationItem(Response):
    identity: str
    name: str
    slug: str
    kms_enabled: bool
    created_at: datetime
    object_version: int
    #: Set once the organisation was crypto-shredded.
    shredded_at: datetime | None = None


class ShredOrganisationRequest(Request):
    #: The organisation's slug or identity again: shredding cannot be undone.
    confirm: str


# --- the seal and the root key (/v1/sys) ------------------------------------------------------


class SealStatusResponse(Response):
    sealed: bool
    type: str
    threshold: int
    shares: int
    progress: int
    installation: str
    reason: str | None = None


class UnsealRequest(Request):
    #: One unseal key share, base64 as ``coffer init`` printed it.
    key: str | None = None
    #: Forget the shares given so far.
    reset: bool = False


class RootStatusResponse(Response):
    installation: str
    seal_type: str
    active_generation: int
    rotating: bool
    previous_generations: list[int]
    #: Blobs (organisation KEKs, wrapping keys, purpose keys) still wrapped by an old generation.
    remaining: int


class AuditPublicKeyResponse(Response):
    #: PEM SubjectPublicKeyInfo of the Ed25519 key that signs audit checkpoints.
    public_key: str
    algorithm: str


class CreateOrganisationRequest(Request):
    name: str
    slug: str | None = None
    kms_enabled: bool = True


class ProjectView(Response):
    identity: str
    name: str
    slug: str
    organisation_identity: str
    created_at: datetime


class CreateProjectRequest(Request):
    name: str


class ServiceAccountView(Response):
    identity: str
    name: str
    organisation_identity: str | None
    created_at: datetime


class CreateServiceAccountRequest(Request):
    name: str


class TokenView(Response, omit_defaults=True):
    identity: str
    #: ``None`` for a platform administrator's token.
    service_account_identity: str | None
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    #: Whose token it is: the service account, or the platform administrator.
    principal_identity: str
    #: Set when revoking left no working platform administrator token.
    warning: str | None = None


class CreateTokenRequest(Request):
    #: Required with ``X-Organisation-Identity``; absent for a platform administrator's token.
    service_account: str | None = None
    expires_in_seconds: int | None = None


class NewTokenResponse(Response):
    """The token itself appears here once; Coffer keeps only a keyed digest."""

    identity: str
    token: str
    #: ``None`` for a platform administrator's token.
    service_account_identity: str | None
    created_at: datetime
    expires_at: datetime | None
    principal_identity: str

    def __repr__(self) -> str:
        return f"NewTokenResponse(identity={self.identity!r}, token=<redacted>)"


class RoleBindingView(Response):
    identity: str
    principal_identity: str
    organisation_identity: str
    policy: str
    scope: str
    project_identity: str | None
    key_identity: str | None


class CreateRoleBindingRequest(Request):
    principal: str
    policy: str
    project: str | None = None
    key: str | None = None


# --- health ----------------------------------------------------------------------------------


class HealthResponse(Response):
    status: str


# --- audit -----------------------------------------------------------------------------------


class AuditContext(msgspec.Struct, kw_only=True):
    region: str | None
    keySlug: str | None
    keyType: str | None
    keyVersion: int | None
    outcome: str
    status: int
    errorCode: str | None
    plaintextBytes: int | None
    ciphertextBytes: int | None
    # Absent from records written before the storage barrier.
    objectVersion: int | None = None
    client_ip: str | None
    user_agent: str | None
    requestId: str


class AuditItem(Response):
    seq: int
    event_id: str
    created_at: datetime
    user_identity: str | None
    service_account_identity: str | None
    principal_kind: str | None
    organization_identity: str | None
    project_id: str | None
    action: str
    resource_type: str
    resource_identity: str | None
    context: AuditContext


class AuditPageResponse(Response):
    items: list[AuditItem]
    total_items: int
    page: int
    items_per_page: int
    total_pages: int
    total_count: int
