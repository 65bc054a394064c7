"""queue items: who added each one (usage per member)

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04 21:10:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("queue_items", schema=None) as batch_op:
        batch_op.add_column(sa.Column("added_by", sa.String(length=26), nullable=True))
        batch_op.create_foreign_key(
            "fk_queue_items_added_by_users", "users", ["added_by"], ["id"], ondelete="SET NULL"
        )


def downgrade() -> None:
    with op.batch_alter_table("queue_items", schema=None) as batch_op:
        batch_op.drop_constraint("fk_queue_items_added_by_users", type_="foreignkey")
        batch_op.drop_column("added_by")
