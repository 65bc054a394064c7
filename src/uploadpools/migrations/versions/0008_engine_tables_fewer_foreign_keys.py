"""firings and deliveries: drop the foreign keys the engine's writes paid for on every row

The ticker writes one firing and one delivery per account for every slot time, thousands
at once; on PostgreSQL each foreign key is a row-level trigger that looks the referenced
row up, and the four dropped here were about three quarters of the database's work per
firing. Ownership stays enforced (firings.pool_id, deliveries.firing_id); the links to a
slot, an item or an account are maintained where those are deleted (PoolService.delete_slot,
QueueService.delete, AccountService.delete), see docs/decisions.md.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04 22:50:00
"""

from __future__ import annotations

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

DROPPED = {
    "firings": [
        ("fk_firings_slot_id_slots", "slots", "slot_id", "CASCADE"),
        ("fk_firings_item_id_queue_items", "queue_items", "item_id", "SET NULL"),
    ],
    "deliveries": [
        ("fk_deliveries_item_id_queue_items", "queue_items", "item_id", "CASCADE"),
        ("fk_deliveries_account_id_accounts", "accounts", "account_id", "SET NULL"),
    ],
}


def upgrade() -> None:
    for table, fks in DROPPED.items():
        with op.batch_alter_table(table, schema=None) as batch_op:
            for name, _target, _col, _ondelete in fks:
                batch_op.drop_constraint(name, type_="foreignkey")


def downgrade() -> None:
    # Rows whose referenced row is gone would stop the constraints coming back.
    op.execute(
        "UPDATE firings SET item_id = NULL WHERE item_id NOT IN (SELECT id FROM queue_items)"
    )
    op.execute("DELETE FROM firings WHERE slot_id NOT IN (SELECT id FROM slots)")
    op.execute("DELETE FROM deliveries WHERE item_id NOT IN (SELECT id FROM queue_items)")
    op.execute(
        "UPDATE deliveries SET account_id = NULL WHERE account_id NOT IN (SELECT id FROM accounts)"
    )
    for table, fks in DROPPED.items():
        with op.batch_alter_table(table, schema=None) as batch_op:
            for name, target, col, ondelete in fks:
                batch_op.create_foreign_key(name, target, [col], ["id"], ondelete=ondelete)
