"""``/v1/kms/{region}/keys``: list, create and get keys (spec §5.2–5.4)."""

from __future__ import annotations

from collections.abc import Mapping

from starlette.requests import Request
from starlette.responses import Response

from coffer.api import http
from coffer.domain.keys import Key, KeyFilter, KeySpec, KeyStatus
from coffer.domain.keytypes import KeyType
from coffer.domain.signing import BYOK_ALGORITHM, ImportHash
from coffer.domain.tenants import Organisation
from coffer.errors import InvalidRequest
from coffer.schemas import (
    CreateKeyRequest,
    KeyVersionView,
    KmsKey,
    OrganisationView,
    WrappingKeyResponse,
)
from coffer.service.keys import CreateInput


def key_view(
    key: Key, organisation: Organisation, encryptions: Mapping[int, int] | None = None
) -> KmsKey:
    return KmsKey(
        identity=key.identity,
        name=key.name,
        slug=key.slug,
        description=key.description,
        labels=dict(key.labels),
        annotations=dict(key.annotations),
        project_id=key.project_identity,
        key_type=key.key_type.value,
        status=key.status.value,
        export_allowed=key.export_allowed,
        imported=key.imported,
        key_rotation_enabled=key.key_rotation_enabled,
        rotation_period_in_days=key.rotation_period_days,
        latest_version=key.latest_version,
        min_decryption_version=key.min_decryption_version,
        versions=[
            KeyVersionView(
                version=v.version,
                status=key.version_status(v.version).value,
                created_at=v.created_at,
                encryptions=encryptions.get(v.version, 0) if encryptions is not None else None,
            )
            for v in key.versions
        ],
        deletion_scheduled_at=key.deletion_scheduled_at,
        created_at=key.created_at,
        updated_at=key.updated_at,
        object_version=key.object_version,
        organisation=OrganisationView(
            identity=organisation.identity,
            name=organisation.name,
            slug=organisation.slug,
            created_at=organisation.created_at,
            object_version=organisation.object_version,
        ),
    )


def _key_filter(request: Request) -> KeyFilter:
    query = request.query_params
    status = query.get("status")
    key_type = query.get("keyType")
    try:
        parsed_status = KeyStatus(status) if status is not None else None
    except ValueError:
        raise InvalidRequest(f"status must be one of {', '.join(KeyStatus)}") from None
    try:
        parsed_type = KeyType(key_type) if key_type is not None else None
    except ValueError:
        raise InvalidRequest("keyType is not a known key type") from None
    labels = {
        name[len("matchLabels[") : -1]: value
        for name, value in query.multi_items()
        if name.startswith("matchLabels[") and name.endswith("]")
    }
    return KeyFilter(
        identity=query.get("identity"),
        name=query.get("name"),
        slug=query.get("slug"),
        status=parsed_status,
        key_type=parsed_type,
        labels=labels,
    )


async def list_keys(request: Request) -> Response:
    # Without ``limit``, every key (the contract's list is one array; the key quota bounds it).
    caller, keys = await http.services(request).keys.list_keys(
        http.meta(request),
        request.path_params["region"],
        lambda: _key_filter(request),
        lambda: http.page(request, None),
    )
    return http.page_json([key_view(key, caller.organisation) for key in keys], keys)


async def create_key(request: Request) -> Response:
    meta = http.meta(request)
    body = await http.read_body(request)

    def given() -> CreateInput:
        given = body.decode(CreateKeyRequest)
        spec = KeySpec.build(
            name=given.name,
            key_type=given.key_type,
            description=given.description,
            labels=given.labels,
            annotations=given.annotations,
            export_allowed=given.export_allowed,
            key_rotation_enabled=given.key_rotation_enabled,
            rotation_period_days=given.rotation_period_in_days,
            allow_rotation=given.allow_rotation,
        )
        hash_function = ImportHash.parse(given.hash_function)
        return CreateInput(spec, given.import_key_material, hash_function)

    created = await http.services(request).keys.create_key(
        meta, request.path_params["region"], given
    )
    return http.json(key_view(created.key, created.caller.organisation), status=201)


async def wrapping_key(request: Request) -> Response:
    pem, expires_at = await http.services(request).keys.wrapping_key(
        http.meta(request), request.path_params["region"]
    )
    return http.json(
        WrappingKeyResponse(public_key=pem, algorithm=BYOK_ALGORITHM, expires_at=expires_at)
    )


async def get_key(request: Request) -> Response:
    found = await http.services(request).keys.get_key(
        http.meta(request), request.path_params["region"], request.path_params["key"]
    )
    return http.json(key_view(found.key, found.caller.organisation, found.encryptions))
