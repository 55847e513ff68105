"""One exception hierarchy for the whole of Coffer.

Every error has a stable snake_case ``code`` that clients can rely on, and a human ``message``.
No class here knows about HTTP: ``coffer.api.errors`` maps classes to statuses in one table.
Messages never carry key material, plaintext or tokens.
"""

from __future__ import annotations

from typing import ClassVar

__all__ = [
    "CofferError",
    "Conflict",
    "ExportNotAllowed",
    "Forbidden",
    "Internal",
    "InvalidCiphertext",
    "InvalidKeyMaterial",
    "InvalidKeyVersion",
    "InvalidPlaintext",
    "InvalidRequest",
    "InvalidSignatureFormat",
    "InvalidState",
    "InvalidUnsealKey",
    "KeyActive",
    "KeyDisabled",
    "KeyIntegrityError",
    "KeyNotFound",
    "KeyPendingDeletion",
    "KmsNotEnabled",
    "NotFound",
    "OrganisationRequired",
    "OrganisationShredded",
    "RegionNotFound",
    "RegionUnavailable",
    "RequestTooLarge",
    "RotationNotAllowed",
    "Sealed",
    "Unauthenticated",
    "Unavailable",
    "UnsupportedKeyType",
    "UnsupportedOperation",
    "error_class_for_code",
]


#: How much of a caller's input an error message repeats.
SHOWN_CHARACTERS = 64


def shown(value: str) -> str:
    """``value`` quoted for an error message, cut to ``SHOWN_CHARACTERS`` (a message never
    repeats a caller's input without a bound)."""
    if len(value) > SHOWN_CHARACTERS:
        return repr(value[:SHOWN_CHARACTERS]) + "…"
    return repr(value)


class CofferError(Exception):
    """Base of every error Coffer raises on purpose."""

    code: ClassVar[str] = "internal"
    default_message: ClassVar[str] = "internal error"

    def __init__(self, message: str | None = None, *, request_id: str | None = None) -> None:
        self.message = message if message is not None else self.default_message
        #: The server's request id, on errors a client received (see ``coffer.client``).
        self.request_id = request_id
        super().__init__(self.message)


# --- 401 / 403: who is calling and may they -----------------------------------------------


class Unauthenticated(CofferError):
    code = "unauthenticated"
    default_message = "missing, unknown or expired token"


class OrganisationRequired(CofferError):
    code = "organisation_required"
    default_message = "the X-Organisation-Identity header is required"


class Forbidden(CofferError):
    code = "forbidden"
    default_message = "you do not have permission to perform this action"


class KmsNotEnabled(CofferError):
    code = "kms_not_enabled"
    default_message = "KMS is not enabled for this organisation"


# --- 404: what is addressed does not exist (for this caller) ------------------------------


class NotFound(CofferError):
    code = "not_found"
    default_message = "not found"


class RegionNotFound(NotFound):
    code = "region_not_found"
    default_message = "region not found"


class KeyNotFound(NotFound):
    code = "key_not_found"
    default_message = "key not found"


# --- 400: the request itself is wrong -------------------------------------------------------


class InvalidRequest(CofferError):
    code = "invalid_request"
    default_message = "invalid request"


class ClientGone(InvalidRequest):
    """The client closed its connection before its request body was complete: there is nobody
    to answer (nothing is logged beyond the access log; nothing was done)."""

    code = "client_gone"
    default_message = "the client closed the connection before its request was complete"


class RequestTooLarge(InvalidRequest):
    code = "request_too_large"
    default_message = "request body too large"


class UnsupportedKeyType(InvalidRequest):
    code = "unsupported_key_type"
    default_message = "unsupported key type"


class UnsupportedOperation(InvalidRequest):
    code = "unsupported_operation"
    default_message = "this key type does not support this operation"


class InvalidPlaintext(InvalidRequest):
    code = "invalid_plaintext"
    default_message = "plaintext must be between 1 and 65535 bytes"


class InvalidCiphertext(InvalidRequest):
    """Every decryption failure, whatever its cause: one error, one message (no oracle)."""

    code = "invalid_ciphertext"
    default_message = "ciphertext is invalid or cannot be decrypted with this key"


class InvalidSignatureFormat(InvalidRequest):
    code = "invalid_signature_format"
    default_message = "signature is malformed"


class InvalidKeyVersion(InvalidRequest):
    code = "invalid_key_version"
    default_message = "key version is out of range"


class InvalidKeyMaterial(InvalidRequest):
    code = "invalid_key_material"
    default_message = "key material does not match the key type"


class InvalidState(InvalidRequest):
    code = "invalid_key_state"
    default_message = "the key is not in a state that allows this operation"


class KeyDisabled(InvalidState):
    code = "key_disabled"
    default_message = "the key is disabled"


class KeyPendingDeletion(InvalidState):
    code = "key_pending_deletion"
    default_message = "the key is scheduled for deletion"


class KeyActive(InvalidState):
    code = "key_active"
    default_message = "the key is active"


class EncryptionBudgetExhausted(InvalidState):
    code = "encryption_budget_exhausted"
    default_message = (
        "this key version has made as many encryptions as its random nonces safely allow"
    )


class RotationNotAllowed(InvalidState):
    code = "rotation_not_allowed"
    default_message = "this imported key was not created with allowRotation"


class OrganisationShredded(InvalidRequest):
    code = "organisation_shredded"
    default_message = "this organisation was crypto-shredded: it can hold no keys"


class InvalidUnsealKey(InvalidRequest):
    """A share that is not one of this installation's (or was given already)."""

    code = "invalid_unseal_key"
    default_message = "this is not an unseal key share of this installation"


class ExportNotAllowed(InvalidRequest):
    code = "export_not_allowed"
    default_message = "this key was not created with exportAllowed"


# --- 409 ------------------------------------------------------------------------------------


class Conflict(CofferError):
    code = "conflict"
    default_message = "a resource with this name already exists"


# --- 5xx: the server's side -----------------------------------------------------------------


class QuotaExceeded(CofferError):
    """An organisation has as many keys, or a key as many versions, as it may."""

    code = "quota_exceeded"
    default_message = "quota exceeded"


class RateLimited(CofferError):
    """Too many requests of one principal, or failed authentications of one address."""

    code = "rate_limited"
    default_message = "too many requests: retry after the time Retry-After gives"

    def __init__(
        self, message: str | None = None, *, retry_after: int = 1, request_id: str | None = None
    ) -> None:
        super().__init__(message, request_id=request_id)
        #: Whole seconds until a request would be admitted again.
        self.retry_after = retry_after


class Unavailable(CofferError):
    code = "unavailable"
    default_message = "the service is temporarily unavailable"

    def __init__(
        self,
        message: str | None = None,
        *,
        dependency: str | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(message, request_id=request_id)
        #: The dependency that is away (``"database"``, an audit sink), if that is the cause: its
        #: state logs the outage once (``coffer.logs``), not every request it fails.
        self.dependency = dependency


class Busy(Unavailable):
    """Too much in progress: the request was refused at once rather than queued."""

    code = "busy"
    default_message = "too much in progress: retry shortly"


class Sealed(Unavailable):
    """The root of trust is not open: nothing can be decrypted, written or signed."""

    code = "sealed"
    default_message = "Coffer is sealed; see GET /v1/sys/seal-status"


class IntegrityFailure(Unavailable):
    """A row of the database failed its integrity check where absence would not do (a key's
    wrapped material, an organisation's KEK): the row was tampered with, and it is reported."""

    code = "integrity"
    default_message = (
        "stored data failed its integrity check; the operator has been alerted (see the logs)"
    )


class RegionUnavailable(Unavailable):
    code = "region_unavailable"
    default_message = "KMS is not available in this region"


class Internal(CofferError):
    code = "internal"
    default_message = "internal error"


class KeyIntegrityError(Internal):
    """Stored key material failed its integrity check: tampering, or the wrong root key."""

    code = "internal"
    default_message = "internal error"


def _all_subclasses(cls: type[CofferError]) -> list[type[CofferError]]:
    found: list[type[CofferError]] = []
    for sub in cls.__subclasses__():
        found.append(sub)
        found.extend(_all_subclasses(sub))
    return found


def error_class_for_code(code: str) -> type[CofferError]:
    """The most general class below ``CofferError`` that carries ``code`` (clients map error
    bodies with this); ``CofferError`` itself for a code no class carries."""
    for cls in _all_subclasses(CofferError):
        if cls.code == code:
            return cls
    return CofferError
