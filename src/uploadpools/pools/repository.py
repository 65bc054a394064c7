"""SQL for pools and slots."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from uploadpools.models import Pool, QueueItem, Slot, SlotAccount
from uploadpools.models.item import waiting


@dataclass
class SlotView:
    slot: Slot
    account_ids: list[str] = field(default_factory=list)


@dataclass
class PoolView:
    pool: Pool
    slots: list[SlotView]
    queued_count: int


class PoolRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(
        self, workspace_id: str, pool_id: str, *, for_update: bool = False
    ) -> Pool | None:
        q = select(Pool).where(Pool.id == pool_id, Pool.workspace_id == workspace_id)
        if for_update:
            q = q.with_for_update()
        return await self.session.scalar(q)

    async def lock(self, pool_id: str) -> None:
        """Take the pool row lock that serialises every change to its queue order."""
        await self.session.execute(select(Pool.id).where(Pool.id == pool_id).with_for_update())

    async def page(self, workspace_id: str, *, after_id: str | None, limit: int) -> list[Pool]:
        q = select(Pool).where(Pool.workspace_id == workspace_id)
        if after_id:
            q = q.where(Pool.id > after_id)
        return list((await self.session.scalars(q.order_by(Pool.id).limit(limit))).all())

    async def slots_of(self, pool_ids: Sequence[str]) -> dict[str, list[SlotView]]:
        if not pool_ids:
            return {}
        slots = (
            await self.session.scalars(
                select(Slot).where(Slot.pool_id.in_(pool_ids)).order_by(Slot.rank, Slot.id)
            )
        ).all()
        links = (
            await self.session.execute(
                select(SlotAccount.slot_id, SlotAccount.account_id)
                .join(Slot, Slot.id == SlotAccount.slot_id)
                .where(Slot.pool_id.in_(pool_ids))
                .order_by(SlotAccount.slot_id, SlotAccount.rank)
            )
        ).all()
        accounts: dict[str, list[str]] = defaultdict(list)
        for slot_id, account_id in links:
            accounts[slot_id].append(account_id)
        out: dict[str, list[SlotView]] = defaultdict(list)
        for s in slots:
            out[s.pool_id].append(SlotView(s, accounts.get(s.id, [])))
        return out

    async def queued_counts(self, pool_ids: Sequence[str]) -> dict[str, int]:
        if not pool_ids:
            return {}
        rows = await self.session.execute(
            select(QueueItem.pool_id, func.count())
            .where(QueueItem.pool_id.in_(pool_ids), waiting(QueueItem))
            .group_by(QueueItem.pool_id)
        )
        return {pid: n for pid, n in rows.all()}

    async def views(self, pools: Sequence[Pool]) -> list[PoolView]:
        ids = [p.id for p in pools]
        slots = await self.slots_of(ids)
        counts = await self.queued_counts(ids)
        return [PoolView(p, slots.get(p.id, []), counts.get(p.id, 0)) for p in pools]

    async def get_slot(self, pool_id: str, slot_id: str) -> Slot | None:
        return await self.session.scalar(
            select(Slot).where(Slot.id == slot_id, Slot.pool_id == pool_id)
        )

    async def max_slot_rank(self, pool_id: str) -> int:
        return int(
            await self.session.scalar(
                select(func.coalesce(func.max(Slot.rank), -1)).where(Slot.pool_id == pool_id)
            )
            or 0
        )
