"""``GET /v1/audit``: an organisation's audit records, filtered and paged (spec §8)."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from coffer.api import http
from coffer.domain.audit import RESOURCE_TYPES, AuditFilter
from coffer.errors import InvalidRequest
from coffer.schemas import AuditItem, AuditPageResponse
from coffer.service.audit import AuditQuery

_LEAP_SECOND = re.compile(r":60(\.[0-9]+)?(?=[+-]|$)")
MAX_LIMIT = 1000
DEFAULT_LIMIT = 100


def _int(query: dict[str, str], name: str, default: int, low: int, high: int) -> int:
    text = query.get(name)
    if text is None:
        return default
    if not text.isascii() or not text.isdigit() or not low <= int(text) <= high:
        raise InvalidRequest(f"{name} must be an integer between {low} and {high}")
    return int(text)


def _time(query: dict[str, str], name: str) -> datetime | None:
    text = query.get(name)
    if text is None:
        return None
    # RFC 3339 allows a lower-case t and z, and a leap second (:60, taken as the last instant
    # of the minute before it).
    text = text.replace("z", "+00:00").replace("Z", "+00:00")
    leap = _LEAP_SECOND.search(text)
    if leap is not None:
        text = text[: leap.start()] + ":59.999999" + text[leap.end() :]
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidRequest(f"{name} must be an RFC 3339 time") from None
    if parsed.tzinfo is None:
        raise InvalidRequest(f"{name} must carry a time zone (e.g. Z)")
    try:
        return parsed.astimezone(UTC)  # stored times are UTC; not every engine compares offsets
    except OverflowError:  # e.g. 0001-01-01T00:00:00+14:00: before the first UTC instant
        return (
            datetime.min.replace(tzinfo=UTC)
            if parsed.year == 1
            else datetime.max.replace(tzinfo=UTC)
        )


def _order(query: dict[str, str]) -> bool:
    order = query.get("order", "desc")
    if order not in ("asc", "desc"):
        raise InvalidRequest("order must be asc or desc")
    return order == "asc"


def _query(request: Request) -> AuditQuery:
    query = dict(request.query_params)
    page = _int(query, "page", 1, 1, 10**9)
    limit = _int(query, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
    status = _int(query, "responseStatus", 0, 100, 599) if "responseStatus" in query else None
    resource_type = query.get("resourceType")
    audit_filter = AuditFilter(
        action=query.get("action"),
        action_prefix=RESOURCE_TYPES.get(resource_type) if resource_type else None,
        resource_identity=query.get("resourceIdentity"),
        service_account=query.get("serviceAccount"),
        user_identity=query.get("userIdentity"),
        status=status,
        since=_time(query, "since"),
        until=_time(query, "until"),
        oldest_first=_order(query),
        after_seq=_int(query, "afterSeq", 0, 0, 2**62) if "afterSeq" in query else None,
    )
    for name, value in query.items():
        if "\x00" in value:
            raise InvalidRequest(f"{name} must not contain NUL characters")
    # A resource type no record has matches nothing.
    matches_nothing = resource_type is not None and resource_type not in RESOURCE_TYPES
    return AuditQuery(audit_filter, page, limit, matches_nothing)


async def list_audit(request: Request) -> Response:
    page = await http.services(request).audit.list(http.meta(request), lambda: _query(request))
    items = [msgspec.json.decode(record, type=AuditItem) for record in page.records]
    return http.json(
        AuditPageResponse(
            items=items,
            total_items=page.total,
            page=page.page,
            items_per_page=page.limit,
            total_pages=-(-page.total // page.limit),
            total_count=page.total,
        )
    )
