"""slots: the due index carries the slot id, `(next_fire_at, id)`

The ticker walks the due slots by keyset: each batch continues after the last (instant,
slot) the previous batch of its transaction read. With `next_fire_at` alone, the slots
of one instant come in heap order and a batch could only start again from the first of
them, walking past every slot that the ticker's own transaction, or another ticker's,
had taken already; while a ticker prepares an instant ahead (docs/decisions.md) those
are thousands of rows, locked and not committed, per batch.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-05 15:00:00
"""

from __future__ import annotations

from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_slots_next_fire_at", table_name="slots")
    op.create_index("ix_slots_next_fire_at_id", "slots", ["next_fire_at", "id"])


def downgrade() -> None:
    op.drop_index("ix_slots_next_fire_at_id", table_name="slots")
    op.create_index("ix_slots_next_fire_at", "slots", ["next_fire_at"])
