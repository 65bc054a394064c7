from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, ForeignKey, Index, String, Text, literal_column, text
from sqlalchemy.orm import Mapped, mapped_column

from uploadpools.kit.ids import new_id
from uploadpools.store.base import Base, IdType, JSONType

ITEM_STATUSES = ("queued", "dispatching", "dispatched", "skipped")

# `status = 'queued'` in a query, with the value in the statement's text rather than a
# bound parameter: on PostgreSQL the queue index is partial on it, and the generic plan
# of a prepared statement can only use a partial index whose predicate the text implies
# (`status = $1` would leave it a scan of the pool's whole history). Compare with
# `QueueItem.status == QUEUED`, never with the string "queued".
QUEUED = literal_column("'queued'", String(16))


class QueueItem(Base):
    __tablename__ = "queue_items"
    __table_args__ = (
        # The queue in order. On PostgreSQL only queued rows are in it (migration 0009):
        # taking an item out of the queue then adds no entry to it, and the ticker's
        # `status = 'dispatching'` update writes one index entry fewer per firing. On
        # SQLite an UPDATE touches only the indexes holding a column it changes, so the
        # whole index costs nothing more there and serves the other statuses' lists.
        Index(
            "ix_queue_items_pool_status_seq",
            "pool_id",
            "status",
            "seq",
            postgresql_where=text("status = 'queued'"),
        ),
        # The back of the queue (max seq of a pool, whatever the status) in one index probe.
        Index("ix_queue_items_pool_seq", "pool_id", "seq"),
    )

    id: Mapped[str] = mapped_column(IdType, primary_key=True, default=new_id)
    workspace_id: Mapped[str] = mapped_column(
        ForeignKey("workspaces.id", ondelete="CASCADE"), index=True
    )
    pool_id: Mapped[str] = mapped_column(ForeignKey("pools.id", ondelete="CASCADE"))
    media_id: Mapped[str] = mapped_column(ForeignKey("media.id"), index=True)
    status: Mapped[str] = mapped_column(String(16), default="queued")
    # Sort key of the FIFO queue (sparse, so a move rarely renumbers); `position` in the
    # API is the 0-based rank among queued items.
    seq: Mapped[int] = mapped_column(BigInteger)
    title: Mapped[str] = mapped_column(String(500), default="")
    caption: Mapped[str] = mapped_column(Text, default="")
    options: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    # Why an item was skipped without any delivery (e.g. its video_url could not be fetched).
    skip_reason: Mapped[str | None] = mapped_column(String(32))
    skip_detail: Mapped[str | None] = mapped_column(Text)
    enqueued_at: Mapped[datetime]
    # Who added it (the API key's user, or the signed-in web user); Usage counts by it.
    added_by: Mapped[str | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    dispatched_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
