from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy.engine import Connection

import uploadpools.models  # noqa: F401  (registers the tables)
from uploadpools.config import Settings
from uploadpools.store.base import Base
from uploadpools.store.engine import create_engine

target_metadata = Base.metadata


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


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
