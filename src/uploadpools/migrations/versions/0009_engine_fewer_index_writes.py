"""engine tables: fewer index entries written per firing

Per firing the ticker updates a queue item (`queued` → `dispatching`) and inserts a
firing and a delivery. On PostgreSQL an UPDATE that changes an indexed column writes a
new entry into every index of the table, so each index on these tables is paid at every
firing. Here:

- `ix_queue_items_pool_status_seq` holds only queued rows on PostgreSQL (the queue is
  all it serves; the new row version of a dispatched item is no longer entered). SQLite
  keeps the whole index: its UPDATE only touches the indexes of the columns it changes.

See docs/decisions.md, "Performance", and bench/README.md for the figures.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-05 02:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

QUEUE_INDEX = "ix_queue_items_pool_status_seq"
QUEUE_COLUMNS = ["pool_id", "status", "seq"]


def _postgresql() -> bool:
    return op.get_bind().dialect.name == "postgresql"


def upgrade() -> None:
    if _postgresql():
        op.drop_index(QUEUE_INDEX, table_name="queue_items")
        op.create_index(
            QUEUE_INDEX,
            "queue_items",
            QUEUE_COLUMNS,
            postgresql_where=sa.text("status = 'queued'"),
        )


def downgrade() -> None:
    if _postgresql():
        op.drop_index(QUEUE_INDEX, table_name="queue_items")
        op.create_index(QUEUE_INDEX, "queue_items", QUEUE_COLUMNS)
