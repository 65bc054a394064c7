from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import ColumnElement, delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from uploadpools import schedule
from uploadpools.config import Settings
from uploadpools.exceptions import Conflict, FieldError, NotFound, ValidationFailed
from uploadpools.kit.pagination import decode_cursor, encode_cursor
from uploadpools.models import (
    Account,
    Delivery,
    Firing,
    Pool,
    PoolStateChange,
    QueueItem,
    Slot,
    SlotAccount,
)
from uploadpools.models.firing import PENDING
from uploadpools.models.item import QUEUED, held_by_firing, waiting
from uploadpools.pools import forecast
from uploadpools.pools.repository import PoolRepository, PoolView, SlotView
from uploadpools.pools.schemas import PoolCreate, PoolUpdate, SlotIn, SlotUpdate


class PoolNotFound(NotFound):
    title = "Pool not found"


class SlotNotFound(NotFound):
    title = "Slot not found"


class PoolNotEmpty(Conflict):
    title = "Pool has queued videos"


def schedule_next(pool: Pool, slot: Slot, account_ids: Sequence[str], now: datetime) -> None:
    """Set the slot's next occurrence after `now`, or none while the pool cannot fire it."""
    if pool.state != "active" or not account_ids:
        slot.next_fire_at = None
        slot.next_local_date = None
        return
    occ = schedule.next_occurrence(
        schedule.parse_time(slot.time),
        forecast.days_from_mask(slot.days_mask),
        schedule.load_zone(pool.timezone),
        now,
    )
    slot.next_fire_at = occ.at
    slot.next_local_date = occ.local_date


async def delete_firings(session: AsyncSession, *where: ColumnElement[bool]) -> None:
    """Delete the firings matching `where` and their deliveries (no foreign key cascades
    from a firing to its deliveries, migration 0009). Run it under the pool's lock."""
    ids = select(Firing.id).where(*where)
    await session.execute(delete(Delivery).where(Delivery.firing_id.in_(ids)))
    await session.execute(delete(Firing).where(*where))


class PoolService:
    def __init__(self, session: AsyncSession, settings: Settings) -> None:
        self.session = session
        self.settings = settings
        self.repo = PoolRepository(session)

    # -- reading -------------------------------------------------------------------------

    async def get(self, workspace_id: str, pool_id: str, *, for_update: bool = False) -> Pool:
        pool = await self.repo.get(workspace_id, pool_id, for_update=for_update)
        if pool is None:
            raise PoolNotFound("no such pool")
        return pool

    async def view(self, workspace_id: str, pool_id: str) -> PoolView:
        return (await self.repo.views([await self.get(workspace_id, pool_id)]))[0]

    async def list(
        self, workspace_id: str, *, limit: int, cursor: str | None
    ) -> tuple[list[PoolView], str | None]:
        after = str(decode_cursor(cursor, 1)[0]) if cursor else None
        pools = await self.repo.page(workspace_id, after_id=after, limit=limit + 1)
        more = len(pools) > limit
        pools = pools[:limit]
        return await self.repo.views(pools), encode_cursor(pools[-1].id) if more and pools else None

    # -- writing -------------------------------------------------------------------------

    async def _check_accounts(
        self, workspace_id: str, slots: Sequence[tuple[str, Sequence[str]]]
    ) -> None:
        """Every account id must be one of this workspace's; name each one that is not."""
        wanted = {a for _, ids in slots for a in ids}
        known = (
            set(
                (
                    await self.session.scalars(
                        select(Account.id).where(
                            Account.workspace_id == workspace_id, Account.id.in_(wanted)
                        )
                    )
                ).all()
            )
            if wanted
            else set()
        )
        errors = []
        for prefix, ids in slots:
            base = f"{prefix}.account_ids" if prefix else "account_ids"
            seen = set()
            for j, account_id in enumerate(ids):
                if account_id not in known:
                    errors.append(FieldError(f"{base}.{j}", f"unknown account {account_id!r}"))
                elif account_id in seen:
                    errors.append(FieldError(f"{base}.{j}", f"account {account_id!r} listed twice"))
                seen.add(account_id)
        if errors:
            raise ValidationFailed(errors)

    async def _add_slot(self, pool: Pool, data: SlotIn, rank: int, now: datetime) -> Slot:
        slot = Slot(
            pool_id=pool.id,
            rank=rank,
            time=data.time,
            days_mask=forecast.mask_from_days(data.days),
            created_at=now,
            schedule_changed_at=now,
        )
        schedule_next(pool, slot, data.account_ids, now)
        self.session.add(slot)
        await self.session.flush()
        self.session.add_all(
            SlotAccount(slot_id=slot.id, account_id=a, rank=i)
            for i, a in enumerate(data.account_ids)
        )
        return slot

    async def create(self, workspace_id: str, data: PoolCreate, now: datetime) -> Pool:
        await self._check_accounts(
            workspace_id, [(f"slots.{i}", s.account_ids) for i, s in enumerate(data.slots)]
        )
        pool = Pool(
            workspace_id=workspace_id,
            name=data.name,
            timezone=data.timezone,
            state=data.state,
            grace_minutes=self.settings.default_grace_minutes
            if data.grace_minutes is None
            else data.grace_minutes,
            created_at=now,
            updated_at=now,
        )
        self.session.add(pool)
        await self.session.flush()
        self.session.add(PoolStateChange(pool_id=pool.id, state=pool.state, at=now))
        for i, s in enumerate(data.slots):
            await self._add_slot(pool, s, i, now)
        await self.session.flush()
        return pool

    async def _reschedule(self, pool: Pool, now: datetime) -> None:
        for view in (await self.repo.slots_of([pool.id])).get(pool.id, []):
            schedule_next(pool, view.slot, view.account_ids, now)

    async def update(
        self, workspace_id: str, pool_id: str, data: PoolUpdate, now: datetime
    ) -> Pool:
        pool = await self.get(workspace_id, pool_id, for_update=True)
        timing_changed = False
        if data.name is not None:
            pool.name = data.name
        if data.grace_minutes is not None:
            pool.grace_minutes = data.grace_minutes
        if data.timezone is not None and data.timezone != pool.timezone:
            pool.timezone = data.timezone
            timing_changed = True
            for view in (await self.repo.slots_of([pool.id])).get(pool.id, []):
                view.slot.schedule_changed_at = now
        if data.state is not None and data.state != pool.state:
            # Resuming fires from the next occurrence after now: nothing is caught up.
            pool.state = data.state
            self.session.add(PoolStateChange(pool_id=pool.id, state=pool.state, at=now))
            timing_changed = True
        if timing_changed:
            await self._reschedule(pool, now)
        pool.updated_at = now
        return pool

    async def delete(self, workspace_id: str, pool_id: str, *, force: bool) -> list[str]:
        """Delete the pool; returns the media ids that no longer belong to anything."""
        pool = await self.get(workspace_id, pool_id, for_update=True)
        queued = await self.session.scalar(
            select(func.count())
            .select_from(QueueItem)
            .where(QueueItem.pool_id == pool.id, waiting(QueueItem))
        )
        if queued and not force:
            raise PoolNotEmpty(f"{queued} video(s) are queued; pass ?force=true to delete them too")
        media_ids = list(
            (
                await self.session.scalars(
                    select(QueueItem.media_id).where(QueueItem.pool_id == pool.id)
                )
            ).all()
        )
        # Its firings and their deliveries: neither has a foreign key to cascade from
        # (migrations 0008, 0009). Under the pool's lock, so no firing is being added.
        await delete_firings(self.session, Firing.pool_id == pool.id)
        await self.session.delete(pool)
        await self.session.flush()
        return media_ids

    async def add_slot(self, workspace_id: str, pool_id: str, data: SlotIn, now: datetime) -> Slot:
        pool = await self.get(workspace_id, pool_id, for_update=True)
        await self._check_accounts(workspace_id, [("", data.account_ids)])
        slot = await self._add_slot(pool, data, await self.repo.max_slot_rank(pool.id) + 1, now)
        await self.session.flush()
        return slot

    async def get_slot(self, pool: Pool, slot_id: str) -> Slot:
        slot = await self.repo.get_slot(pool.id, slot_id)
        if slot is None:
            raise SlotNotFound("no such slot")
        return slot

    async def update_slot(
        self, workspace_id: str, pool_id: str, slot_id: str, data: SlotUpdate, now: datetime
    ) -> Slot:
        pool = await self.get(workspace_id, pool_id, for_update=True)
        slot = await self.get_slot(pool, slot_id)
        if data.time is not None and data.time != slot.time:
            slot.time = data.time
            slot.schedule_changed_at = now
        if data.days is not None:
            mask = forecast.mask_from_days(data.days)
            if mask != slot.days_mask:
                slot.days_mask = mask
                slot.schedule_changed_at = now
        if data.account_ids is not None:
            await self._check_accounts(workspace_id, [("", data.account_ids)])
            await self.session.execute(delete(SlotAccount).where(SlotAccount.slot_id == slot.id))
            self.session.add_all(
                SlotAccount(slot_id=slot.id, account_id=a, rank=i)
                for i, a in enumerate(data.account_ids)
            )
            await self.session.flush()
        accounts = (await self.repo.slots_of([pool.id]))[pool.id]
        ids = next(v.account_ids for v in accounts if v.slot.id == slot.id)
        if data.time is not None or data.days is not None or data.account_ids is not None:
            schedule_next(pool, slot, ids, now)
        pool.updated_at = now
        return slot

    async def delete_slot(
        self, workspace_id: str, pool_id: str, slot_id: str, now: datetime
    ) -> None:
        pool = await self.get(workspace_id, pool_id, for_update=True)
        slot = await self.get_slot(pool, slot_id)
        # A video that one of its firings is posting: the post may have gone out, so it
        # is skipped `interrupted` (requeueable), not handed back to the queue, which is
        # what deleting the firing that holds it would otherwise do.
        items = QueueItem.__table__
        await self.session.execute(
            update(items)
            .where(
                items.c.id.in_(
                    select(Firing.item_id).where(
                        Firing.pool_id == pool.id,
                        Firing.slot_id == slot.id,
                        Firing.outcome == PENDING,
                    )
                ),
                items.c.status == QUEUED,
            )
            .values(
                status="skipped",
                skip_reason="interrupted",
                skip_detail="its slot was deleted while it was being posted; it may have "
                "gone out, check the account",
                dispatched_at=held_by_firing(items.c.id),
                finished_at=now,
            )
        )
        # Its firings and their deliveries go with it: neither references the slot or the
        # firing with a foreign key (migrations 0008, 0009).
        await delete_firings(self.session, Firing.pool_id == pool.id, Firing.slot_id == slot.id)
        await self.session.delete(slot)

    async def slot_view(self, pool: Pool, slot_id: str) -> SlotView:
        views = (await self.repo.slots_of([pool.id])).get(pool.id, [])
        for v in views:
            if v.slot.id == slot_id:
                return v
        raise SlotNotFound("no such slot")

    # -- forecast and history ----------------------------------------------------------------

    async def queued_ids(self, pool_id: str, limit: int) -> list[str]:
        return list(
            (
                await self.session.scalars(
                    select(QueueItem.id)
                    .where(QueueItem.pool_id == pool_id, waiting(QueueItem))
                    .order_by(QueueItem.seq, QueueItem.id)
                    .limit(limit)
                )
            ).all()
        )

    async def schedule(
        self, workspace_id: str, pool_id: str, *, limit: int, now: datetime, assume_active: bool
    ) -> list[forecast.Coming]:
        view = await self.view(workspace_id, pool_id)
        if view.pool.state != "active" and not assume_active:
            return []
        queued = await self.queued_ids(pool_id, limit)
        return forecast.coming(view.pool, view.slots, queued, now, limit)

    async def skip_forecast_input(self, pool: Pool, now: datetime) -> forecast.SkipForecastInput:
        from datetime import timedelta

        from uploadpools.models import Delivery, Workspace
        from uploadpools.workspace.service import usage

        views = (await self.repo.slots_of([pool.id])).get(pool.id, [])
        ids = {a for v in views for a in v.account_ids}
        accounts = (
            {
                a.id: (a.platform, a.status, a.name)
                for a in (
                    await self.session.scalars(select(Account).where(Account.id.in_(ids)))
                ).all()
            }
            if ids
            else {}
        )
        recent: dict[str, list[datetime]] = {}
        if ids:
            for account_id, at in (
                await self.session.execute(
                    select(Delivery.account_id, Delivery.finished_at).where(
                        Delivery.account_id.in_(ids),
                        Delivery.status == "posted",
                        Delivery.finished_at > now - timedelta(hours=24),
                    )
                )
            ).all():
                if account_id and at:
                    recent.setdefault(account_id, []).append(at)
        ws = await self.session.get(Workspace, pool.workspace_id)
        assert ws is not None
        u = await usage(self.session, ws.owner_id, now)
        return forecast.SkipForecastInput(
            accounts=accounts,
            quota_limit=u.limit,
            quota_used_now=u.used,
            recent_posts=recent,
            account_caps=self.settings.platform_account_daily_caps,
        )

    async def firings(
        self, workspace_id: str, pool_id: str, *, limit: int, cursor: str | None
    ) -> tuple[list[Firing], str | None]:
        pool = await self.get(workspace_id, pool_id)
        q = select(Firing).where(Firing.pool_id == pool.id)
        if cursor:
            (last,) = decode_cursor(cursor, 1)
            q = q.where(Firing.id < str(last))
        rows = list(
            (await self.session.scalars(q.order_by(Firing.id.desc()).limit(limit + 1))).all()
        )
        more = len(rows) > limit
        rows = rows[:limit]
        return rows, encode_cursor(rows[-1].id) if more and rows else None


class SlotHasNoAccounts(Conflict):
    title = "Slot has no accounts"


async def fire_now(
    session: AsyncSession,
    settings: Settings,
    workspace_id: str,
    pool_id: str,
    slot_id: str,
    now: datetime,
) -> Firing:
    """A `manual` firing of the slot: outside the (slot, local date) key, every other rule applies."""
    from uploadpools.engine.firing import fire

    svc = PoolService(session, settings)
    pool = await svc.get(workspace_id, pool_id, for_update=True)
    view = await svc.slot_view(pool, slot_id)
    if not view.account_ids:
        raise SlotHasNoAccounts("this slot posts to no account; add one first")
    local_date = now.astimezone(schedule.load_zone(pool.timezone)).date()
    return await fire(
        session,
        settings,
        pool=pool,
        slot=view.slot,
        account_ids=view.account_ids,
        kind="manual",
        local_date=local_date,
        scheduled_for=now,
        now=now,
    )


async def reschedule_slots(session: AsyncSession, slot_ids: Sequence[str], now: datetime) -> None:
    """Recompute the next firing of these slots (their accounts changed)."""
    repo = PoolRepository(session)
    slots = (await session.scalars(select(Slot).where(Slot.id.in_(slot_ids)))).all()
    pools = {
        p.id: p
        for p in (
            await session.scalars(select(Pool).where(Pool.id.in_({s.pool_id for s in slots})))
        ).all()
    }
    views = await repo.slots_of(list(pools))
    for pool_id, pool in pools.items():
        for view in views.get(pool_id, []):
            if view.slot.id in slot_ids:
                schedule_next(pool, view.slot, view.account_ids, now)
