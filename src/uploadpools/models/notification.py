from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from uploadpools.kit.ids import new_id
from uploadpools.store.base import Base, IdType


class Notification(Base):
    __tablename__ = "notifications"
    __table_args__ = (
        Index("ix_notifications_workspace_id_id", "workspace_id", "id"),
        Index("ix_notifications_mailed_at_created_at", "mailed_at", "created_at"),
    )

    id: Mapped[str] = mapped_column(IdType, primary_key=True, default=new_id)
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    level: Mapped[str] = mapped_column(String(16))  # info | warning | error
    kind: Mapped[str] = mapped_column(String(64))
    message: Mapped[str] = mapped_column(Text)
    pool_id: Mapped[str | None] = mapped_column(ForeignKey("pools.id", ondelete="SET NULL"))
    item_id: Mapped[str | None] = mapped_column(ForeignKey("queue_items.id", ondelete="SET NULL"))
    created_at: Mapped[datetime]
    read_at: Mapped[datetime | None]
    # Warnings and errors are emailed in batches; set once this one went out (or was claimed).
    mailed_at: Mapped[datetime | None]
