"""``GET /metrics``: Prometheus text exposition (see ``ops.metrics``)."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import APIRouter, Header
from starlette.responses import Response

from uploadpools.deps import StateDep
from uploadpools.exceptions import Unauthorized
from uploadpools.ops import metrics

router = APIRouter()


@router.get("/metrics", include_in_schema=False)
async def get_metrics(
    state: StateDep, authorization: Annotated[str | None, Header()] = None
) -> Response:
    token = state.settings.metrics_token
    if token is not None and token.get_secret_value():  # an empty value means "no token"
        scheme, _, given = (authorization or "").partition(" ")
        expected = token.get_secret_value().encode()
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), expected):
            raise Unauthorized("send the metrics token as 'Authorization: Bearer <token>'")
    async with state.maker() as session:
        body = await metrics.render(session, state.clock.now())
    return Response(body, media_type=metrics.CONTENT_TYPE_LATEST)
