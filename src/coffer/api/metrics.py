"""``GET /metrics``: Prometheus text format, without a token (see docs/metrics.md)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from coffer import metrics as registry

CONTENT_TYPE = registry.CONTENT_TYPE


async def metrics(request: Request) -> Response:
    return Response(registry.render(), media_type=CONTENT_TYPE)
