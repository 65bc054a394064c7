"""queue items: `dispatching` derived from the pending firing that holds the item

A firing records the item it took (`firings.item_id`); from this revision on, taking
the head writes only the firing, and an item is `dispatching` while a pending firing
holds it (models/item.py). Items stored as `dispatching` become `queued` with their
`dispatched_at` cleared (the holding firing's `fired_at` is read instead), when a pending
firing holds them; one that none holds stays as it is (it would have stayed stuck
either way). The downgrade writes the derived status and time back.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-05 11:00:00
"""

from __future__ import annotations

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

HELD = "EXISTS (SELECT 1 FROM firings f WHERE f.item_id = queue_items.id AND f.outcome = 'pending')"


def upgrade() -> None:
    op.execute(
        "UPDATE queue_items SET status = 'queued', dispatched_at = NULL "
        f"WHERE status = 'dispatching' AND {HELD}"
    )


def downgrade() -> None:
    op.execute(
        "UPDATE queue_items SET status = 'dispatching', dispatched_at = ("
        "SELECT min(f.fired_at) FROM firings f WHERE f.item_id = queue_items.id "
        f"AND f.outcome = 'pending') WHERE status = 'queued' AND {HELD}"
    )
