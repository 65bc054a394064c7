"""ids compared byte by byte on PostgreSQL (collation "C")

Every id column (26 lower-case base-32 characters: `varchar(26)`) gets the collation "C"
on PostgreSQL, so that comparing two ids, in every index descent, join and foreign-key
check, is a `memcmp` instead of the database default collation's `strcoll` (with
en_US.UTF-8, ~8 % of the server's CPU in the ticker's burst; 57-59 → 53-54 µs of server
CPU per firing in `bench/tick_cpu.py`-style runs, docs/decisions.md). For these
characters at one length both collations give the same order, so nothing that sorts or
pages by id changes. SQLite compares bytes already: nothing to do there.

The columns are altered table by table (indexes and foreign keys are rebuilt by
PostgreSQL); on a large database this takes as long as rebuilding those indexes.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-05 08:40:00
"""

from __future__ import annotations

from collections import defaultdict

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def _id_columns() -> dict[str, list[str]]:
    rows = op.get_bind().execute(
        sa.text(
            "SELECT table_name, column_name FROM information_schema.columns "
            "WHERE table_schema = current_schema() AND data_type = 'character varying' "
            "AND character_maximum_length = 26 ORDER BY table_name, column_name"
        )
    )
    out: dict[str, list[str]] = defaultdict(list)
    for table, column in rows:
        out[table].append(column)
    return out


def _set(collation: str) -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table, columns in _id_columns().items():
        changes = ", ".join(
            f'ALTER COLUMN "{c}" TYPE varchar(26) COLLATE "{collation}"' for c in columns
        )
        op.execute(f'ALTER TABLE "{table}" {changes}')


def upgrade() -> None:
    _set("C")


def downgrade() -> None:
    _set("default")
