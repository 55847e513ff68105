"""``/v1/sys/...``: the seal and the root key (an extension, after Vault's ``sys`` paths), and
``GET /v1/audit/public-key``."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from coffer.api import http
from coffer.domain.seal import RootStatus, SealStatus
from coffer.schemas import (
    AuditPublicKeyResponse,
    RootStatusResponse,
    SealStatusResponse,
    UnsealRequest,
)


def _seal_status(status: SealStatus) -> SealStatusResponse:
    return SealStatusResponse(
        sealed=status.sealed,
        type=status.type.value,
        threshold=status.threshold,
        shares=status.shares,
        progress=status.progress,
        installation=status.installation,
        reason=status.reason,
    )


def _root_status(status: RootStatus) -> RootStatusResponse:
    return RootStatusResponse(
        installation=status.installation,
        seal_type=status.seal_type.value,
        active_generation=status.active_generation,
        rotating=status.rotating,
        previous_generations=list(status.previous_generations),
        remaining=status.remaining,
    )


async def seal_status(request: Request) -> Response:
    return http.json(_seal_status(http.services(request).sys.seal_status()))


async def unseal(request: Request) -> Response:
    body = (await http.read_body(request)).decode(UnsealRequest)
    status = await http.services(request).sys.unseal(http.meta(request), body.key, body.reset)
    return http.json(_seal_status(status))


async def seal(request: Request) -> Response:
    return http.json(_seal_status(await http.services(request).sys.seal(http.meta(request))))


async def root_status(request: Request) -> Response:
    status = await http.services(request).sys.root_status(http.meta(request))
    return http.json(_root_status(status))


async def rotate_root(request: Request) -> Response:
    status = await http.services(request).sys.rotate_root(http.meta(request))
    return http.json(_root_status(status), status=202)


async def audit_public_key(request: Request) -> Response:
    pem = await http.services(request).sys.audit_public_key(http.meta(request))
    return http.json(AuditPublicKeyResponse(public_key=pem, algorithm="ed25519"))
