from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from uploadpools.kit.ids import new_id
from uploadpools.store.base import Base, IdType, JSONType

DELIVERY_STATUSES = ("pending", "in_progress", "posted", "skipped")
SKIP_REASONS = (
    "quota_exceeded",
    "platform_daily_limit",
    "platform_rate_limited",
    "platform_error",
    "auth_expired",
    "media_rejected",
    "interrupted",
    "account_disabled",
)


class Delivery(Base):
    __tablename__ = "deliveries"
    __table_args__ = (
        UniqueConstraint("firing_id", "account_id"),
        Index("ix_deliveries_status_next_attempt_at", "status", "next_attempt_at"),
    )

    id: Mapped[str] = mapped_column(IdType, primary_key=True, default=new_id)
    # No foreign key (migration 0009), for the same reason as `firings.pool_id`: a
    # delivery is inserted with its firing, and deleted before it (PoolService.delete,
    # PoolService.delete_slot).
    firing_id: Mapped[str] = mapped_column(IdType)
    # The item and the account are referenced without a foreign key (migration 0008):
    # QueueService.delete and AccountService.delete keep these links; the dispatcher
    # treats an account id that no longer exists as a removed account.
    # Not indexed (migration 0009): an item's deliveries are found through its firings
    # (`firings.item_id`, then this table's (firing_id, account_id) key), the firing of a
    # delivery always naming the delivery's item.
    item_id: Mapped[str] = mapped_column(IdType)
    account_id: Mapped[str | None] = mapped_column(IdType, index=True)
    platform: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16), default="pending")
    reason: Mapped[str | None] = mapped_column(String(32))
    detail: Mapped[str | None] = mapped_column(Text)
    remote_id: Mapped[str | None] = mapped_column(String(255))
    remote_url: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # Lease + fencing token: only the holder of the current token may record an outcome.
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    lease_token: Mapped[int] = mapped_column(Integer, default=0)
    lease_until: Mapped[datetime | None]
    next_attempt_at: Mapped[datetime | None]
    # Transient failures are retried until this instant, then skipped `platform_error`.
    retry_until: Mapped[datetime | None]
    # The platform's job id(s) saved before the irreversible step, for reconciliation.
    job: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    created_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]
