"""Alembic driven from code, so `uploadpools migrate` works from an installed package.

Alembic is imported by the functions that use it, not with this module: the server
imports `head_revision` (for /readyz), and alembic with its scripts loaded would stay in
the server's memory for good (~10 MB).
"""

from __future__ import annotations

import ast
import asyncio
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy.ext.asyncio import AsyncEngine

from uploadpools.config import Settings

if TYPE_CHECKING:
    from alembic.config import Config

_VERSIONS = Path(__file__).resolve().parent.parent / "migrations" / "versions"


def alembic_config(url: str | None = None) -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", "uploadpools:migrations")
    cfg.attributes["url"] = url
    return cfg


async def upgrade(engine: AsyncEngine, revision: str = "head") -> None:
    from alembic import command

    await _command(engine, command.upgrade, revision)


async def downgrade(engine: AsyncEngine, revision: str) -> None:
    from alembic import command

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
    """The head of the migration scripts, read from their `revision`/`down_revision`.

    The same answer as alembic's `ScriptDirectory.get_current_head()` (a test compares
    them) without loading alembic and every script into the process.
    """
    revisions: set[str] = set()
    parents: set[str] = set()
    for path in _VERSIONS.glob("*.py"):
        values = _module_literals(path, ("revision", "down_revision"))
        if not isinstance(values.get("revision"), str):
            continue
        revisions.add(values["revision"])
        down = values.get("down_revision")
        if isinstance(down, str):
            parents.add(down)
        elif isinstance(down, tuple | list):
            parents.update(down)
    heads = revisions - parents
    if len(heads) > 1:
        raise RuntimeError(f"the migration scripts have several heads: {sorted(heads)}")
    return next(iter(heads), None)


def _module_literals(path: Path, names: tuple[str, ...]) -> dict[str, Any]:
    """Top-level `name = <literal>` (or `name: T = <literal>`) assignments of a script."""
    found: dict[str, Any] = {}
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target, value = node.targets[0], node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            target, value = node.target, node.value
        else:
            continue
        if isinstance(target, ast.Name) and target.id in names:
            found[target.id] = ast.literal_eval(value)
    return found


def run_upgrade(settings: Settings) -> None:
    from uploadpools.store.engine import create_engine

    async def _main() -> None:
        engine = create_engine(settings)
        try:
            await upgrade(engine)
        finally:
            await engine.dispose()

    asyncio.run(_main())
