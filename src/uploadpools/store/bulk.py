"""Writing thousands of rows in one transaction, cheaply: the engine's bulk path.

SQLAlchemy's executemany costs several microseconds of Python per row (parameter
construction, one bind-processor call per value), and the ORM unit of work far more; an
``IN (…)`` list of thousands of values is rendered, one bound parameter at a time, on
every execution. Here each value is converted by its column's own bind processor, once per
distinct value (a burst writes the same instants and dates over and over), and:

- PostgreSQL gets one array parameter per column: ``INSERT … SELECT * FROM unnest($1,
  …)``, and an id list is one text parameter, ``… WHERE id = ANY(string_to_array($1,
  ','))``; the statement text does not grow with the row count, so it is parsed and
  planned as cheaply for 5,000 rows as for one.
- with ``copy=True`` (the ticker's firings and deliveries) PostgreSQL gets a binary
  ``COPY … FROM STDIN`` in the session's transaction instead (`_copy`).
- SQLite gets multi-row ``INSERT … VALUES (…), (…)`` statements built once per shape, and
  lists as one JSON parameter read by ``json_each``.

Updates that set the same values on many rows are one ``UPDATE … WHERE id`` in the list
per distinct set of values.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable, Collection, Sequence
from typing import Any

from sqlalchemy import (
    JSON,
    ColumnElement,
    Float,
    Integer,
    Numeric,
    String,
    Table,
    TypeDecorator,
    any_,
    bindparam,
    column,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

# Bound parameters per statement: under SQLite's 32,766 and PostgreSQL's 32,767.
MAX_PARAMS = 30_000
MAX_ROWS = 1_000
# Rows per unnest() statement on PostgreSQL (no parameter limit applies).
MAX_ARRAY_ROWS = 10_000

_Proc = Callable[[Any], Any] | None
_procs: dict[tuple[str, str, str], _Proc] = {}
_sql: dict[tuple[str, str, tuple[str, ...], int], str] = {}


def any_of(dialect_name: str, col: Any, values: Collection[str]) -> ColumnElement[bool]:
    """``col IN values`` for a string column (ids), with the list as one parameter."""
    values = list(values)
    if dialect_name == "postgresql":
        # One text parameter split by the server: asyncpg encodes an array parameter
        # with two `isinstance` checks against ABCs per element. Ids hold no comma.
        joined = ",".join(values)
        return col == any_(
            func.string_to_array(bindparam(None, joined, type_=String(), unique=True), ",")
        )
    return col.in_(
        select(column("value")).select_from(
            func.json_each(bindparam(None, json.dumps(values), type_=String(), unique=True))
        )
    )


def _processor(table: Table, key: str, dialect: Dialect) -> _Proc:
    k = (dialect.name, table.name, key)
    if k not in _procs:
        if _is_json(table, key, dialect):
            _procs[k] = json.dumps  # sent as text and cast in SQL (see _unnest_sql)
        else:
            _procs[k] = table.c[key].type.bind_processor(dialect)
    return _procs[k]


def _impl(table: Table, key: str, dialect: Dialect) -> Any:
    """The column's type as the dialect stores it (a TypeDecorator's own type)."""
    t = table.c[key].type.dialect_impl(dialect)
    return t.impl_instance if isinstance(t, TypeDecorator) else t


def _is_json(table: Table, key: str, dialect: Dialect) -> bool:
    return dialect.name == "postgresql" and isinstance(_impl(table, key, dialect), JSON)


def _insert_sql(table: Table, keys: tuple[str, ...], n: int, dialect: Dialect) -> str:
    k = (dialect.name, table.name, keys, n)
    sql = _sql.get(k)
    if sql is None:
        prep = dialect.identifier_preparer
        cols = ", ".join(prep.format_column(table.c[c]) for c in keys)
        w = len(keys)
        one = "(" + ", ".join("?" * w) + ")"
        values = ", ".join([one] * n)
        sql = _sql[k] = f"INSERT INTO {prep.format_table(table)} ({cols}) VALUES {values}"
    return sql


def _array_element(table: Table, key: str, dialect: Dialect) -> str:
    """The array's element type. Not the column's own when that has a length or a
    precision: an explicit cast to varchar(n) or numeric(p, s) would silently truncate or
    round, where the INSERT into the column refuses a value that does not fit."""
    impl = _impl(table, key, dialect)
    if isinstance(impl, String):
        return "text"
    if isinstance(impl, Numeric) and not isinstance(impl, Float | Integer):
        return "numeric"
    return str(impl.compile(dialect))


def _unnest_sql(table: Table, keys: tuple[str, ...], dialect: Dialect) -> str:
    """``INSERT … SELECT … FROM unnest($1::type[], …)``: one array per column."""
    k = (dialect.name, table.name, keys, -1)
    sql = _sql.get(k)
    if sql is None:
        prep = dialect.identifier_preparer
        cols = ", ".join(prep.format_column(table.c[c]) for c in keys)
        arrays, picks = [], []
        for i, key in enumerate(keys):
            if _is_json(table, key, dialect):
                arrays.append(f"${i + 1}::text[]")
                picks.append(f"u.c{i}::jsonb")
            else:
                arrays.append(f"${i + 1}::{_array_element(table, key, dialect)}[]")
                picks.append(f"u.c{i}")
        names = ", ".join(f"c{i}" for i in range(len(keys)))
        sql = _sql[k] = (
            f"INSERT INTO {prep.format_table(table)} ({cols}) SELECT {', '.join(picks)} "
            f"FROM unnest({', '.join(arrays)}) AS u({names})"
        )
    return sql


def _converted(table: Table, keys: Sequence[str], columns: list[Sequence[Any]], dialect: Dialect):  # type: ignore[no-untyped-def]
    """Each column's values (in `keys` order) through the column's processor (memoised)."""
    out_columns = []
    for key, values in zip(keys, columns, strict=True):
        proc = _processor(table, key, dialect)
        if proc is not None:
            memo: dict[Any, Any] = {}
            out = []
            if isinstance(_impl(table, key, dialect), JSON):
                # Unhashable: memoised by identity (rows often share one value object).
                for v in values:
                    k = id(v)
                    if k not in memo:
                        memo[k] = proc(v)
                    out.append(memo[k])
            else:
                for v in values:
                    try:
                        out.append(memo[v])
                    except KeyError:
                        out.append(memo.setdefault(v, proc(v)))
            values = out
        out_columns.append(values)
    return out_columns


async def insert_rows(
    session: AsyncSession, table: Table, rows: list[dict[str, Any]], *, copy: bool = False
) -> None:
    """INSERT `rows` (dicts with the same keys) in as few statements as the limits allow.

    `copy`: on PostgreSQL, write them with a binary ``COPY … FROM STDIN`` in the
    session's transaction instead (see `_copy`)."""
    if not rows:
        return
    keys = tuple(rows[0])
    await _insert_columns(session, table, keys, [[r[k] for r in rows] for k in keys], copy)


async def insert_records(
    session: AsyncSession,
    table: Table,
    keys: tuple[str, ...],
    records: list[tuple[Any, ...]],
    *,
    copy: bool = False,
) -> None:
    """`insert_rows` for rows given as tuples of the values of `keys`, in that order (the
    ticker's firings and deliveries: cheaper to build than dicts, by the thousand)."""
    if records:
        await _insert_columns(session, table, keys, list(zip(*records, strict=True)), copy)


async def _insert_columns(
    session: AsyncSession,
    table: Table,
    keys: tuple[str, ...],
    columns: list[Sequence[Any]],
    copy: bool,
) -> None:
    conn: AsyncConnection = await session.connection()
    dialect = conn.dialect
    if dialect.paramstyle not in ("numeric_dollar", "qmark"):  # SQLAlchemy binds them itself
        rows = [dict(zip(keys, r, strict=True)) for r in zip(*columns, strict=True)]
        await conn.execute(insert(table), rows)
        return
    columns = _converted(table, keys, columns, dialect)
    if dialect.paramstyle == "numeric_dollar":  # asyncpg
        if copy and await _copy(conn, table, keys, columns):
            return
        sql = _unnest_sql(table, keys, dialect)
        for start in range(0, len(columns[0]), MAX_ARRAY_ROWS):
            chunk = tuple(list(c[start : start + MAX_ARRAY_ROWS]) for c in columns)
            await conn.exec_driver_sql(sql, chunk)
        return
    n = len(columns[0])
    per = max(1, min(MAX_ROWS, MAX_PARAMS // len(keys)))
    for start in range(0, n, per):
        rows = list(zip(*(c[start : start + per] for c in columns), strict=True))
        flat = [v for row in rows for v in row]
        await conn.exec_driver_sql(_insert_sql(table, keys, len(rows), dialect), tuple(flat))


async def _copy(
    conn: AsyncConnection, table: Table, keys: tuple[str, ...], columns: list[Sequence[Any]]
) -> bool:
    """Binary ``COPY table (keys) FROM STDIN`` of the `columns` on the session's asyncpg
    connection, inside its open transaction; False (nothing written) when none is open
    yet. Cheaper than ``unnest()`` for the engine: asyncpg encodes each row as a record,
    where an array parameter costs it two ``isinstance`` checks against ABCs per element;
    and PostgreSQL fills heap pages several rows at a time. A database error is raised as
    SQLAlchemy's (e.g. ``IntegrityError``), as from a statement."""
    raw = await conn.get_raw_connection()
    driver = raw.driver_connection
    assert driver is not None
    if not driver.is_in_transaction():
        return False
    try:
        await driver.copy_records_to_table(
            table.name, records=list(zip(*columns, strict=True)), columns=keys
        )
    except Exception as error:
        dbapi = conn.dialect.loaded_dbapi
        try:
            raw.dbapi_connection._handle_exception(error)  # type: ignore[union-attr]
        except dbapi.Error as translated:
            raise DBAPIError.instance(
                f"COPY {table.name} ({', '.join(keys)}) FROM STDIN",
                None,
                translated,
                dbapi.Error,
                dialect=conn.dialect,
            ) from error
        raise
    return True


async def update_by_id(
    session: AsyncSession, table: Table, changes: dict[str, dict[str, Any]]
) -> None:
    """`changes` maps a row id to the values to set on it; rows that get the same values
    are updated together, by one ``UPDATE … WHERE id`` in the list per group."""
    if not changes:
        return
    groups: dict[tuple[tuple[str, Any], ...], list[str]] = defaultdict(list)
    for row_id, values in changes.items():
        groups[tuple(sorted(values.items()))].append(row_id)
    for values, ids in groups.items():
        await update_ids(session, table, ids, dict(values))


async def update_ids(
    session: AsyncSession, table: Table, ids: Sequence[str], values: dict[str, Any]
) -> None:
    """Set `values` on the rows whose id is in `ids`: ``UPDATE … WHERE id`` in the list."""
    name = (await session.connection()).dialect.name
    for start in range(0, len(ids), MAX_ARRAY_ROWS):
        await session.execute(
            update(table)
            .where(any_of(name, table.c.id, ids[start : start + MAX_ARRAY_ROWS]))
            .values(values)
        )
