"""The owner's monthly quota: one unit reserved atomically before a post, consumed when
it posts, released when it does not. All of an owner's workspaces share it."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from uploadpools.models import QuotaEntry, User
from uploadpools.notifications.service import notify
from uploadpools.workspace.service import month_bounds


def low_threshold(limit: int) -> int:
    """`quota.low` is said once, when the last fifth (at least one) of the quota begins."""
    return max(1, limit // 5)


async def reserve(
    session: AsyncSession,
    *,
    owner_id: str,
    workspace_id: str,
    delivery_id: str,
    now: datetime,
    user_id: str | None = None,
) -> bool:
    """Reserve one unit for this delivery; False when the quota is exhausted. `user_id`
    is the member who added the item (None for items nobody is recorded as adding).

    The owner's row is locked (PostgreSQL) or the database is (SQLite's IMMEDIATE
    transactions), so concurrent workers count and insert one at a time.
    """
    existing = await session.scalar(
        select(QuotaEntry.id).where(QuotaEntry.delivery_id == delivery_id)
    )
    if existing is not None:
        return True
    plan = await session.scalar(select(User.plan).where(User.id == owner_id))
    if plan is None:
        return False
    period, _, _ = month_bounds(now)
    if plan != "paid":
        # Only a limited owner's units are counted, under the owner's row lock.
        owner = await session.scalar(select(User).where(User.id == owner_id).with_for_update())
        assert owner is not None
        used = await session.scalar(
            select(func.count())
            .select_from(QuotaEntry)
            .where(QuotaEntry.owner_id == owner_id, QuotaEntry.period_start == period)
        )
        if (used or 0) >= owner.monthly_quota:
            return False
        left = owner.monthly_quota - (used or 0) - 1
        if left == low_threshold(owner.monthly_quota):
            await notify(
                session,
                workspace_id=workspace_id,
                level="warning",
                kind="quota.low",
                message=(
                    f"Only {left} upload(s) left of this month's quota of "
                    f"{owner.monthly_quota}; posts past it will be skipped."
                ),
                now=now,
                extra={"quota": {"limit": owner.monthly_quota, "remaining": left}},
            )
    session.add(
        QuotaEntry(
            owner_id=owner_id,
            workspace_id=workspace_id,
            user_id=user_id,
            delivery_id=delivery_id,
            period_start=period,
            state="reserved",
            created_at=now,
        )
    )
    await session.flush()
    return True


async def consume(session: AsyncSession, delivery_id: str) -> None:
    await session.execute(
        update(QuotaEntry).where(QuotaEntry.delivery_id == delivery_id).values(state="consumed")
    )


async def release(session: AsyncSession, delivery_id: str) -> None:
    await session.execute(
        delete(QuotaEntry).where(
            QuotaEntry.delivery_id == delivery_id, QuotaEntry.state == "reserved"
        )
    )


async def remaining(session: AsyncSession, owner_id: str, now: datetime) -> int | None:
    owner = await session.get(User, owner_id)
    if owner is None or owner.plan == "paid":
        return None
    period, _, _ = month_bounds(now)
    used = await session.scalar(
        select(func.count())
        .select_from(QuotaEntry)
        .where(QuotaEntry.owner_id == owner_id, QuotaEntry.period_start == period)
    )
    return max(0, owner.monthly_quota - int(used or 0))
