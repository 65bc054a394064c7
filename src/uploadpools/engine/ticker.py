"""Due slots → firings. Every step is one short transaction over a batch of pools.

Per pool, under its row lock, due occurrences are taken in (instant, slot rank) order:
that is what keeps FIFO strict when two slots of one pool fall due together. A
scheduled firing is unique on (slot, local date) in the database, so a second ticker, a
restart or a DST quirk can never fire an occurrence twice.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from uploadpools import schedule
from uploadpools.config import Settings
from uploadpools.engine.firing import fire
from uploadpools.kit.clock import Clock
from uploadpools.models import Firing, Pool, Slot, SlotAccount
from uploadpools.notifications.service import notify
from uploadpools.pools import forecast
from uploadpools.store.engine import session_scope

log = logging.getLogger(__name__)


@dataclass
class TickResult:
    fired: int = 0
    missed: int = 0
    firing_ids: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return self.fired + self.missed


def _advance(pool: Pool, slot: Slot, after: datetime) -> None:
    occ = schedule.next_occurrence(
        schedule.parse_time(slot.time),
        forecast.days_from_mask(slot.days_mask),
        schedule.load_zone(pool.timezone),
        after,
    )
    slot.next_fire_at = occ.at
    slot.next_local_date = occ.local_date


class Ticker:
    def __init__(
        self, maker: async_sessionmaker[AsyncSession], settings: Settings, clock: Clock
    ) -> None:
        self.maker = maker
        self.settings = settings
        self.clock = clock

    async def next_due(self) -> datetime | None:
        async with self.maker() as session:
            return await session.scalar(
                select(Slot.next_fire_at)
                .where(Slot.next_fire_at.is_not(None))
                .order_by(Slot.next_fire_at)
                .limit(1)
            )

    async def tick(self) -> TickResult:
        """Fire everything due now; loops over batches until nothing due is left."""
        result = TickResult()
        now = self.clock.now()
        while True:
            async with session_scope(self.maker) as session:
                done = await self._batch(session, now, result)
            if not done:
                return result

    async def _batch(self, session: AsyncSession, now: datetime, result: TickResult) -> int:
        pool_ids = list(
            (
                await session.scalars(
                    select(Slot.pool_id)
                    .where(Slot.next_fire_at <= now)
                    .group_by(Slot.pool_id)
                    .order_by(Slot.pool_id)
                    .limit(self.settings.engine_batch_size)
                )
            ).all()
        )
        handled = 0
        for pool_id in pool_ids:
            pool = await session.scalar(
                select(Pool).where(Pool.id == pool_id).with_for_update(skip_locked=True)
            )
            if pool is None:
                continue  # another scheduler holds it
            handled += 1
            await self._pool(session, pool, now, result)
        return handled

    async def _pool(
        self, session: AsyncSession, pool: Pool, now: datetime, result: TickResult
    ) -> None:
        grace = timedelta(minutes=pool.grace_minutes)
        while True:
            slot = await session.scalar(
                select(Slot)
                .where(Slot.pool_id == pool.id, Slot.next_fire_at <= now)
                .order_by(Slot.next_fire_at, Slot.rank, Slot.id)
                .limit(1)
            )
            if slot is None or slot.next_fire_at is None or slot.next_local_date is None:
                return
            if pool.state != "active":
                slot.next_fire_at = slot.next_local_date = None
                await session.flush()
                continue
            account_ids = list(
                (
                    await session.scalars(
                        select(SlotAccount.account_id)
                        .where(SlotAccount.slot_id == slot.id)
                        .order_by(SlotAccount.rank)
                    )
                ).all()
            )
            if not account_ids:
                slot.next_fire_at = slot.next_local_date = None
                await session.flush()
                continue
            due_at, local_date = slot.next_fire_at, slot.next_local_date
            if now - due_at > grace:
                await self._missed(session, pool, slot, now, grace, result)
                continue
            try:
                async with session.begin_nested():
                    firing = await fire(
                        session,
                        self.settings,
                        pool=pool,
                        slot=slot,
                        account_ids=account_ids,
                        kind="scheduled",
                        local_date=local_date,
                        scheduled_for=due_at,
                        now=now,
                    )
                result.fired += 1
                result.firing_ids.append(firing.id)
            except IntegrityError:
                # That (slot, local date) has its firing already: never twice.
                log.info("slot %s already fired on %s", slot.id, local_date)
            _advance(pool, slot, due_at)
            await session.flush()  # the next query must see the slot's new instant

    async def _missed(
        self,
        session: AsyncSession,
        pool: Pool,
        slot: Slot,
        now: datetime,
        grace: timedelta,
        result: TickResult,
    ) -> None:
        """One `missed` record for every occurrence past its grace window; later ones
        (still within grace) are left due so they fire late."""
        assert slot.next_fire_at is not None and slot.next_local_date is not None
        first_at, first_date = slot.next_fire_at, slot.next_local_date
        occs = schedule.occurrences_between(
            schedule.parse_time(slot.time),
            forecast.days_from_mask(slot.days_mask),
            schedule.load_zone(pool.timezone),
            first_at,
            now - grace,
        )
        last = occs[-1] if occs else schedule.Occurrence(first_date, first_at)
        try:
            async with session.begin_nested():
                firing = Firing(
                    pool_id=pool.id,
                    slot_id=slot.id,
                    kind="scheduled",
                    local_date=first_date,
                    covers_until=last.local_date,
                    missed_count=max(1, len(occs)),
                    scheduled_for=first_at,
                    fired_at=now,
                    outcome="missed",
                )
                session.add(firing)
                await session.flush()
                n = max(1, len(occs))
                when = first_at.isoformat() if n == 1 else f"{first_date} to {last.local_date}"
                await notify(
                    session,
                    workspace_id=pool.workspace_id,
                    level="warning",
                    kind="firing.missed",
                    message=(
                        f"Pool “{pool.name}” missed {n} slot time(s) at {slot.time} ({when}) while "
                        f"the service was down longer than its {pool.grace_minutes}-minute grace "
                        "window. No video was used; the queue is unchanged."
                    ),
                    now=now,
                    pool_id=pool.id,
                )
            result.missed += 1
            result.firing_ids.append(firing.id)
        except IntegrityError:
            log.info("slot %s already has a record for %s", slot.id, first_date)
        _advance(pool, slot, last.at)
        await session.flush()
