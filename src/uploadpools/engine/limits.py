"""Platform caps, counted from our own ledger before calling a platform we know would refuse."""

from __future__ import annotations

import zlib
from datetime import datetime, timedelta

from sqlalchemy import func, or_, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from uploadpools.config import Settings
from uploadpools.models import Account, Delivery

WINDOW = timedelta(hours=24)


def _counted(now: datetime):  # type: ignore[no-untyped-def]
    """Posts in the last 24 h, plus posts under way (they will most likely land)."""
    return or_(
        (Delivery.status == "posted") & (Delivery.finished_at > now - WINDOW),
        Delivery.status == "in_progress",
    )


async def check_caps(
    session: AsyncSession, settings: Settings, account: Account, delivery_id: str, now: datetime
) -> str | None:
    """A skip detail when posting now would exceed a cap, else None."""
    platform = account.platform
    per_account = settings.platform_account_daily_caps.get(platform)
    per_app = settings.platform_app_daily_caps.get(platform)
    if per_account is None and per_app is None:
        return None
    # Serialise checks per account (and per platform for app caps) across workers.
    await session.execute(select(Account.id).where(Account.id == account.id).with_for_update())
    if (
        per_app is not None
        and session.bind is not None
        and session.bind.dialect.name == "postgresql"
    ):
        await session.execute(
            text("SELECT pg_advisory_xact_lock(:k)"), {"k": zlib.crc32(f"cap:{platform}".encode())}
        )
    if per_account is not None:
        n = await session.scalar(
            select(func.count())
            .select_from(Delivery)
            .where(Delivery.account_id == account.id, Delivery.id != delivery_id, _counted(now))
        )
        if (n or 0) >= per_account:
            return (
                f"{platform} allows {per_account} posts per account per 24 h and this account "
                f"has reached it; it will post again as the oldest leave the window"
            )
    if per_app is not None:
        n = await session.scalar(
            select(func.count())
            .select_from(Delivery)
            .where(Delivery.platform == platform, Delivery.id != delivery_id, _counted(now))
        )
        if (n or 0) >= per_app:
            return (
                f"this server's {platform} app may post {per_app} times per 24 h and has reached it"
            )
    return None
