"""Writing thousands of rows in one transaction, cheaply: the engine's bulk path.

SQLAlchemy's executemany costs several microseconds of Python per row (parameter
construction, one bind-processor call per value), and the ORM unit of work far more. Here
rows go out as multi-row ``INSERT … VALUES (…), (…)`` statements built once per shape,
each value converted by its column's own bind processor, once per distinct value (a burst
writes the same instants and dates over and over), and updates that set the same values
on many rows are one ``UPDATE … WHERE id IN (…)`` per distinct set of values.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import Table, insert, update
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

# Bound parameters per statement: under SQLite's 32,766 and PostgreSQL's 32,767.
MAX_PARAMS = 30_000
MAX_ROWS = 1_000

_Proc = Callable[[Any], Any] | None
_procs: dict[tuple[str, str, str], _Proc] = {}
_sql: dict[tuple[str, str, tuple[str, ...], int], str] = {}


def _processor(table: Table, key: str, dialect: Dialect) -> _Proc:
    k = (dialect.name, table.name, key)
    if k not in _procs:
        _procs[k] = table.c[key].type.bind_processor(dialect)
    return _procs[k]


def _insert_sql(table: Table, keys: tuple[str, ...], n: int, dialect: Dialect) -> str:
    k = (dialect.name, table.name, keys, n)
    sql = _sql.get(k)
    if sql is None:
        prep = dialect.identifier_preparer
        cols = ", ".join(prep.format_column(table.c[c]) for c in keys)
        w = len(keys)
        if dialect.paramstyle == "qmark":
            one = "(" + ", ".join("?" * w) + ")"
            values = ", ".join([one] * n)
        else:  # numeric_dollar
            values = ", ".join(
                "(" + ", ".join(f"${r * w + i + 1}" for i in range(w)) + ")" for r in range(n)
            )
        sql = _sql[k] = f"INSERT INTO {prep.format_table(table)} ({cols}) VALUES {values}"
    return sql


def _converted(table: Table, keys: Sequence[str], rows: list[dict[str, Any]], dialect: Dialect):  # type: ignore[no-untyped-def]
    """Each row's values in `keys` order, through the column processors (memoised)."""
    columns = []
    for key in keys:
        proc = _processor(table, key, dialect)
        values = [row[key] for row in rows]
        if proc is not None:
            memo: dict[Any, Any] = {}
            out = []
            for v in values:
                try:
                    out.append(memo[v])
                except KeyError:
                    out.append(memo.setdefault(v, proc(v)))
                except TypeError:  # unhashable (a JSON value)
                    out.append(proc(v))
            values = out
        columns.append(values)
    return columns


async def insert_rows(session: AsyncSession, table: Table, rows: list[dict[str, Any]]) -> None:
    """INSERT `rows` (dicts with the same keys) in as few statements as the limits allow."""
    if not rows:
        return
    conn: AsyncConnection = await session.connection()
    dialect = conn.dialect
    if dialect.paramstyle not in ("qmark", "numeric_dollar"):
        await conn.execute(insert(table), rows)
        return
    keys = tuple(rows[0])
    per = max(1, min(MAX_ROWS, MAX_PARAMS // len(keys)))
    for start in range(0, len(rows), per):
        chunk = rows[start : start + per]
        columns = _converted(table, keys, chunk, dialect)
        flat = [v for row in zip(*columns, strict=True) for v in row]
        await conn.exec_driver_sql(_insert_sql(table, keys, len(chunk), dialect), tuple(flat))


async def update_by_id(
    session: AsyncSession, table: Table, changes: dict[str, dict[str, Any]]
) -> None:
    """`changes` maps a row id to the values to set on it; rows that get the same values
    are updated together, by one ``WHERE id IN (…)`` per group."""
    groups: dict[tuple[tuple[str, Any], ...], list[str]] = defaultdict(list)
    for row_id, values in changes.items():
        groups[tuple(sorted(values.items()))].append(row_id)
    for values, ids in groups.items():
        for start in range(0, len(ids), MAX_ROWS * 10):
            await session.execute(
                update(table)
                .where(table.c.id.in_(ids[start : start + MAX_ROWS * 10]))
                .values(dict(values))
            )
