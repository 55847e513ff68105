"""Request parsing and response encoding shared by every endpoint module."""

from __future__ import annotations

import json as stdlib_json
import logging
import re
import secrets
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import msgspec
import msgspec.inspect
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from coffer.api.errors import error_response
from coffer.domain.paging import MAX_PAGE, After, Paged, PageRequest
from coffer.errors import ClientGone, Internal, InvalidRequest, RequestTooLarge, shown
from coffer.metrics import UNMATCHED, RequestMeter
from coffer.service.context import RequestMeta
from coffer.service.services import Services

T = TypeVar("T")
log = logging.getLogger(__name__)

_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_BASE64_ERROR = re.compile(r"Invalid base64 encoded string - at `\$\.(\w+)`")
_AUTH_SCHEMES = ("bearer", "token")
_VERSION = re.compile(r"[0-9]{1,10}")


class RequestIdMiddleware:
    """Gives every request an id (the caller's ``X-Request-Id`` if sane) and echoes it on every
    response, the 500 of an unexpected exception included (which is answered here).

    With a ``meter``, also counts and times every request under its route's operation name
    (``operations``: endpoint function → name); done here, where the response's start already
    passes by, so that metrics add no layer of their own to the request's way."""

    def __init__(
        self,
        app: ASGIApp,
        meter: RequestMeter | None = None,
        operations: Mapping[Callable[..., Any], str] | None = None,
    ) -> None:
        self.app = app
        self.meter = meter
        self.operations = operations or {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = None
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                candidate = value.decode("latin-1")
                if _REQUEST_ID.fullmatch(candidate):
                    request_id = candidate
                break
        if request_id is None:
            request_id = secrets.token_hex(16)
        scope.setdefault("state", {})["request_id"] = request_id
        header = (b"x-request-id", request_id.encode("ascii"))

        started = False
        status = 500
        arrived = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal started, status
            if message["type"] == "http.response.start":
                started = True
                status = message["status"]
                message["headers"] = [*message.get("headers", []), header]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            log.exception("request %s failed unexpectedly", request_id)
            if started:
                raise
            response = error_response(500, Internal.default_message, Internal.code, request_id)
            await response(scope, receive, send_with_id)
        finally:
            if self.meter is not None:
                # The router put the matched route's endpoint into the scope.
                operation = self.operations.get(scope.get("endpoint"), UNMATCHED)  # type: ignore[arg-type]
                self.meter.observe(operation, status, time.perf_counter() - arrived)


def services(request: Request) -> Services:
    found: Services = request.app.state.services
    return found


def bearer_token(request: Request) -> str | None:
    """The token of ``Authorization: Bearer <t>`` or ``Token <t>`` (the Go client's form)."""
    header = request.headers.get("authorization")
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() not in _AUTH_SCHEMES:
        return None
    return token.strip() or None


#: The longest header value an audit record keeps (longer ones are cut and marked).
MAX_RECORDED_HEADER = 256
TRUNCATED = "…[truncated]"


def recorded(value: str | None) -> str | None:
    """``value`` as an audit record keeps it: at most ``MAX_RECORDED_HEADER`` characters."""
    if value is None or len(value) <= MAX_RECORDED_HEADER:
        return value
    return value[:MAX_RECORDED_HEADER] + TRUNCATED


def meta(request: Request) -> RequestMeta:
    headers = request.headers
    return RequestMeta(
        request_id=str(request.state.request_id),
        token=bearer_token(request),
        organisation_ref=headers.get("x-organisation-identity") or None,
        project_ref=headers.get("x-project-identity") or None,
        client_ip=request.client.host if request.client else None,
        user_agent=recorded(headers.get("user-agent")),
    )


class Body:
    """A request body as read, decoded only when the operation asks for it (after the caller
    and the key have been checked), so a bad body never answers before a missing token does."""

    __slots__ = ("_data", "_error")

    def __init__(self, data: bytes, error: InvalidRequest | None = None) -> None:
        self._data = data
        self._error = error

    def __repr__(self) -> str:
        return f"<Body {len(self._data)} bytes>"

    def decode(self, type_: type[T], *, optional: bool = False) -> T:
        """Parse the JSON body into ``type_``; every failure is a 4xx that says what is wrong.
        With ``optional``, an empty body means a request with every field at its default."""
        if self._error is not None:
            raise self._error
        if optional and not self._data.strip():
            return type_()
        return decode(self._data, type_)


async def read_body(request: Request) -> Body:
    """Read the body, but no more than the configured size."""
    limit = services(request).settings.max_body_bytes
    too_large = RequestTooLarge(f"request body must be at most {limit} bytes")
    declared = request.headers.get("content-length")
    if declared is not None and _VERSION.fullmatch(declared) and int(declared) > limit:
        return Body(b"", too_large)
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                return Body(b"", too_large)
            chunks.append(chunk)
    except ClientDisconnect:
        raise ClientGone() from None  # an aborted upload: a 4xx nobody reads, no traceback
    return Body(b"".join(chunks))


class _DuplicateKey(Exception):
    pass


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    made = dict(pairs)
    if len(made) != len(pairs):
        raise _DuplicateKey(next(k for i, (k, _) in enumerate(pairs) if k in dict(pairs[:i])))
    return made


_DUPLICATES = stdlib_json.JSONDecoder(object_pairs_hook=_unique)


_NAMES: dict[Any, tuple[tuple[bytes, ...], tuple[bytes, ...]]] = {}
_SIMPLE = (msgspec.inspect.StrType, msgspec.inspect.IntType, msgspec.inspect.BoolType,
           msgspec.inspect.BytesType, msgspec.inspect.FloatType)  # fmt: skip


def _names(type_: type[Any]) -> tuple[tuple[bytes, ...], tuple[bytes, ...]]:
    """The quoted field names of a request struct, and those of fields that hold objects or
    arrays (whose own keys are not known in advance)."""
    known = _NAMES.get(type_)
    if known is not None:
        return known
    flat: list[bytes] = []
    nested: list[bytes] = []
    if isinstance(type_, type) and issubclass(type_, msgspec.Struct):
        info = msgspec.inspect.type_info(type_)
        assert isinstance(info, msgspec.inspect.StructType)
        for field in info.fields:
            quoted = b'"' + field.encode_name.encode() + b'"'
            kinds = getattr(field.type, "types", (field.type,))  # a union: each of its kinds
            plain = all(isinstance(k, (*_SIMPLE, msgspec.inspect.NoneType)) for k in kinds)
            (flat if plain else nested).append(quoted)
    _NAMES[type_] = (tuple(flat), tuple(nested))
    return _NAMES[type_]


def _refuse_duplicate_keys(body: bytes, type_: type[Any]) -> None:
    """A name twice in one JSON object is a 400: msgspec (like most parsers) would keep the
    last one, so ``{"exportAllowed": false, "exportAllowed": true}`` would mean whatever the
    last parser in a chain of proxies and logs decided.

    The full check parses the body again (~5 µs for a small one), so it runs only when a
    duplicate is possible: a known name appears twice, a field holding an object or array is
    there, or the body has an escape (a name can be spelt with one: ``"export\\u0041llowed"``).
    Without escapes a name's bytes are its text, and a quote inside a string value needs an
    escape, so a duplicate of a known name always shows as its quoted name twice."""
    flat, nested = _names(type_)
    if (
        b"\\" not in body
        and not any(name in body for name in nested)
        and not any(body.count(name) > 1 for name in flat)
    ):
        return
    try:
        _DUPLICATES.decode(body.decode())
    except _DuplicateKey as exc:
        raise InvalidRequest(f"request body names {shown(str(exc))} twice in one object") from None
    except (ValueError, RecursionError):  # not JSON, or too deep: msgspec says what is wrong
        return


def decode(body: bytes, type_: type[T]) -> T:
    """Parse a JSON body into ``type_``; every failure is a 400 that says what is wrong."""
    if not body.strip():
        raise InvalidRequest("request body must be a JSON object")
    _refuse_duplicate_keys(body, type_)
    try:
        return msgspec.json.decode(body, type=type_)
    except msgspec.ValidationError as exc:
        # msgspec names the failing path in its message; say it the way the spec words it for
        # base64 fields.
        match = _BASE64_ERROR.fullmatch(str(exc))
        if match:
            raise InvalidRequest(f"{match.group(1)} must be valid base64") from None
        raise InvalidRequest(str(exc)) from None
    except msgspec.DecodeError:
        raise InvalidRequest("request body must be valid JSON") from None
    except UnicodeDecodeError:  # msgspec's, for a string (value or name) that is not UTF-8
        raise InvalidRequest("request body must be JSON in UTF-8") from None


#: The header that carries the cursor of a list's next page.
NEXT_CURSOR = "X-Next-Cursor"


def page(request: Request, default_limit: int | None) -> PageRequest:
    """``limit`` (1 to 1,000; ``default_limit`` when absent) and ``cursor`` (opaque: what a
    previous page's ``X-Next-Cursor`` said) of a list request."""
    query = request.query_params
    limit = default_limit
    text = query.get("limit")
    if text is not None:
        if not (text.isascii() and text.isdigit() and 1 <= int(text) <= MAX_PAGE):
            raise InvalidRequest(f"limit must be an integer between 1 and {MAX_PAGE}")
        limit = int(text)
    cursor = query.get("cursor")
    after = None
    if cursor is not None:
        found = CURSOR.fullmatch(cursor)
        if found is None:
            raise InvalidRequest("cursor is not one a page of this list gave")
        at = _EPOCH + timedelta(microseconds=int(found.group(1)))
        after = (at, found.group(2))
        if limit is None:
            limit = MAX_PAGE  # a cursor pages: the rest comes page by page too
    return PageRequest(limit, after)


#: A cursor: where the previous page ended, as ``<microseconds since 1970>.<identity>`` (opaque
#: to clients; any such string is a position in the list, so none is refused but a malformed one).
CURSOR = re.compile(r"([0-9]{1,16})\.([A-Za-z0-9_-]{1,64})")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def cursor_of(after: After) -> str:
    at, identity = after
    return f"{(at - _EPOCH) // timedelta(microseconds=1)}.{identity}"


def page_json(items: Any, found: Paged[Any]) -> Response:
    """A list's page as a JSON array, with the next page's cursor in ``X-Next-Cursor``."""
    headers = None
    if found.next_after is not None:
        headers = {NEXT_CURSOR: cursor_of(found.next_after)}
    return json(items, headers=headers)


def json(value: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        msgspec.json.encode(value),
        status_code=status,
        media_type="application/json",
        headers=headers,
    )


def key_version(value: str | int | None) -> int | None:
    """``keyVersion`` of a request: a positive integer, given as a number or a string."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise InvalidRequest("keyVersion must be a positive integer")
    if isinstance(value, str):
        if _VERSION.fullmatch(value) is None:
            raise InvalidRequest("keyVersion must be a positive integer")
        value = int(value)
    if value < 1:
        raise InvalidRequest("keyVersion must be a positive integer")
    return value
