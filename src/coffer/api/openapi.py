"""The OpenAPI 3.1 document, generated from the endpoint table and the msgspec structs."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import msgspec

from coffer.api.routes import Endpoint
from coffer.schemas import ErrorBody

_REF = "#/components/schemas/{name}"
_PATH_PARAM = re.compile(r"{(\w+)}")
_PARAM_DOCS = {
    "region": "Region identity or slug, e.g. nl-01",
    "key": "Key identity or slug",
}


def _error_response(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": _REF.format(name="ErrorBody")}}},
    }


def build_openapi(endpoints: Sequence[Endpoint], version: str) -> dict[str, Any]:
    types: list[Any] = [ErrorBody]
    for endpoint in endpoints:
        types += [t for t in (endpoint.request, endpoint.response) if t is not None]
    schemas, components = msgspec.json.schema_components(types, ref_template=_REF)
    schema_of = dict(zip(map(id, types), schemas, strict=True))

    paths: dict[str, dict[str, Any]] = {}
    for endpoint in endpoints:
        parameters: list[dict[str, Any]] = [
            {
                "name": name,
                "in": "path",
                "required": True,
                "schema": {"type": "string"},
                "description": _PARAM_DOCS.get(name, name),
            }
            for name in _PATH_PARAM.findall(endpoint.path)
        ]
        parameters += [
            {
                "name": name,
                "in": "query",
                "required": False,
                "schema": {"type": "string"},
            }
            for name in endpoint.query
        ]
        operation: dict[str, Any] = {
            "summary": endpoint.summary,
            "operationId": endpoint.operation,
            "responses": {
                str(endpoint.status): {
                    "description": endpoint.summary,
                    "content": {endpoint.media_type: {"schema": schema_of[id(endpoint.response)]}},
                },
                "default": _error_response("Error"),
            },
        }
        if endpoint.kms:
            parameters += [
                {
                    "name": "X-Organisation-Identity",
                    "in": "header",
                    "required": not endpoint.organisation_optional,
                    "schema": {"type": "string"},
                    "description": "Organisation identity or slug"
                    + (
                        "; without it, a platform administrator acts on the platform "
                        "administrators' tokens"
                        if endpoint.organisation_optional
                        else ""
                    ),
                },
                {
                    "name": "X-Project-Identity",
                    "in": "header",
                    "required": False,
                    "schema": {"type": "string"},
                    "description": "Project identity or slug: selects project-scoped keys",
                },
            ]
            operation["security"] = [{"bearer": []}]
        elif endpoint.token_only:
            operation["security"] = [{"bearer": []}]
        else:
            operation["security"] = []
        if parameters:
            operation["parameters"] = parameters
        if endpoint.request is not None:
            operation["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": schema_of[id(endpoint.request)]}},
            }
        paths.setdefault(endpoint.path, {})[endpoint.method.lower()] = operation

    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Coffer KMS API",
            "version": version,
            "description": "A self-hosted Key Management Service speaking the Thalassa Cloud "
            "KMS API. Bytes are standard base64 with padding.",
        },
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
