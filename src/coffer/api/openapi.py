"""The OpenAPI 3.1 document, generated from the endpoint table and the msgspec structs."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import msgspec

from coffer.api.http import CURSOR
from coffer.api.routes import Endpoint
from coffer.domain.keys import (
    MAX_DESCRIPTION_LENGTH,
    MAX_LABEL_VALUE_LENGTH,
    MAX_LABELS,
    MAX_ROTATION_DAYS,
    MIN_ROTATION_DAYS,
    KeyStatus,
)
from coffer.domain.keytypes import KeyType
from coffer.domain.permissions import ORGANISATION_ONLY_POLICIES, POLICIES
from coffer.domain.signing import ImportHash
from coffer.domain.slugs import MAX_SLUG_LENGTH
from coffer.schemas import ErrorBody

_REF = "#/components/schemas/{name}"
_PATH_PARAM = re.compile(r"{(\w+)}")
_PARAM_DOCS = {
    "region": "Region identity or slug, e.g. nl-01",
    "key": "Key identity or slug",
}


_TEXT = {"type": "string", "pattern": "^[^\\u0000]*$"}  # no NUL: no engine stores one
#: What each query parameter takes: what the server accepts, no more and no less.
_QUERY_SCHEMAS: dict[str, dict[str, Any]] = {
    "status": {"type": "string", "enum": [s.value for s in KeyStatus]},
    "keyType": {"type": "string", "enum": [t.value for t in KeyType]},
    "version": {"type": "integer", "minimum": 1, "maximum": 9_999_999_999},
    "page": {"type": "integer", "minimum": 1, "maximum": 1_000_000_000},
    "limit": {"type": "integer", "minimum": 1, "maximum": 1000},
    "responseStatus": {"type": "integer", "minimum": 100, "maximum": 599},
    "since": {"type": "string", "format": "date-time"},
    "until": {"type": "string", "format": "date-time"},
    "order": {"type": "string", "enum": ["asc", "desc"]},
    "afterSeq": {"type": "integer", "minimum": 0, "maximum": 2**62},
    "cursor": {"type": "string", "pattern": f"^{CURSOR.pattern}$"},
}


#: A name that makes a slug: 1 to 255 characters, an ASCII letter or digit among them.
_SLUGGED_NAME = {"minLength": 1, "maxLength": 255, "pattern": "[A-Za-z0-9]"}
_LABELS = {
    "maxProperties": MAX_LABELS,
    "propertyNames": {"pattern": "^[A-Za-z0-9._/-]{1,63}$"},
    "additionalProperties": {"type": "string", "maxLength": MAX_LABEL_VALUE_LENGTH},
}
#: What the server checks beyond the types, added to the request bodies' schemas so that the
#: document promises no more than the server accepts (schemathesis holds both to it).
_CONSTRAINTS: dict[str, dict[str, dict[str, Any]]] = {
    "CreateKeyRequest": {
        "name": _SLUGGED_NAME,
        "keyType": {"enum": [t.value for t in KeyType]},
        "description": {"maxLength": MAX_DESCRIPTION_LENGTH},
        "labels": _LABELS,
        "annotations": _LABELS,
        "rotationPeriodInDays": {"minimum": MIN_ROTATION_DAYS, "maximum": MAX_ROTATION_DAYS},
        "hashFunction": {"enum": [h.value for h in ImportHash]},
    },
    "CreateOrganisationRequest": {
        "name": _SLUGGED_NAME,
        "slug": {"maxLength": MAX_SLUG_LENGTH, "pattern": "^[a-z0-9]+(-[a-z0-9]+)*$"},
    },
    "CreateProjectRequest": {"name": _SLUGGED_NAME},
    # ``oidc:`` names users of the identity provider in role bindings: no account has a colon.
    "CreateServiceAccountRequest": {
        "name": {"minLength": 1, "maxLength": 255, "pattern": "^[^:]*$"}
    },
    "CreateRoleBindingRequest": {"policy": {"enum": list(POLICIES)}, "principal": {"minLength": 1}},
}


#: Rules between fields of one body.
_STRING = {"type": "string"}
_OBJECT_RULES: dict[str, dict[str, Any]] = {
    "CreateRoleBindingRequest": {
        # A binding is on the organisation, a project or a key: not both of the last two.
        "not": {"properties": {"project": _STRING, "key": _STRING}, "required": ["project", "key"]},
        # Some policies are bound on the whole organisation only.
        "if": {"properties": {"policy": {"enum": sorted(ORGANISATION_ONLY_POLICIES)}}},
        "then": {"properties": {"project": {"type": "null"}, "key": {"type": "null"}}},
    },
}


def _constrained(components: dict[str, Any]) -> dict[str, Any]:
    for name, rules in _OBJECT_RULES.items():
        components[name].update(rules)
    for name, fields in _CONSTRAINTS.items():
        properties = components[name]["properties"]
        for field, extra in fields.items():
            schema = properties[field]
            if "anyOf" in schema:  # optional: the constraint goes on the non-null branch
                schema = next(s for s in schema["anyOf"] if s.get("type") != "null")
            schema.update(extra)
    return components


_NEXT_CURSOR = {
    "description": "Present when more items follow: send it back as ``cursor`` for the next page",
    "schema": {"type": "string"},
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
                "schema": _QUERY_SCHEMAS.get(name, _TEXT),
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
                    **(
                        {"headers": {"X-Next-Cursor": _NEXT_CURSOR}}
                        if "cursor" in endpoint.query
                        else {}
                    ),
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
            "schemas": _constrained(components),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
