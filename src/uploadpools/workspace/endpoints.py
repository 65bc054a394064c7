from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel
from starlette.responses import Response

from uploadpools.deps import CurrentWorkspace, Idempotency, NowDep, SessionDep
from uploadpools.kit.pagination import clamp_limit
from uploadpools.kit.responses import commit_response
from uploadpools.models import Notification
from uploadpools.notifications.service import list_notifications, mark_read
from uploadpools.schemas import Page
from uploadpools.workspace.service import usage, usage_by_member

router = APIRouter(tags=["workspace"])


class MemberUsageRead(BaseModel):
    user_id: str | None  # null: posts of items nobody is recorded as adding
    email: str | None
    used: int


class UsageRead(BaseModel):
    plan: Literal["free", "paid"]
    period_start: datetime
    period_end: datetime
    used: int
    limit: int | None
    # This workspace's share of `used`, per member who added the posted items.
    by_member: list[MemberUsageRead] = []


class NotificationRead(BaseModel):
    id: str
    level: Literal["info", "warning", "error"]
    kind: str
    message: str
    pool_id: str | None
    item_id: str | None
    created_at: datetime
    read_at: datetime | None


def note_read(n: Notification) -> NotificationRead:
    return NotificationRead.model_validate(n, from_attributes=True)


@router.get("/usage", response_model=UsageRead)
async def get_usage(session: SessionDep, ws: CurrentWorkspace, now: NowDep) -> UsageRead:
    """This month's uploads against the owner's quota (shared by all the owner's workspaces)."""
    u = await usage(session, ws.owner_id, now)
    return UsageRead(
        plan=u.plan,  # type: ignore[arg-type]
        period_start=u.period_start,
        period_end=u.period_end,
        used=u.used,
        limit=u.limit,
        by_member=[
            MemberUsageRead(user_id=m.user_id, email=m.email, used=m.used)
            for m in await usage_by_member(session, ws.owner_id, now, workspace_id=ws.workspace_id)
        ],
    )


@router.get("/notifications", response_model=Page[NotificationRead])
async def get_notifications(
    session: SessionDep,
    ws: CurrentWorkspace,
    unread: bool = False,
    limit: Annotated[int | None, Query()] = None,
    cursor: str | None = None,
) -> Page[NotificationRead]:
    rows, nxt = await list_notifications(
        session, ws.workspace_id, unread=unread, limit=clamp_limit(limit), cursor=cursor
    )
    return Page(items=[note_read(n) for n in rows], next_cursor=nxt)


@router.post("/notifications/{notification_id}/read", response_model=NotificationRead)
async def read_notification(
    notification_id: str, session: SessionDep, ws: CurrentWorkspace, now: NowDep, idem: Idempotency
) -> Response:
    note = await mark_read(session, ws.workspace_id, notification_id, now)
    return await commit_response(session, idem, 200, note_read(note))
