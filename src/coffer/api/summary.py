"""``GET /v1/kms/summary`` (spec §5.1)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from coffer.api import http
from coffer.domain.keys import KeyStatus
from coffer.schemas import RegionSummaryView, SummaryResponse


async def summary(request: Request) -> Response:
    result = await http.services(request).keys.summary(http.meta(request))
    return http.json(
        SummaryResponse(
            feature_enabled=result.feature_enabled,
            regions=[
                RegionSummaryView(
                    identity=r.region.identity,
                    name=r.region.name,
                    slug=r.region.slug,
                    kms_available=r.region.kms_available,
                    total_keys=sum(r.counts.values()),
                    active_keys=r.counts[KeyStatus.ACTIVE],
                    disabled_keys=r.counts[KeyStatus.DISABLED],
                    pending_deletion_keys=r.counts[KeyStatus.PENDING_DELETION],
                )
                for r in result.regions
            ],
        )
    )
