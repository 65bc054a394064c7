from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from uploadpools.kit.ids import new_id
from uploadpools.store.base import Base, IdType


class PoolStateChange(Base):
    """When a pool was activated or paused, so an audit knows when it was meant to fire."""

    __tablename__ = "pool_state_changes"
    __table_args__ = (Index("ix_pool_state_changes_pool_at", "pool_id", "at"),)

    id: Mapped[str] = mapped_column(IdType, primary_key=True, default=new_id)
    pool_id: Mapped[str] = mapped_column(ForeignKey("pools.id", ondelete="CASCADE"))
    state: Mapped[str] = mapped_column(String(16))
    at: Mapped[datetime]
