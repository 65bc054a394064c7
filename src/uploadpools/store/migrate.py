"""Alembic driven from code, so `uploadpools migrate` works from an installed package."""

from __future__ import annotations

import asyncio
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy.ext.asyncio import AsyncEngine

from uploadpools.config import Settings


def alembic_config(url: str | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", "uploadpools:migrations")
    cfg.attributes["url"] = url
    return cfg


async def upgrade(engine: AsyncEngine, revision: str = "head") -> None:
    await _command(engine, command.upgrade, revision)


async def downgrade(engine: AsyncEngine, revision: str) -> None:
    await _command(engine, command.downgrade, revision)


async def _command(engine: AsyncEngine, run: Any, revision: str) -> None:
    # Not inside a transaction: on SQLite, env.py turns foreign keys off before its own.
    def _do(connection: Any) -> None:
        cfg = alembic_config()
        cfg.attributes["connection"] = connection
        run(cfg, revision)

    async with engine.connect() as conn:
        await conn.run_sync(_do)
        await conn.commit()


async def current_revision(engine: AsyncEngine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    def _do(connection: Any) -> str | None:
        return MigrationContext.configure(connection).get_current_revision()

    async with engine.connect() as conn:
        return await conn.run_sync(_do)


def head_revision() -> str | None:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def run_upgrade(settings: Settings) -> None:
    from uploadpools.store.engine import create_engine

    async def _main() -> None:
        engine = create_engine(settings)
        try:
            await upgrade(engine)
        finally:
            await engine.dispose()

    asyncio.run(_main())
