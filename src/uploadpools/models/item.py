from __future__ import annotations

from collections.abc import MutableMapping
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    ForeignKey,
    Index,
    String,
    Text,
    and_,
    case,
    func,
    literal_column,
    select,
    text,
)
from sqlalchemy.ext.hybrid import hybrid_property
from sqlalchemy.orm import Mapped, column_property, mapped_column

from uploadpools.kit.ids import new_id
from uploadpools.models.firing import PENDING, Firing
from uploadpools.store.base import Base, IdType, JSONType

ITEM_STATUSES = ("queued", "dispatching", "dispatched", "skipped")

# `status = 'queued'` in a query, with the value in the statement's text rather than a
# bound parameter: on PostgreSQL the queue index is partial on it, and the generic plan
# of a prepared statement can only use a partial index whose predicate the text implies
# (`status = $1` would leave it a scan of the pool's whole history). Compare with
# `QueueItem.stored_status == QUEUED`, never with the string "queued".
QUEUED = literal_column("'queued'", String(16))


def held_by_firing(item_id: ColumnElement[str]) -> ColumnElement[object]:
    """The `fired_at` of the pending firing holding the item, or NULL.

    A scalar subquery with LIMIT, which PostgreSQL evaluates per item (an index probe
    on `firings.item_id`) instead of flattening it into an anti-join that may hash the
    whole firing history."""
    return (
        select(Firing.fired_at)
        .where(Firing.item_id == item_id, Firing.outcome == PENDING)
        .limit(1)
        .scalar_subquery()
    )


class QueueItem(Base):
    """A video in a pool's queue.

    Its status is stored as `queued`, `dispatched` or `skipped`; `dispatching` is derived:
    a queued item that a pending firing holds (`firings.item_id`). A firing is the record
    of which item it took, so taking the head writes the firing only, not the item too:
    the item is written once per post, when its last delivery settles (engine/firing.py
    `settle`), which also stores `dispatched_at` (the firing's `fired_at`). `status` and
    `dispatched_at` read the derived values in Python and in SQL; `stored_status` is the
    column. "Waiting in the queue" is `waiting(QueueItem)`."""

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
    stored_status: Mapped[str] = mapped_column("status", String(16), default="queued")
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
    stored_dispatched_at: Mapped[datetime | None] = mapped_column("dispatched_at")
    finished_at: Mapped[datetime | None]
    # Loaded with the item, not expired by a flush: what the item's status was when it
    # was read (settling writes the stored status, which then decides).
    held_at: Mapped[datetime | None] = column_property(held_by_firing(id), expire_on_flush=False)

    def _held_at(self) -> datetime | None:
        # Never a load: an item made in this session was never held.
        return self.__dict__.get("held_at")

    @hybrid_property
    def status(self) -> str:
        if self.stored_status == "queued" and self._held_at() is not None:
            return "dispatching"
        return self.stored_status

    @status.inplace.setter
    def _status_setter(self, value: str) -> None:
        self.stored_status = value

    @status.inplace.expression
    @classmethod
    def _status_expression(cls) -> ColumnElement[str]:
        return case(
            (
                and_(cls.stored_status == QUEUED, held_by_firing(cls.id).is_not(None)),
                literal_column("'dispatching'", String(16)),
            ),
            else_=cls.stored_status,
        )

    @status.inplace.update_expression
    @classmethod
    def _status_update(cls, value: Any) -> list[tuple[Any, Any]]:
        return [(cls.stored_status, value)]

    @status.inplace.bulk_dml
    @classmethod
    def _status_bulk(cls, mapping: MutableMapping[str, Any], value: Any) -> None:
        mapping["stored_status"] = mapping.pop("status")

    @hybrid_property
    def dispatched_at(self) -> datetime | None:
        return self.stored_dispatched_at or self._held_at()

    @dispatched_at.inplace.setter
    def _dispatched_at_setter(self, value: datetime | None) -> None:
        self.stored_dispatched_at = value

    @dispatched_at.inplace.expression
    @classmethod
    def _dispatched_at_expression(cls) -> ColumnElement[datetime | None]:
        return func.coalesce(cls.stored_dispatched_at, held_by_firing(cls.id))

    @dispatched_at.inplace.update_expression
    @classmethod
    def _dispatched_at_update(cls, value: Any) -> list[tuple[Any, Any]]:
        return [(cls.stored_dispatched_at, value)]

    @dispatched_at.inplace.bulk_dml
    @classmethod
    def _dispatched_at_bulk(cls, mapping: MutableMapping[str, Any], value: Any) -> None:
        mapping["stored_dispatched_at"] = mapping.pop("dispatched_at")


def waiting(items: type[QueueItem] | Any) -> ColumnElement[bool]:
    """Waiting in the queue: stored `queued` and held by no pending firing. `items` is
    the QueueItem class or its table (or an alias of either)."""
    c = items.c if hasattr(items, "c") else items
    status = c.status if hasattr(items, "c") else c.stored_status
    return and_(status == QUEUED, held_by_firing(c.id).is_(None))
