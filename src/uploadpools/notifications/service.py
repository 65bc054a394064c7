from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from uploadpools.exceptions import NotFound
from uploadpools.kit.pagination import decode_cursor, encode_cursor
from uploadpools.models import Notification
from uploadpools.store import bulk
from uploadpools.webhooks.events import emit_notice

LEVELS = ("info", "warning", "error")


async def notify(
    session: AsyncSession,
    *,
    workspace_id: str,
    level: str,
    kind: str,
    message: str,
    now: datetime,
    pool_id: str | None = None,
    item_id: str | None = None,
    extra: dict[str, Any] | None = None,
) -> Notification:
    """Tell the workspace; a notice whose kind is a webhook event is emitted as one too
    (`extra` is added to that event's data)."""
    if level not in LEVELS:
        raise ValueError(f"unknown notification level {level!r}")
    note = Notification(
        workspace_id=workspace_id,
        level=level,
        kind=kind,
        message=message,
        pool_id=pool_id,
        item_id=item_id,
        created_at=now,
    )
    session.add(note)
    await session.flush()
    await emit_notice(
        session,
        workspace_id=workspace_id,
        kind=kind,
        level=level,
        message=message,
        now=now,
        pool_id=pool_id,
        item_id=item_id,
        extra=extra,
    )
    return note


async def insert_notices(session: AsyncSession, rows: list[dict[str, Any]]) -> None:
    """Bulk `notify` for the engine's set-based paths (rows as built by `notification_row`)."""
    if not rows:
        return
    await bulk.insert_rows(session, Notification.__table__, rows)
    for r in rows:
        await emit_notice(
            session,
            workspace_id=r["workspace_id"],
            kind=r["kind"],
            level=r["level"],
            message=r["message"],
            now=r["created_at"],
            pool_id=r["pool_id"],
            item_id=r["item_id"],
        )


async def list_notifications(
    session: AsyncSession, workspace_id: str, *, unread: bool, limit: int, cursor: str | None
) -> tuple[list[Notification], str | None]:
    q = select(Notification).where(Notification.workspace_id == workspace_id)
    if unread:
        q = q.where(Notification.read_at.is_(None))
    if cursor:
        (last_id,) = decode_cursor(cursor, 1)
        q = q.where(Notification.id < str(last_id))
    rows = list((await session.scalars(q.order_by(Notification.id.desc()).limit(limit + 1))).all())
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, encode_cursor(rows[-1].id) if more and rows else None


async def mark_read(
    session: AsyncSession, workspace_id: str, notification_id: str, now: datetime
) -> Notification:
    note = await session.scalar(
        select(Notification).where(
            Notification.id == notification_id, Notification.workspace_id == workspace_id
        )
    )
    if note is None:
        raise NotFound("no such notification")
    if note.read_at is None:
        note.read_at = now
    return note
