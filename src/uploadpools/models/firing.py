from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import Date, Index, Integer, String, literal_column, text
from sqlalchemy.orm import Mapped, mapped_column

from uploadpools.kit.ids import new_id
from uploadpools.store.base import Base, IdType

FIRING_OUTCOMES = ("pending", "dispatched", "partial", "skipped", "empty", "missed", "manual")

# `outcome = 'pending'` with the value in the statement's text (see QUEUED in item.py).
PENDING = literal_column("'pending'", String(16))
# `kind = 'scheduled'` in the statement's text: the (slot, local date) key is a partial
# index on it, which a prepared statement's generic plan can use only then.
SCHEDULED = literal_column("'scheduled'", String(16))


class Firing(Base):
    """One occurrence of one slot. A scheduled firing exists at most once per (slot, local
    date): the partial unique index, not code, is what makes that true."""

    __tablename__ = "firings"
    __table_args__ = (
        Index(
            "uq_firings_slot_local_date",
            "slot_id",
            "local_date",
            unique=True,
            sqlite_where=text("kind = 'scheduled'"),
            postgresql_where=text("kind = 'scheduled'"),
        ),
        Index("ix_firings_pool_id_id", "pool_id", "id"),
    )

    id: Mapped[str] = mapped_column(IdType, primary_key=True, default=new_id)
    # No foreign key (migration 0009): on PostgreSQL it was a row trigger looking the pool
    # up at every insert, a fifth of the database's work per firing. PoolService.delete
    # deletes a pool's firings (and their deliveries) under the pool's lock, and every
    # firing is inserted under that lock.
    pool_id: Mapped[str] = mapped_column(IdType)
    # The slot and the item are referenced without a foreign key (migration 0008): the
    # ticker writes thousands of firings at once, and PoolService.delete_slot and
    # QueueService.delete keep these links.
    slot_id: Mapped[str] = mapped_column(IdType)
    kind: Mapped[str] = mapped_column(String(16))  # scheduled | manual
    local_date: Mapped[date] = mapped_column(Date)
    scheduled_for: Mapped[datetime]
    fired_at: Mapped[datetime]
    outcome: Mapped[str] = mapped_column(String(16))
    # A `missed` record stands for every occurrence of its slot from `local_date` through
    # `covers_until` (one record per outage, not one per occurrence).
    covers_until: Mapped[date | None] = mapped_column(Date)
    missed_count: Mapped[int] = mapped_column(Integer, default=0)
    item_id: Mapped[str | None] = mapped_column(IdType, index=True)
