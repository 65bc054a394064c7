"""SQL for the FIFO queue. Order is (seq, id); every writer holds the pool row lock."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, bindparam, func, or_, select, union_all, update
from sqlalchemy.ext.asyncio import AsyncSession

from uploadpools.models import Delivery, Firing, Media, Pool, QueueItem
from uploadpools.models.item import QUEUED, held_by_firing, waiting
from uploadpools.store.bulk import insert_rows

STEP = 1 << 20

_pools = Pool.__table__
_items = QueueItem.__table__


@dataclass(frozen=True, slots=True)
class LockedPool:
    """A pool's row as read under its lock by a queue writer (no ORM object: cheaper)."""

    id: str
    workspace_id: str
    name: str
    timezone: str
    state: str
    empty_since: datetime | None
    low_since: datetime | None


# Built once: building a statement costs more than running it (~70 us for a small one).
_LOCK_POOLS = (
    select(
        _pools.c.id,
        _pools.c.workspace_id,
        _pools.c.name,
        _pools.c.timezone,
        _pools.c.state,
        _pools.c.empty_since,
        _pools.c.low_since,
    )
    .where(_pools.c.id.in_(bindparam("ids", expanding=True)))
    .order_by(_pools.c.id)
)
_LOCK_POOLS, _LOCK_FREE_POOLS = (
    _LOCK_POOLS.with_for_update(),
    _LOCK_POOLS.with_for_update(skip_locked=True),
)
_EXISTING_POOLS = select(_pools.c.id).where(_pools.c.id.in_(bindparam("ids", expanding=True)))
_BACKS: dict[int, Any] = {}


def _backs_of(n: int) -> Any:
    """max(seq) (an index probe) and the queued count of n pools, as one statement."""
    stmt = _BACKS.get(n)
    if stmt is None:
        parts = []
        for i in range(n):
            pool_id = bindparam(f"p{i}", type_=_items.c.pool_id.type)
            parts.append(
                select(
                    pool_id,
                    select(func.max(_items.c.seq))
                    .where(_items.c.pool_id == pool_id)
                    .scalar_subquery(),
                    select(func.count())
                    .select_from(_items)
                    .where(_items.c.pool_id == pool_id, waiting(_items))
                    .scalar_subquery(),
                )
            )
        stmt = _BACKS[n] = parts[0] if n == 1 else union_all(*parts)
    return stmt


class QueueRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(self, pool_id: str, item_id: str) -> QueueItem | None:
        return await self.session.scalar(
            select(QueueItem).where(QueueItem.id == item_id, QueueItem.pool_id == pool_id)
        )

    async def back_seq(self, pool_id: str) -> int:
        top = await self.session.scalar(
            select(func.max(QueueItem.seq)).where(QueueItem.pool_id == pool_id)
        )
        return (top or 0) + STEP

    async def backs(self, pool_ids: Sequence[str]) -> dict[str, tuple[int, int]]:
        """Per pool: the back of its queue (max seq, any status; 0 when empty) and how many
        items are queued, in one round trip. Run it after taking the pools' row locks."""
        if not pool_ids:
            return {}
        stmt = _backs_of(len(pool_ids))
        params = {f"p{n}": pool_id for n, pool_id in enumerate(pool_ids)}
        conn = await self.session.connection()
        rows = (await conn.execute(stmt, params)).all()
        return {r[0]: (int(r[1] or 0), int(r[2] or 0)) for r in rows}

    async def lock_pools(
        self, pool_ids: Sequence[str], *, skip_locked: bool = False
    ) -> list[LockedPool]:
        """The pools, row-locked in id order (so two writers never wait on each other in a
        cycle): the lock that serialises every change to a pool's queue order. With
        `skip_locked`, only those no other transaction holds (PostgreSQL; SQLite has no
        row locks: all of them)."""
        if not pool_ids:
            return []
        conn = await self.session.connection()
        stmt = _LOCK_FREE_POOLS if skip_locked else _LOCK_POOLS
        rows = await conn.execute(stmt, {"ids": sorted(set(pool_ids))})
        return [LockedPool(*r) for r in rows.all()]

    async def existing(self, pool_ids: Sequence[str]) -> set[str]:
        if not pool_ids:
            return set()
        conn = await self.session.connection()
        rows = await conn.execute(_EXISTING_POOLS, {"ids": sorted(set(pool_ids))})
        return {r[0] for r in rows.all()}

    async def end_spells(self, pool_ids: Sequence[str]) -> None:
        """A new video ends these pools' empty and low spells (the next dry run is news)."""
        if pool_ids:
            await self.session.execute(
                update(Pool)
                .where(Pool.id.in_(pool_ids))
                .values(empty_since=None, low_since=None)
                .execution_options(synchronize_session=False)
            )

    async def insert_media(self, rows: list[dict[str, Any]]) -> None:
        await insert_rows(self.session, Media.__table__, rows)  # type: ignore[arg-type]

    async def insert_items(self, rows: list[dict[str, Any]]) -> None:
        await insert_rows(self.session, QueueItem.__table__, rows)  # type: ignore[arg-type]

    async def front_seq(self, pool_id: str) -> int:
        # Stored `queued` (one index probe): an item going to the front may go ahead of
        # held ones too, which are out of the queue whatever their place.
        low = await self.session.scalar(
            select(func.min(QueueItem.seq)).where(
                QueueItem.pool_id == pool_id, QueueItem.stored_status == QUEUED
            )
        )
        return (low - STEP) if low is not None else await self.back_seq(pool_id)

    async def queued_order(self, pool_id: str) -> list[tuple[str, int]]:
        rows = await self.session.execute(
            select(QueueItem.id, QueueItem.seq)
            .where(QueueItem.pool_id == pool_id, waiting(QueueItem))
            .order_by(QueueItem.seq, QueueItem.id)
        )
        return [(r[0], r[1]) for r in rows.all()]

    async def set_seqs(self, seqs: dict[str, int]) -> None:
        for item_id, seq in seqs.items():
            await self.session.execute(
                update(QueueItem).where(QueueItem.id == item_id).values(seq=seq)
            )

    async def rank_of(self, item: QueueItem) -> int:
        """0-based place of a queued item in its pool's queue."""
        n = await self.session.scalar(
            select(func.count())
            .select_from(QueueItem)
            .where(
                QueueItem.pool_id == item.pool_id,
                waiting(QueueItem),
                or_(
                    QueueItem.seq < item.seq,
                    and_(QueueItem.seq == item.seq, QueueItem.id < item.id),
                ),
            )
        )
        return int(n or 0)

    async def ranks_of(self, pool_id: str, item_ids: Sequence[str]) -> dict[str, int]:
        """0-based queue places of several queued items, in one pass over the queue."""
        rn = (func.row_number().over(order_by=(QueueItem.seq, QueueItem.id)) - 1).label("pos")
        ranked = (
            select(QueueItem.id, rn)
            .where(QueueItem.pool_id == pool_id, waiting(QueueItem))
            .subquery()
        )
        rows = await self.session.execute(
            select(ranked.c.id, ranked.c.pos).where(ranked.c.id.in_(item_ids))
        )
        return {r[0]: int(r[1]) for r in rows.all()}

    async def page(
        self,
        pool_id: str,
        *,
        status: str | None,
        after: tuple[int, str] | str | None,
        limit: int,
    ) -> list[QueueItem]:
        q = select(QueueItem).where(QueueItem.pool_id == pool_id)
        if status == "queued":
            q = q.where(waiting(QueueItem))
            if isinstance(after, tuple):
                seq, item_id = after
                q = q.where(
                    or_(QueueItem.seq > seq, and_(QueueItem.seq == seq, QueueItem.id > item_id))
                )
            q = q.order_by(QueueItem.seq, QueueItem.id)
        else:
            if status == "dispatching":
                # Held by a pending firing; or stored so before migration 0011 and held
                # by none (a stuck item, shown as it is stored).
                q = q.where(
                    or_(
                        and_(
                            QueueItem.stored_status == QUEUED,
                            held_by_firing(QueueItem.id).is_not(None),
                        ),
                        QueueItem.stored_status == "dispatching",
                    )
                )
            elif status is not None:
                q = q.where(QueueItem.stored_status == status)
            if isinstance(after, str):
                q = q.where(QueueItem.id < after)
            q = q.order_by(QueueItem.id.desc())
        return list((await self.session.scalars(q.limit(limit))).all())

    async def media_of(self, media_ids: Sequence[str]) -> dict[str, Media]:
        if not media_ids:
            return {}
        rows = await self.session.scalars(select(Media).where(Media.id.in_(media_ids)))
        return {m.id: m for m in rows.all()}

    async def deliveries_of(self, item_ids: Sequence[str]) -> dict[str, list[Delivery]]:
        out: dict[str, list[Delivery]] = {i: [] for i in item_ids}
        if not item_ids:
            return out
        # Through the items' firings: `deliveries.item_id` is not indexed (migration 0009).
        rows = await self.session.scalars(
            select(Delivery)
            .join(Firing, Firing.id == Delivery.firing_id)
            .where(Firing.item_id.in_(item_ids), Delivery.item_id.in_(item_ids))
            .order_by(Delivery.id)
        )
        for d in rows.all():
            out[d.item_id].append(d)
        return out

    async def skipped(self, pool_id: str) -> list[QueueItem]:
        return list(
            (
                await self.session.scalars(
                    select(QueueItem)
                    .where(QueueItem.pool_id == pool_id, QueueItem.stored_status == "skipped")
                    .order_by(QueueItem.seq, QueueItem.id)
                )
            ).all()
        )
