from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy.engine import Connection

import uploadpools.models  # noqa: F401  (registers the tables)
from uploadpools.config import Settings
from uploadpools.store.base import Base
from uploadpools.store.engine import create_engine

target_metadata = Base.metadata


def _sqlite_pragma(connection: Connection, sql: str) -> list[tuple[object, ...]]:
    """Straight to the driver: through SQLAlchemy it would open a transaction first."""
    cur = connection.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        cur.execute(sql)
        return list(cur.fetchall())
    finally:
        cur.close()


def _run(connection: Connection) -> None:
    sqlite = connection.dialect.name == "sqlite"
    if sqlite:
        # SQLite changes a table's constraints by rebuilding it (batch mode). With foreign
        # keys on, dropping the old table runs the ON DELETE actions of every table that
        # points at it: deliveries would go with a rebuilt `firings`. The pragma is a no-op
        # inside a transaction, so it is set before ours begins; whether every reference
        # still resolves is checked before committing.
        if connection.in_transaction():
            raise RuntimeError("SQLite migrations must start outside a transaction")
        _sqlite_pragma(connection, "PRAGMA foreign_keys=OFF")
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=sqlite,
        compare_type=True,
    )
    try:
        with context.begin_transaction():
            context.run_migrations()
            if sqlite:
                broken = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
                if broken:
                    raise RuntimeError(f"the migration left broken references: {broken[:5]}")
    finally:
        if sqlite:
            _sqlite_pragma(connection, "PRAGMA foreign_keys=ON")


async def _run_async(url: str | None) -> None:
    settings = Settings()
    engine = create_engine(settings, url=url)
    try:
        async with engine.connect() as conn:
            await conn.run_sync(_run)
            await conn.commit()
    finally:
        await engine.dispose()


connection = context.config.attributes.get("connection")
if connection is not None:
    _run(connection)
else:
    asyncio.run(_run_async(context.config.attributes.get("url")))
