"""``/v1/kms/{region}/keys/{key}/encrypt|decrypt`` (spec §5.5)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from coffer.api import http
from coffer.api.schemas import DecryptRequest, DecryptResponse, EncryptRequest, EncryptResponse
from coffer.service.keys import EncryptInput


async def encrypt(request: Request) -> Response:
    meta = http.meta(request)
    body = await http.read_body(request)

    def given() -> EncryptInput:
        parsed = body.decode(EncryptRequest)
        return EncryptInput(parsed.plaintext, http.key_version(parsed.key_version))

    result = await http.services(request).keys.encrypt(
        meta, request.path_params["region"], request.path_params["key"], given
    )
    return http.json(
        EncryptResponse(ciphertext=result.ciphertext, key_version=str(result.key_version))
    )


async def decrypt(request: Request) -> Response:
    meta = http.meta(request)
    body = await http.read_body(request)
    result = await http.services(request).keys.decrypt(
        meta,
        request.path_params["region"],
        request.path_params["key"],
        lambda: body.decode(DecryptRequest).ciphertext,
    )
    return http.json(
        DecryptResponse(plaintext=result.plaintext, key_version=str(result.key_version))
    )
