"""The ASGI application."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from contextlib import asynccontextmanager
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import msgspec
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from coffer.api.errors import HANDLERS
from coffer.api.http import RequestIdMiddleware
from coffer.api.metrics import metrics
from coffer.api.openapi import build_openapi
from coffer.api.routes import ENDPOINTS, Endpoint, Handler
from coffer.metrics import RequestMeter, process_exited
from coffer.service.root import RootOfTrust
from coffer.service.services import Services


def _version() -> str:
    try:
        return version("coffer")
    except PackageNotFoundError:
        return "0.0.0"


def _unless_sealed(endpoint: Endpoint, root: RootOfTrust) -> Handler:
    """The endpoint's handler, answering 503 ``sealed`` first while the root of trust is sealed
    (before the token is looked at: nothing can be checked, written or signed then)."""
    handler = endpoint.handler
    if endpoint.sealed_ok:
        return handler

    async def guarded(request: Request) -> Response:
        if root.sealed:
            raise root.sealed_error()
        return await handler(request)

    guarded.__name__ = handler.__name__
    return guarded


def create_app(
    services: Services, background: Sequence[Callable[[], Coroutine[Any, Any, None]]] = ()
) -> Starlette:
    """The app; ``background`` jobs run from start-up to shut-down."""
    document = msgspec.json.encode(build_openapi(ENDPOINTS, _version()))

    async def openapi(request: Request) -> Response:
        return Response(document, media_type="application/json")

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        tasks = [asyncio.create_task(job()) for job in background]
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await services.close()
            process_exited(os.getpid())

    metered = services.settings.metrics
    endpoints = [e for e in ENDPOINTS if metered or e.handler is not metrics]
    handlers = {e: _unless_sealed(e, services.root) for e in endpoints}
    routes = [Route(e.path, handlers[e], methods=[e.method]) for e in endpoints]
    routes.append(Route("/openapi.json", openapi, methods=["GET"]))
    operations: dict[Callable[..., Any], str] = {handlers[e]: e.operation for e in endpoints}
    operations[openapi] = "openapi"
    app = Starlette(
        routes=routes,
        middleware=[
            Middleware(
                RequestIdMiddleware,
                meter=RequestMeter() if metered else None,
                operations=operations,
            )
        ],
        exception_handlers=HANDLERS,
        lifespan=lifespan,
    )
    app.state.services = services
    return app
