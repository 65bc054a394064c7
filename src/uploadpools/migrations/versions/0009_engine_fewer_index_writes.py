"""engine tables: fewer index entries and no row triggers written per firing

Per firing the ticker updates a queue item (`queued` → `dispatching`) and inserts a
firing and a delivery. On PostgreSQL an UPDATE that changes an indexed column writes a
new entry into every index of the table, so each index on these tables is paid at every
firing. Here:

- `ix_queue_items_pool_status_seq` holds only queued rows on PostgreSQL (the queue is
  all it serves; the new row version of a dispatched item is no longer entered). SQLite
  keeps the whole index: its UPDATE only touches the indexes of the columns it changes.
- `deliveries.item_id` is no longer indexed: an item's deliveries are found through its
  firings (`firings.item_id`, then `deliveries (firing_id, account_id)`).
- The last two foreign keys of the engine's tables go, `firings.pool_id` and
  `deliveries.firing_id`: on PostgreSQL each was a row trigger that looked the
  referenced row up (FOR KEY SHARE) at every insert, about a fifth of the database's
  work per firing each. Every firing is inserted under its pool's row lock, with its
  deliveries, and PoolService.delete / delete_slot delete the firings and their
  deliveries under that lock (what ON DELETE CASCADE did).

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


FOREIGN_KEYS = [
    ("deliveries", "fk_deliveries_firing_id_firings", "firings", "firing_id"),
    ("firings", "fk_firings_pool_id_pools", "pools", "pool_id"),
]


def upgrade() -> None:
    op.drop_index("ix_deliveries_item_id", table_name="deliveries")
    for table, name, _target, _col in FOREIGN_KEYS:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_constraint(name, type_="foreignkey")
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
    op.create_index("ix_deliveries_item_id", "deliveries", ["item_id"])
    # Rows whose referenced row is gone would stop the constraints coming back.
    op.execute("DELETE FROM firings WHERE pool_id NOT IN (SELECT id FROM pools)")
    op.execute("DELETE FROM deliveries WHERE firing_id NOT IN (SELECT id FROM firings)")
    for table, name, target, col in reversed(FOREIGN_KEYS):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.create_foreign_key(name, target, [col], ["id"], ondelete="CASCADE")
