"""``Client`` and ``AsyncClient``: every endpoint as a method, bytes in and out.

Errors are the classes the server raises (``coffer.errors``), chosen by the error body's
``code``, with the server's message and ``request_id``. Calls that change nothing are retried
with exponential back-off and jitter on 429, 502, 503 and 504 (honouring ``Retry-After``) and on
lost connections; calls that change something (create, rotate, disable, ...) only when the
connection could not even be opened, so that a change is never made twice. A failed TLS
handshake and an answer that is not HTTP are not retried: another attempt would fail the same
way (a server serving plain HTTP where HTTPS was asked for, or the reverse).
"""

from __future__ import annotations

import asyncio
import random
import ssl
import time
from collections.abc import Callable, Coroutine
from dataclasses import replace
from importlib.metadata import PackageNotFoundError, version
from typing import Any, Concatenate, ParamSpec, TypeVar

import httpx
import msgspec

from coffer.client import calls
from coffer.client.calls import Call
from coffer.client.connection import Connection
from coffer.errors import (
    CofferError,
    Conflict,
    Forbidden,
    Internal,
    InvalidRequest,
    NotFound,
    RequestTooLarge,
    Unauthenticated,
    Unavailable,
    error_class_for_code,
)
from coffer.schemas import ErrorBody

P = ParamSpec("P")
T = TypeVar("T")

_RETRY_STATUSES = frozenset({429, 502, 503, 504})
_BY_STATUS: dict[int, type[CofferError]] = {
    400: InvalidRequest,
    401: Unauthenticated,
    403: Forbidden,
    404: NotFound,
    405: InvalidRequest,
    409: Conflict,
    413: RequestTooLarge,
    429: Unavailable,
    500: Internal,
}
_MAX_DELAY = 5.0


def _user_agent() -> str:
    try:
        return f"coffer-client/{version('coffer')}"
    except PackageNotFoundError:
        return "coffer-client"


def error_from_response(status: int, content: bytes) -> CofferError:
    """The ``coffer.errors`` class the server meant, from the error body's ``code``."""
    try:
        body = msgspec.json.decode(content, type=ErrorBody)
    except msgspec.DecodeError:
        cls = _BY_STATUS.get(status, Unavailable if status >= 500 else InvalidRequest)
        return cls(f"HTTP {status} without a Coffer error body")
    cls = error_class_for_code(body.code)
    if cls is CofferError:  # a code this client does not know: fall back on the status
        cls = _BY_STATUS.get(status, Unavailable if status >= 500 else InvalidRequest)
    return cls(body.message, request_id=body.request_id or None)


#: The header of a paged list's answer naming the next page (``cursor``).
NEXT_CURSOR = "X-Next-Cursor"


class _Core:
    """What both clients share: the connection, headers, the retry rule, the answer."""

    def __init__(
        self,
        url: str | None,
        token: str | None,
        organisation: str | None,
        project: str | None,
        region: str | None,
        profile: str | None,
        retries: int,
        backoff: float,
        ca_cert: str | None = None,
    ) -> None:
        self.connection = Connection.resolve(
            url=url,
            token=token,
            organisation=organisation,
            project=project,
            region=region,
            profile=profile,
            ca_cert=ca_cert,
        )
        self._retries = retries
        self._backoff = backoff
        self._base = self.connection.url.rstrip("/")
        self._headers = {"User-Agent": _user_agent(), "Accept": "application/json"}
        if self.connection.token:
            self._headers["Authorization"] = f"Bearer {self.connection.token}"
        self._scoped = dict(self._headers)
        if self.connection.organisation:
            self._scoped["X-Organisation-Identity"] = self.connection.organisation
        if self.connection.project:
            self._scoped["X-Project-Identity"] = self.connection.project

    def verify(self) -> ssl.SSLContext | bool:
        """How HTTPS servers are checked: the system's authorities, or those of ``ca_cert``."""
        path = self.connection.ca_cert
        if path is None:
            return True
        try:
            return ssl.create_default_context(cafile=path)
        except ssl.SSLError as exc:  # a file that holds no PEM certificate
            reason = getattr(exc, "reason", None) or str(exc)
        except OSError as exc:
            reason = exc.strerror or str(exc)
        raise InvalidRequest(
            f"CA certificate file {path}: {reason}: give a PEM file of the certificate "
            "authority that signed the server's certificate"
        )

    def request(self, call: Call[Any]) -> dict[str, Any]:
        headers = self._scoped if call.organisation else self._headers
        if call.body is not None:
            headers = {**headers, "Content-Type": "application/json"}
        return {
            "method": call.method,
            "url": self._base + call.path,
            "params": list(call.params),
            "content": call.body,
            "headers": headers,
        }

    def answer(self, call: Call[T], response: httpx.Response) -> T:
        if response.status_code >= 400:
            raise error_from_response(response.status_code, response.content)
        try:
            return call.decode(response.content)
        except (msgspec.DecodeError, msgspec.ValidationError):
            # A proxy's page, a redirect: not Coffer answering.
            raise Unavailable(
                f"unexpected answer from {self._base} (HTTP {response.status_code})"
            ) from None

    @staticmethod
    def following(call: Call[T], response: httpx.Response) -> Call[T] | None:
        """The call of a paged list's next page, if the answer names one."""
        cursor = response.headers.get(NEXT_CURSOR)
        if not call.paged or not cursor:
            return None
        params = [(k, v) for k, v in call.params if k != "cursor"]
        return replace(call, params=(*params, ("cursor", cursor)))

    @staticmethod
    def joined(first: T, rest: T) -> T:
        """A page and the pages after it, as one list."""
        assert isinstance(first, list)
        assert isinstance(rest, list)
        first.extend(rest)
        return first

    def delay(self, call: Call[Any], attempt: int, response: httpx.Response | None,
              error: httpx.TransportError | None) -> float | None:  # fmt: skip
        """Seconds to wait before another attempt, or ``None`` to give up now."""
        if attempt >= self._retries:
            return None
        if error is not None and _broken(error) is not None:
            return None  # TLS or HTTP spoken to the wrong kind of server: it would fail again
        if error is not None:  # a lost connection: was anything sent? only ConnectError says no
            retry = call.idempotent or isinstance(error, httpx.ConnectError)
        else:
            status = response.status_code if response is not None else 0
            retry = call.idempotent and status in _RETRY_STATUSES
        if not retry:
            return None
        wait = random.uniform(0, min(_MAX_DELAY, self._backoff * 2**attempt))  # noqa: S311
        if response is not None:
            retry_after = response.headers.get("Retry-After", "")
            if retry_after.isdigit():
                wait = max(wait, min(_MAX_DELAY, float(retry_after)))
        return wait

    def unreachable(self, error: httpx.TransportError) -> Unavailable:
        broken = _broken(error)
        if isinstance(broken, ssl.SSLCertVerificationError):
            why = getattr(broken, "verify_message", None) or broken
            return Unavailable(
                f"{self._base}: the server's TLS certificate is not trusted ({why}): give the "
                "PEM file of its certificate authority (--ca-cert, COFFER_CA_CERT or ca_cert=)"
            )
        if isinstance(broken, ssl.SSLError):
            why = getattr(broken, "reason", None) or broken
            return Unavailable(
                f"{self._base}: TLS handshake failed ({why}): is the server serving plain HTTP? "
                "then use http://"
            )
        if broken is not None:
            return Unavailable(
                f"{self._base}: the answer is not HTTP ({error}): is the server serving HTTPS? "
                "then use https://"
            )
        hint = ""
        if isinstance(error, httpx.RemoteProtocolError) and self._base.startswith("http://"):
            hint = " (if the server serves HTTPS, use https://)"
        reason = str(error).rstrip(".") or type(error).__name__
        return Unavailable(f"cannot reach Coffer at {self._base}: {reason}{hint}")


def _broken(error: httpx.TransportError) -> BaseException | None:
    """What makes ``error`` certain to happen again: a failed TLS handshake (the ``ssl`` error),
    or an answer that is not HTTP (the error itself); ``None`` for a refused or lost
    connection, which another attempt may find working."""
    cause: BaseException | None = error
    while cause is not None:
        if isinstance(cause, ssl.SSLError):
            return cause
        cause = cause.__cause__ or cause.__context__
    if isinstance(error, httpx.LocalProtocolError):
        return error
    if isinstance(error, httpx.RemoteProtocolError) and "disconnected" not in str(error):
        return error  # a status line that is not HTTP; a dropped connection may be retried
    return None


def _sync(build: Callable[Concatenate[Connection, P], Call[T]]) -> Callable[Concatenate[Any, P], T]:
    def method(self: Any, /, *args: P.args, **kwargs: P.kwargs) -> T:
        client: Client = self._client
        return client._run(build(client.connection, *args, **kwargs))

    method.__name__ = build.__name__
    method.__doc__ = build.__doc__
    return method


def _async(
    build: Callable[Concatenate[Connection, P], Call[T]],
) -> Callable[Concatenate[Any, P], Coroutine[Any, Any, T]]:
    async def method(self: Any, /, *args: P.args, **kwargs: P.kwargs) -> T:
        client: AsyncClient = self._client
        return await client._run(build(client.connection, *args, **kwargs))

    method.__name__ = build.__name__
    method.__doc__ = build.__doc__
    return method


class _Namespace:
    def __init__(self, client: Any) -> None:
        self._client = client


# --- blocking ---------------------------------------------------------------------------------


class Keys(_Namespace):
    """``client.keys``: keys and their life cycle."""

    create = _sync(calls.create_key)
    list = _sync(calls.list_keys)
    get = _sync(calls.get_key)
    rotate = _sync(calls.rotate_key)
    update_rotation = _sync(calls.update_rotation)
    set_min_decryption_version = _sync(calls.set_min_decryption_version)
    disable = _sync(calls.disable_key)
    enable = _sync(calls.enable_key)
    delete = _sync(calls.delete_key)
    cancel_deletion = _sync(calls.cancel_deletion)
    public_key = _sync(calls.public_key)
    export = _sync(calls.export_key)
    wrapping_key = _sync(calls.wrapping_key)


class Audit(_Namespace):
    """``client.audit``: the organisation's audit records."""

    list = _sync(calls.list_audit)
    public_key = _sync(calls.audit_public_key)


class Sys(_Namespace):
    """``client.sys``: the seal and the root key."""

    seal_status = _sync(calls.seal_status)
    unseal = _sync(calls.unseal)
    seal = _sync(calls.seal)
    root_status = _sync(calls.root_status)
    rotate_root = _sync(calls.rotate_root)


class Organisations(_Namespace):
    create = _sync(calls.create_organisation)
    list = _sync(calls.list_organisations)
    enable_kms = _sync(calls.enable_kms)
    disable_kms = _sync(calls.disable_kms)
    shred = _sync(calls.shred_organisation)


class Projects(_Namespace):
    create = _sync(calls.create_project)
    list = _sync(calls.list_projects)


class ServiceAccounts(_Namespace):
    create = _sync(calls.create_service_account)
    list = _sync(calls.list_service_accounts)


class Tokens(_Namespace):
    create = _sync(calls.create_token)
    list = _sync(calls.list_tokens)
    revoke = _sync(calls.revoke_token)


class RoleBindings(_Namespace):
    create = _sync(calls.create_role_binding)
    list = _sync(calls.list_role_bindings)
    delete = _sync(calls.delete_role_binding)


class Client:
    """A blocking client. Settings not given come from the environment or a profile
    (``coffer.client.connection``). Use it as a context manager, or call ``close()``."""

    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        *,
        organisation: str | None = None,
        project: str | None = None,
        region: str | None = None,
        profile: str | None = None,
        timeout: float = 30.0,
        retries: int = 3,
        backoff: float = 0.2,
        transport: httpx.BaseTransport | None = None,
        ca_cert: str | None = None,
    ) -> None:
        self._core = _Core(url, token, organisation, project, region, profile, retries, backoff,
                           ca_cert)  # fmt: skip
        self.connection = self._core.connection
        self._client = self
        self._http = httpx.Client(timeout=timeout, transport=transport,
                                  verify=self._core.verify())  # fmt: skip
        self.keys = Keys(self)
        self.audit = Audit(self)
        self.sys = Sys(self)
        self.organisations = Organisations(self)
        self.projects = Projects(self)
        self.service_accounts = ServiceAccounts(self)
        self.tokens = Tokens(self)
        self.role_bindings = RoleBindings(self)

    summary = _sync(calls.summary)
    encrypt = _sync(calls.encrypt)
    decrypt = _sync(calls.decrypt)
    sign = _sync(calls.sign)
    verify = _sync(calls.verify)
    hmac = _sync(calls.hmac)
    verify_hmac = _sync(calls.verify_hmac)

    def _run(self, call: Call[T]) -> T:
        attempt = 0
        while True:
            try:
                response = self._http.request(**self._core.request(call))
            except httpx.TransportError as exc:
                wait = self._core.delay(call, attempt, None, exc)
                if wait is None:
                    raise self._core.unreachable(exc) from exc
            else:
                wait = self._core.delay(call, attempt, response, None)
                if wait is None:
                    answer = self._core.answer(call, response)
                    following = self._core.following(call, response)
                    if following is None:
                        return answer
                    return self._core.joined(answer, self._run(following))
            time.sleep(wait)
            attempt += 1

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Client({self.connection!r})"


# --- asynchronous -----------------------------------------------------------------------------


class AsyncKeys(_Namespace):
    """``client.keys``: keys and their life cycle."""

    create = _async(calls.create_key)
    list = _async(calls.list_keys)
    get = _async(calls.get_key)
    rotate = _async(calls.rotate_key)
    update_rotation = _async(calls.update_rotation)
    set_min_decryption_version = _async(calls.set_min_decryption_version)
    disable = _async(calls.disable_key)
    enable = _async(calls.enable_key)
    delete = _async(calls.delete_key)
    cancel_deletion = _async(calls.cancel_deletion)
    public_key = _async(calls.public_key)
    export = _async(calls.export_key)
    wrapping_key = _async(calls.wrapping_key)


class AsyncAudit(_Namespace):
    list = _async(calls.list_audit)
    public_key = _async(calls.audit_public_key)


class AsyncSys(_Namespace):
    seal_status = _async(calls.seal_status)
    unseal = _async(calls.unseal)
    seal = _async(calls.seal)
    root_status = _async(calls.root_status)
    rotate_root = _async(calls.rotate_root)


class AsyncOrganisations(_Namespace):
    create = _async(calls.create_organisation)
    list = _async(calls.list_organisations)
    enable_kms = _async(calls.enable_kms)
    disable_kms = _async(calls.disable_kms)
    shred = _async(calls.shred_organisation)


class AsyncProjects(_Namespace):
    create = _async(calls.create_project)
    list = _async(calls.list_projects)


class AsyncServiceAccounts(_Namespace):
    create = _async(calls.create_service_account)
    list = _async(calls.list_service_accounts)


class AsyncTokens(_Namespace):
    create = _async(calls.create_token)
    list = _async(calls.list_tokens)
    revoke = _async(calls.revoke_token)


class AsyncRoleBindings(_Namespace):
    create = _async(calls.create_role_binding)
    list = _async(calls.list_role_bindings)
    delete = _async(calls.delete_role_binding)


class AsyncClient:
    """The same methods as ``Client``, to ``await``. Use it as an async context manager, or
    ``await aclose()``."""

    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        *,
        organisation: str | None = None,
        project: str | None = None,
        region: str | None = None,
        profile: str | None = None,
        timeout: float = 30.0,
        retries: int = 3,
        backoff: float = 0.2,
        transport: httpx.AsyncBaseTransport | None = None,
        ca_cert: str | None = None,
    ) -> None:
        self._core = _Core(url, token, organisation, project, region, profile, retries, backoff,
                           ca_cert)  # fmt: skip
        self.connection = self._core.connection
        self._client = self
        self._http = httpx.AsyncClient(timeout=timeout, transport=transport,
                                       verify=self._core.verify())  # fmt: skip
        self.keys = AsyncKeys(self)
        self.audit = AsyncAudit(self)
        self.sys = AsyncSys(self)
        self.organisations = AsyncOrganisations(self)
        self.projects = AsyncProjects(self)
        self.service_accounts = AsyncServiceAccounts(self)
        self.tokens = AsyncTokens(self)
        self.role_bindings = AsyncRoleBindings(self)

    summary = _async(calls.summary)
    encrypt = _async(calls.encrypt)
    decrypt = _async(calls.decrypt)
    sign = _async(calls.sign)
    verify = _async(calls.verify)
    hmac = _async(calls.hmac)
    verify_hmac = _async(calls.verify_hmac)

    async def _run(self, call: Call[T]) -> T:
        attempt = 0
        while True:
            try:
                response = await self._http.request(**self._core.request(call))
            except httpx.TransportError as exc:
                wait = self._core.delay(call, attempt, None, exc)
                if wait is None:
                    raise self._core.unreachable(exc) from exc
            else:
                wait = self._core.delay(call, attempt, response, None)
                if wait is None:
                    answer = self._core.answer(call, response)
                    following = self._core.following(call, response)
                    if following is None:
                        return answer
                    return self._core.joined(answer, await self._run(following))
            await asyncio.sleep(wait)
            attempt += 1

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"AsyncClient({self.connection!r})"
