from __future__ import annotations

from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.responses import Response

from uploadpools.idempotency import IdempotencyGuard


async def commit_response(
    session: AsyncSession, guard: IdempotencyGuard | None, status_code: int, model: BaseModel
) -> Response:
    """Serialise, record for Idempotency-Key replays, commit: one transaction with the work."""
    body = model.model_dump_json().encode()
    if guard is not None:
        await guard.complete(session, status_code, body)
    await session.commit()
    if guard is not None:
        guard.done()
    return Response(body, status_code=status_code, media_type="application/json")
