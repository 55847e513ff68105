"""The one table that maps Coffer's errors to HTTP statuses, and the error body (spec §1)."""

from __future__ import annotations

import logging
from collections.abc import Mapping

import msgspec
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match, Route

from coffer import errors
from coffer.logs import Throttled, dependency, dependency_of
from coffer.schemas import ErrorBody

log = logging.getLogger(__name__)
unavailable = Throttled(log)

STATUS: dict[type[errors.CofferError], int] = {
    errors.Unauthenticated: 401,
    errors.OrganisationRequired: 400,
    errors.Forbidden: 403,
    errors.KmsNotEnabled: 403,
    errors.NotFound: 404,
    errors.InvalidRequest: 400,
    errors.RequestTooLarge: 413,
    errors.Conflict: 409,
    errors.QuotaExceeded: 409,
    errors.RateLimited: 429,
    errors.Unavailable: 503,
    errors.CofferError: 500,
}

#: The longest error message sent: every message that repeats input is cut before this (64
#: characters of the input), this is the net under them.
MAX_MESSAGE = 512

_HTTP_CODES = {404: "not_found", 405: "method_not_allowed"}


def status_of(error: errors.CofferError) -> int:
    """The status of the most specific class of ``error`` that the table names."""
    return next(STATUS[cls] for cls in type(error).__mro__ if cls in STATUS)


def request_id_of(request: Request) -> str:
    return str(getattr(request.state, "request_id", ""))


def error_response(
    status: int,
    message: str,
    code: str,
    request_id: str,
    headers: Mapping[str, str] | None = None,
) -> Response:
    if len(message) > MAX_MESSAGE:  # e.g. a parser's message naming a huge field
        message = message[:MAX_MESSAGE] + "…"
    body = msgspec.json.encode(ErrorBody(message=message, code=code, request_id=request_id))
    sent = dict(headers or {})
    if status == 401:
        sent["WWW-Authenticate"] = "Bearer"
    return Response(body, status_code=status, media_type="application/json", headers=sent or None)


async def coffer_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, errors.CofferError)
    status = status_of(exc)
    request_id = request_id_of(request)
    if isinstance(exc, errors.RateLimited):
        headers = {"Retry-After": str(exc.retry_after)}
        return error_response(status, exc.message, exc.code, request_id, headers)
    if isinstance(exc, errors.Busy):  # a state, not a fault: not logged per request
        return error_response(status, exc.message, exc.code, request_id, {"Retry-After": "1"})
    if status < 500:
        return error_response(status, exc.message, exc.code, request_id)
    if isinstance(exc, errors.RegionUnavailable | errors.Sealed):
        # A configured state, not a fault: nothing to log (the seal logs its changes once).
        return error_response(status, exc.message, exc.code, request_id)
    # Details (with the cause) stay in the server log; the client gets the request id to quote.
    if status == 503 and (away := dependency_of(exc)) is not None:
        # A dependency away (the database, an audit sink): its state says so once, down and
        # back, with the count of the requests it failed.
        dependency(away).request_failed()
        log.debug("request %s: %s (%s is down)", request_id, exc.message, away)
    elif status == 503:
        # The same cause (a full disk) answers many requests: its traceback once a minute.
        kind = f"{exc.message}/{type(exc.__cause__).__name__}"
        unavailable.failure(logging.WARNING, kind, "request %s: %s", request_id, exc.message,
                            exc_info=exc.__cause__)  # fmt: skip
    else:
        log.error("request %s failed: %s", request_id, exc.code, exc_info=exc)
    return error_response(status, type(exc).default_message, exc.code, request_id)


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = _HTTP_CODES.get(exc.status_code, "invalid_request")
    headers = exc.headers
    if exc.status_code == 405:
        # Every method the path has (``Allow``, RFC 9110 §15.5.6): the router stops at the first
        # route of the path, and the path's other methods are other routes.
        headers = {"Allow": ", ".join(sorted(_methods_of(request)))}
    return error_response(exc.status_code, str(exc.detail), code, request_id_of(request), headers)


def _methods_of(request: Request) -> set[str]:
    methods: set[str] = set()
    for route in getattr(request.app, "routes", []):
        if isinstance(route, Route) and route.matches(request.scope)[0] is not Match.NONE:
            methods |= route.methods or set()
    return methods


HANDLERS = {errors.CofferError: coffer_error, HTTPException: http_error}
