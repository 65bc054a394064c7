from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from uploadpools.models import QuotaEntry, User


@dataclass(frozen=True, slots=True)
class Usage:
    plan: str
    period_start: datetime
    period_end: datetime
    used: int
    limit: int | None


def month_bounds(now: datetime) -> tuple[date, datetime, datetime]:
    """The quota period: the calendar month in UTC."""
    now = now.astimezone(UTC)
    start = datetime(now.year, now.month, 1, tzinfo=UTC)
    end = datetime(now.year + (now.month == 12), now.month % 12 + 1, 1, tzinfo=UTC)
    return start.date(), start, end


async def usage(session: AsyncSession, owner_id: str, now: datetime) -> Usage:
    owner = await session.get(User, owner_id)
    assert owner is not None
    period, start, end = month_bounds(now)
    used = await session.scalar(
        select(func.count())
        .select_from(QuotaEntry)
        .where(QuotaEntry.owner_id == owner_id, QuotaEntry.period_start == period)
    )
    return Usage(
        plan=owner.plan,
        period_start=start,
        period_end=end,
        used=int(used or 0),
        limit=None if owner.plan == "paid" else owner.monthly_quota,
    )


@dataclass(frozen=True, slots=True)
class MemberUsage:
    user_id: str | None  # None: items nobody is recorded as adding
    email: str | None
    used: int


async def usage_by_member(
    session: AsyncSession, owner_id: str, now: datetime, *, workspace_id: str | None = None
) -> list[MemberUsage]:
    """This month's units of the owner's quota per member who added the posted item; all
    the owner's workspaces, or one."""
    period, _, _ = month_bounds(now)
    q = (
        select(QuotaEntry.user_id, User.email, func.count(QuotaEntry.id))
        .join(User, User.id == QuotaEntry.user_id, isouter=True)
        .where(QuotaEntry.owner_id == owner_id, QuotaEntry.period_start == period)
        .group_by(QuotaEntry.user_id, User.email)
        .order_by(User.email)
    )
    if workspace_id is not None:
        q = q.where(QuotaEntry.workspace_id == workspace_id)
    return [MemberUsage(u, e, int(n)) for u, e, n in (await session.execute(q)).all()]
