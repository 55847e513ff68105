"""``/v1/kms/{region}/keys/{key}/…``: encrypt, decrypt, sign, verify, hmac, verify-hmac, public-key
and export (spec §5.5–5.8, §5.10)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from coffer.api import http
from coffer.errors import InvalidRequest
from coffer.schemas import (
    DecryptRequest,
    DecryptResponse,
    EncryptRequest,
    EncryptResponse,
    ExportRequest,
    ExportResponse,
    HmacRequest,
    HmacResponse,
    PublicKeyResponse,
    SignRequest,
    SignResponse,
    VerifyHmacRequest,
    VerifyHmacResponse,
    VerifyRequest,
    VerifyResponse,
)
from coffer.service.crypto import CryptoService, EncryptInput, MacInput, SignInput


def _call(request: Request) -> tuple[CryptoService, str, str]:
    return (
        http.services(request).crypto,
        request.path_params["region"],
        request.path_params["key"],
    )


def _either(first: str | None, second: str | None) -> str | None:
    """``algorithm`` and ``hashAlgorithm`` name the same thing; both may be given if equal."""
    if first is not None and second is not None and first != second:
        raise InvalidRequest("algorithm and hashAlgorithm differ; give one of them")
    return first if first is not None else second


async def encrypt(request: Request) -> Response:
    meta = http.meta(request)
    body = await http.read_body(request)

    def given() -> EncryptInput:
        parsed = body.decode(EncryptRequest)
        return EncryptInput(parsed.plaintext, http.key_version(parsed.key_version))

    crypto, region, key = _call(request)
    result = await crypto.encrypt(meta, region, key, given)
    return http.json(EncryptResponse(ciphertext=result.value, key_version=str(result.key_version)))


async def decrypt(request: Request) -> Response:
    meta = http.meta(request)
    body = await http.read_body(request)
    crypto, region, key = _call(request)
    result = await crypto.decrypt(meta, region, key, lambda: body.decode(DecryptRequest).ciphertext)
    return http.json(DecryptResponse(plaintext=result.data, key_version=str(result.key_version)))


def _sign_input(parsed: SignRequest | VerifyRequest, key_version: int | None) -> SignInput:
    return SignInput(
        data=parsed.input,
        key_version=key_version,
        hash_algorithm=parsed.hash_algorithm,
        prehashed=parsed.prehashed,
        signature_algorithm=parsed.signature_algorithm,
        marshaling_algorithm=parsed.marshaling_algorithm,
        context=parsed.context,
    )


async def sign(request: Request) -> Response:
    meta = http.meta(request)
    body = await http.read_body(request)

    def given() -> SignInput:
        parsed = body.decode(SignRequest)
        return _sign_input(parsed, http.key_version(parsed.key_version))

    crypto, region, key = _call(request)
    result = await crypto.sign(meta, region, key, given)
    return http.json(SignResponse(signature=result.value, key_version=str(result.key_version)))


async def verify(request: Request) -> Response:
    meta = http.meta(request)
    body = await http.read_body(request)

    def given() -> tuple[SignInput, str]:
        parsed = body.decode(VerifyRequest)
        return _sign_input(parsed, None), parsed.signature

    crypto, region, key = _call(request)
    result = await crypto.verify(meta, region, key, given)
    return http.json(VerifyResponse(valid=result.valid))


async def hmac(request: Request) -> Response:
    meta = http.meta(request)
    body = await http.read_body(request)

    def given() -> MacInput:
        parsed = body.decode(HmacRequest)
        return MacInput(
            parsed.input,
            http.key_version(parsed.key_version),
            _either(parsed.algorithm, parsed.hash_algorithm),
        )

    crypto, region, key = _call(request)
    result = await crypto.hmac(meta, region, key, given)
    return http.json(HmacResponse(hmac=result.value, key_version=str(result.key_version)))


async def verify_hmac(request: Request) -> Response:
    meta = http.meta(request)
    body = await http.read_body(request)

    def given() -> tuple[MacInput, str]:
        parsed = body.decode(VerifyHmacRequest)
        algorithm = _either(parsed.hash_algorithm, parsed.algorithm)
        return MacInput(parsed.input, None, algorithm), parsed.hmac

    crypto, region, key = _call(request)
    result = await crypto.verify_hmac(meta, region, key, given)
    return http.json(VerifyHmacResponse(valid=result.valid, key_version=str(result.key_version)))


async def public_key(request: Request) -> Response:
    meta = http.meta(request)
    crypto, region, key = _call(request)
    keys = await crypto.public_key(
        meta, region, key, lambda: http.key_version(request.query_params.get("version"))
    )
    return http.json(PublicKeyResponse(keys={str(v): pem for v, pem in keys.items()}))


async def export(request: Request) -> Response:
    meta = http.meta(request)
    body = await http.read_body(request)
    crypto, region, key = _call(request)
    result = await crypto.export(
        meta,
        region,
        key,
        lambda: http.key_version(body.decode(ExportRequest, optional=True).key_version),
    )
    return http.json(ExportResponse(key_material=result.data, key_version=str(result.key_version)))
