from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import BigInteger, Date, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from uploadpools.kit.ids import new_id
from uploadpools.store.base import Base, IdType


class Pool(Base):
    __tablename__ = "pools"

    id: Mapped[str] = mapped_column(IdType, primary_key=True, default=new_id)
    workspace_id: Mapped[str] = mapped_column(
        ForeignKey("workspaces.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(200))
    timezone: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16), default="paused")
    grace_minutes: Mapped[int] = mapped_column(Integer, default=15)
    # Set when the workspace was told the queue ran dry; cleared by the next enqueue,
    # so there is one `pool.empty` notification per empty spell.
    empty_since: Mapped[datetime | None]
    # Set when the workspace was told the queue is running low; cleared by an enqueue.
    low_since: Mapped[datetime | None]
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class Slot(Base):
    __tablename__ = "slots"
    # The ticker walks due slots by (instant, id) keyset (migration 0012).
    __table_args__ = (Index("ix_slots_next_fire_at_id", "next_fire_at", "id"),)

    id: Mapped[str] = mapped_column(IdType, primary_key=True, default=new_id)
    pool_id: Mapped[str] = mapped_column(ForeignKey("pools.id", ondelete="CASCADE"), index=True)
    # Order of slots within a pool: ties at one instant take items in this order.
    rank: Mapped[int] = mapped_column(BigInteger)
    time: Mapped[str] = mapped_column(String(5))
    # Bit i set = weekday i (0 = Monday), judged in the pool's timezone.
    days_mask: Mapped[int] = mapped_column(Integer)
    # The next scheduled occurrence (UTC) and its local date; null while the pool is paused.
    next_fire_at: Mapped[datetime | None]
    next_local_date: Mapped[date | None] = mapped_column(Date)
    created_at: Mapped[datetime]
    # Last change of time or days: occurrences before it followed another schedule.
    schedule_changed_at: Mapped[datetime]


class SlotAccount(Base):
    __tablename__ = "slot_accounts"

    slot_id: Mapped[str] = mapped_column(
        ForeignKey("slots.id", ondelete="CASCADE"), primary_key=True
    )
    account_id: Mapped[str] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    rank: Mapped[int] = mapped_column(Integer)
