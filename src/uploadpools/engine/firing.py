"""Firing a slot and settling its outcome: the rules shared by the ticker, the
dispatcher and "post next now"."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import func, insert, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.attributes import set_committed_value

from uploadpools.config import Settings
from uploadpools.kit.ids import new_id
from uploadpools.models import Account, Delivery, Firing, Media, Pool, QueueItem, Slot
from uploadpools.models.item import waiting
from uploadpools.notifications.service import insert_notices, notify
from uploadpools.ops import metrics
from uploadpools.pools import forecast
from uploadpools.pools.repository import PoolRepository
from uploadpools.webhooks import events

FINAL = ("posted", "skipped")

REASON_TEXT = {
    "quota_exceeded": "the monthly upload quota is used up",
    "platform_daily_limit": "the platform's daily limit is reached",
    "platform_rate_limited": "the platform refused for its rate limit",
    "platform_error": "the platform kept failing",
    "auth_expired": "the account needs to be reconnected",
    "media_rejected": "the platform rejected the video",
    "interrupted": "the post was interrupted and may have gone out; check the account",
    "account_disabled": "the account is disabled",
}


# The `job` of a new delivery row: one shared object, so that a bulk insert encodes it once
# (rows are written, never mutated; the ORM loads its own copy).
NO_JOB: dict[str, Any] = {}


def item_label(item: QueueItem) -> str:
    return f"“{item.title}”" if item.title else "A video"


async def head_item(session: AsyncSession, pool_id: str) -> QueueItem | None:
    """The oldest waiting item whose media is ready (one still being fetched waits its turn)."""
    return await session.scalar(
        select(QueueItem)
        .join(Media, Media.id == QueueItem.media_id)
        .where(QueueItem.pool_id == pool_id, waiting(QueueItem), Media.state == "ready")
        .order_by(QueueItem.seq, QueueItem.id)
        .limit(1)
    )


# The columns of a delivery row, in the order `delivery_rows` gives their values.
DELIVERY_KEYS = (
    "id",
    "firing_id",
    "item_id",
    "account_id",
    "platform",
    "status",
    "reason",
    "detail",
    "attempts",
    "lease_token",
    "job",
    "retry_until",
    "created_at",
    "finished_at",
)


def delivery_rows(
    firing_id: str,
    item_id: str,
    account_ids: Sequence[str],
    accounts: dict[str, Account],
    now: datetime,
    retry_until: datetime,
    ids: Iterator[str] | None = None,
) -> tuple[list[tuple[Any, ...]], bool]:
    """One delivery row (the values of DELIVERY_KEYS) per slot account, in slot order, and
    whether all are already final: a disabled or re-auth account is skipped here, without
    calling the platform. `ids` hands out the rows' ids when the caller made them in bulk."""
    rows: list[tuple[Any, ...]] = []
    all_final = True
    for account_id in account_ids:
        account = accounts.get(account_id)
        if account is None:
            continue
        delivery_id = next(ids) if ids is not None else new_id()
        status = account.status
        if status == "disabled":
            reason, detail = "account_disabled", f"account “{account.name}” is disabled"
        elif status == "needs_reauth":
            reason, detail = "auth_expired", f"account “{account.name}” needs to be reconnected"
        else:
            all_final = False
            pending = "pending", None, None, 0, 0, NO_JOB, retry_until, now, None
            rows.append((delivery_id, firing_id, item_id, account_id, account.platform, *pending))
            continue
        # Final without an attempt: counted here.
        metrics.delivery_finished(account.platform, "skipped", reason)
        skipped = "skipped", reason, detail, 0, 0, NO_JOB, retry_until, now, now
        rows.append((delivery_id, firing_id, item_id, account_id, account.platform, *skipped))
    return rows, all_final


def empty_notice(pool: Pool, now: datetime) -> dict[str, Any] | None:
    """The `pool.empty` notification row, once per empty spell (marks the spell)."""
    if pool.empty_since is not None:
        return None
    pool.empty_since = now
    return notification_row(
        pool,
        "warning",
        "pool.empty",
        f"Pool “{pool.name}” has no videos queued: its slots are passing without posts.",
        now,
    )


def notification_row(
    pool: Pool, level: str, kind: str, message: str, now: datetime
) -> dict[str, Any]:
    return dict(
        id=new_id(),
        workspace_id=pool.workspace_id,
        level=level,
        kind=kind,
        message=message,
        pool_id=pool.id,
        item_id=None,
        created_at=now,
        read_at=None,
    )


async def fire(
    session: AsyncSession,
    settings: Settings,
    *,
    pool: Pool,
    slot: Slot,
    account_ids: Sequence[str],
    kind: str,
    local_date: date,
    scheduled_for: datetime,
    now: datetime,
) -> Firing:
    """A single firing ("post next now"): the same rows the ticker builds in bulk.
    The caller holds the pool lock."""
    firing = Firing(
        pool_id=pool.id,
        slot_id=slot.id,
        kind=kind,
        local_date=local_date,
        scheduled_for=scheduled_for,
        fired_at=now,
        outcome="pending",
    )
    session.add(firing)
    await session.flush()
    item = await head_item(session, pool.id)
    if item is None:
        firing.outcome = "empty"
        metrics.firing_settled("empty")
        note = empty_notice(pool, now)
        await session.flush()
        if note is not None:
            await insert_notices(session, [note])
        return firing
    firing.item_id = item.id  # the firing holds it: the item is now dispatching
    set_committed_value(item, "held_at", now)
    accounts = {
        a.id: a
        for a in (await session.scalars(select(Account).where(Account.id.in_(account_ids)))).all()
    }
    rows, _ = delivery_rows(
        firing.id,
        item.id,
        account_ids,
        accounts,
        now,
        now + timedelta(minutes=settings.retry_window_minutes),
    )
    await session.flush()
    if rows:
        await session.execute(
            insert(Delivery.__table__), [dict(zip(DELIVERY_KEYS, r, strict=True)) for r in rows]
        )
    await settle(session, firing, now)
    await _check_running_low(session, settings, pool, now)
    return firing


async def _check_running_low(
    session: AsyncSession, settings: Settings, pool: Pool, now: datetime
) -> None:
    if pool.low_since is not None or settings.low_queue_hours <= 0 or pool.state != "active":
        return
    left = int(
        await session.scalar(
            select(func.count())
            .select_from(QueueItem)
            .where(QueueItem.pool_id == pool.id, waiting(QueueItem))
        )
        or 0
    )
    if left == 0:
        return  # the empty-queue notice will speak when it matters
    slots = (await PoolRepository(session).slots_of([pool.id])).get(pool.id, [])
    horizon = now + timedelta(hours=settings.low_queue_hours)
    coming = 0
    for _slot, occ in forecast.occurrences(pool, slots, now):
        if occ.at > horizon or coming > left:
            break
        coming += 1
    if left < coming:
        pool.low_since = now
        await notify(
            session,
            workspace_id=pool.workspace_id,
            level="info",
            kind="pool.running_low",
            message=low_queue_message(pool, left, coming, settings),
            now=now,
            pool_id=pool.id,
        )


def low_queue_message(pool: Pool, left: int, coming: int, settings: Settings) -> str:
    return (
        f"Pool “{pool.name}” is running low: {left} video(s) left for {coming} "
        f"slot(s) in the next {settings.low_queue_hours} h."
    )


async def settle(session: AsyncSession, firing: Firing, now: datetime) -> bool:
    """When every delivery of the firing is final: the item's status, the firing's outcome
    and the workspace's notifications. Returns True when it settled.

    The firing row is locked (and re-read) first: whoever finishes another delivery of it
    waits here until this transaction commits and then sees its outcome, so the last
    delivery to finish always settles the item. Without the lock, on PostgreSQL two
    deliveries finishing together each saw the other still in progress, and neither
    settled."""
    await session.flush()  # refresh must not drop the caller's unflushed changes
    await session.refresh(firing, with_for_update=True)
    if firing.item_id is None or firing.outcome not in ("pending",):
        return False
    deliveries = list(
        (
            await session.scalars(
                select(Delivery).where(Delivery.firing_id == firing.id).order_by(Delivery.id)
            )
        ).all()
    )
    if any(d.status not in FINAL for d in deliveries):
        return False
    item = await session.get(QueueItem, firing.item_id)
    pool = await session.get(Pool, firing.pool_id)
    assert item is not None and pool is not None
    posted = [d for d in deliveries if d.status == "posted"]
    skipped = [d for d in deliveries if d.status == "skipped"]
    if posted and not skipped:
        firing.outcome = "dispatched"
    elif posted:
        firing.outcome = "partial"
    else:
        firing.outcome = "skipped"
    metrics.firing_settled(firing.outcome)
    item.finished_at = now
    item.dispatched_at = firing.fired_at
    if posted:
        item.status = "dispatched"
    else:
        item.status = "skipped"
        reasons = Counter(d.reason for d in skipped if d.reason)
        item.skip_reason = reasons.most_common(1)[0][0] if reasons else "platform_error"
        item.skip_detail = "; ".join(f"{d.platform}: {d.detail or d.reason}" for d in skipped) or (
            "the slot has no accounts to post to"
        )
    await _emit_settled(session, pool, item, firing, deliveries, now)
    if skipped:
        names = {
            a.id: a.name
            for a in (
                await session.scalars(
                    select(Account).where(
                        Account.id.in_([d.account_id for d in skipped if d.account_id])
                    )
                )
            ).all()
        }
        parts = [
            f"{names.get(d.account_id or '', d.platform)} ({d.platform}): {REASON_TEXT.get(d.reason or '', d.reason)}"
            + (
                f" — {d.detail}"
                if d.detail and d.reason not in ("account_disabled", "auth_expired")
                else ""
            )
            for d in skipped
        ]
        reasons_set = {d.reason for d in skipped}
        if reasons_set == {"quota_exceeded"}:
            kind = "quota.exceeded"
        elif posted:
            kind = "delivery.skipped"
        else:
            kind = "item.skipped"
        verb = "was skipped" if not posted else "was not posted everywhere"
        await notify(
            session,
            workspace_id=pool.workspace_id,
            level="warning"
            if posted
            or reasons_set <= {"quota_exceeded", "platform_rate_limited", "platform_daily_limit"}
            else "error",
            kind=kind,
            message=f"{item_label(item)} in pool “{pool.name}” {verb}: " + "; ".join(parts) + ".",
            now=now,
            pool_id=pool.id,
            item_id=item.id,
        )
    return True


async def _emit_settled(
    session: AsyncSession,
    pool: Pool,
    item: QueueItem,
    firing: Firing,
    deliveries: list[Delivery],
    now: datetime,
) -> None:
    """The item's outcome event, `delivery.skipped` for deliveries skipped before any attempt
    (the dispatcher emits the others as they finish) and `quota.exceeded`."""
    ws = pool.workspace_id
    base: dict[str, Any] = {
        "pool": events.pool_data(pool),
        "item": events.item_data(item),
        "firing": {
            "id": firing.id,
            "slot_id": firing.slot_id,
            "scheduled_for": events.iso(firing.scheduled_for),
            "outcome": firing.outcome,
        },
    }
    for d in deliveries:
        if d.status == "skipped" and d.attempts == 0:
            await events.emit(
                session, ws, "delivery.skipped", {**base, "delivery": events.delivery_data(d)}, now
            )
    posted = any(d.status == "posted" for d in deliveries)
    await events.emit(
        session,
        ws,
        "item.dispatched" if posted else "item.skipped",
        {**base, "deliveries": [events.delivery_data(d) for d in deliveries]},
        now,
    )
    over = [d for d in deliveries if d.reason == "quota_exceeded"]
    if over:
        await events.emit(
            session,
            ws,
            "quota.exceeded",
            {**base, "deliveries": [events.delivery_data(d) for d in over]},
            now,
        )
