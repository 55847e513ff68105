"""The ASGI application."""

from __future__ import annotations

import asyncio
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
from coffer.api.openapi import build_openapi
from coffer.api.routes import ENDPOINTS
from coffer.service.services import Services


def _version() -> str:
    try:
        return version("coffer")
    except PackageNotFoundError:
        return "0.0.0"


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

    routes = [Route(e.path, e.handler, methods=[e.method]) for e in ENDPOINTS]
    routes.append(Route("/openapi.json", openapi, methods=["GET"]))
    app = Starlette(
        routes=routes,
        middleware=[Middleware(RequestIdMiddleware)],
        exception_handlers=HANDLERS,
        lifespan=lifespan,
    )
    app.state.services = services
    return app
