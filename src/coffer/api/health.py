"""``/healthz`` (the process is up) and ``/readyz`` (database and root key usable)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from coffer.api import http
from coffer.schemas import HealthResponse


async def healthz(request: Request) -> Response:
    return http.json(HealthResponse(status="ok"))


async def readyz(request: Request) -> Response:
    await http.services(request).ready()
    return http.json(HealthResponse(status="ready"))
