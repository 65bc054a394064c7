"""oauth accounts: the platform identity of an account

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04 19:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("accounts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("remote_id", sa.String(length=255), nullable=True))
        batch_op.create_unique_constraint(
            "uq_accounts_workspace_id_platform_remote_id", ["workspace_id", "platform", "remote_id"]
        )


def downgrade() -> None:
    with op.batch_alter_table("accounts", schema=None) as batch_op:
        batch_op.drop_constraint("uq_accounts_workspace_id_platform_remote_id", type_="unique")
        batch_op.drop_column("remote_id")
