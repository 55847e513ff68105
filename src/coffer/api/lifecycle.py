"""Key lifecycle endpoints: rotate, rotation settings, disable, enable, delete, cancel-deletion
and the versions extension (spec §5.9, §5.12)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from coffer.api import http
from coffer.api.keys import key_view
from coffer.schemas import UpdateRotationRequest, UpdateVersionsRequest
from coffer.service.keys import Scoped
from coffer.service.lifecycle import RotationSettings


def _key_response(scoped: Scoped) -> Response:
    return http.json(key_view(scoped.key, scoped.caller.organisation))


def _path(request: Request) -> tuple[str, str]:
    return request.path_params["region"], request.path_params["key"]


async def rotate(request: Request) -> Response:
    lifecycle = http.services(request).lifecycle
    return _key_response(await lifecycle.rotate(http.meta(request), *_path(request)))


async def update_rotation(request: Request) -> Response:
    meta = http.meta(request)
    body = await http.read_body(request)

    def settings() -> RotationSettings:
        given = body.decode(UpdateRotationRequest)
        return RotationSettings(given.key_rotation_enabled, given.rotation_period_in_days)

    lifecycle = http.services(request).lifecycle
    return _key_response(await lifecycle.update_rotation(meta, *_path(request), settings))


async def update_versions(request: Request) -> Response:
    meta = http.meta(request)
    body = await http.read_body(request)
    lifecycle = http.services(request).lifecycle
    scoped = await lifecycle.set_min_decryption_version(
        meta, *_path(request), lambda: body.decode(UpdateVersionsRequest).min_decryption_version
    )
    return _key_response(scoped)


async def disable(request: Request) -> Response:
    lifecycle = http.services(request).lifecycle
    return _key_response(await lifecycle.disable(http.meta(request), *_path(request)))


async def enable(request: Request) -> Response:
    lifecycle = http.services(request).lifecycle
    return _key_response(await lifecycle.enable(http.meta(request), *_path(request)))


async def delete_key(request: Request) -> Response:
    lifecycle = http.services(request).lifecycle
    return _key_response(await lifecycle.schedule_deletion(http.meta(request), *_path(request)))


async def cancel_deletion(request: Request) -> Response:
    lifecycle = http.services(request).lifecycle
    return _key_response(await lifecycle.cancel_deletion(http.meta(request), *_path(request)))
