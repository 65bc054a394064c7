from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import Date, ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from uploadpools.kit.ids import new_id
from uploadpools.store.base import Base, IdType


class QuotaEntry(Base):
    """One unit of an owner's monthly quota: reserved before a post, consumed when it
    posts, deleted when it does not."""

    __tablename__ = "quota_entries"
    __table_args__ = (Index("ix_quota_entries_owner_period", "owner_id", "period_start"),)

    id: Mapped[str] = mapped_column(IdType, primary_key=True, default=new_id)
    owner_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    user_id: Mapped[str | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    delivery_id: Mapped[str | None] = mapped_column(
        ForeignKey("deliveries.id", ondelete="SET NULL"), unique=True
    )
    period_start: Mapped[date] = mapped_column(Date)
    state: Mapped[str] = mapped_column(String(16))  # reserved | consumed
    created_at: Mapped[datetime]
