"""``/healthz`` (the process answers) and ``/readyz`` (it can do its job).

``/readyz`` checks, each with a short timeout:

* ``database``: a fresh connection (not a pooled one, which can outlive the database
  file or server it was opened on) runs ``SELECT 1``;
* ``migrations``: the schema is at the head revision this code expects;
* ``engine``: when this deployment runs an engine anywhere (this process runs one, or
  any engine has ever registered a heartbeat), at least one live engine process has
  beaten within ``STALE_AFTER_SECONDS``. An API-only deployment that never ran an
  engine skips the check.

Any failing check answers 503 with the same JSON body naming it, so a load balancer
takes the process out of rotation and an operator sees why.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import timedelta
from typing import Any

from fastapi import APIRouter
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import NullPool
from starlette.responses import JSONResponse

from uploadpools.config import Settings
from uploadpools.deps import AppState, StateDep
from uploadpools.engine.worker import STALE_AFTER_SECONDS
from uploadpools.models import EngineNode
from uploadpools.store.engine import create_engine
from uploadpools.store.migrate import head_revision

router = APIRouter()

CHECK_TIMEOUT_SECONDS = 3.0
_HEAD: list[str | None] = []


def _head() -> str | None:
    if not _HEAD:
        _HEAD.append(head_revision())
    return _HEAD[0]


def probe_engine(settings: Settings) -> AsyncEngine:
    """A connection-per-use engine for the checks (the app creates one and disposes it)."""
    return create_engine(settings, poolclass=NullPool)


async def _checks(state: AppState) -> dict[str, dict[str, Any]]:
    engine = state.probe_engine or state.engine
    checks: dict[str, dict[str, Any]] = {}
    async with contextlib.AsyncExitStack() as stack:
        try:
            async with asyncio.timeout(CHECK_TIMEOUT_SECONDS):
                conn = await stack.enter_async_context(engine.connect())
                await conn.execute(text("SELECT 1"))
        except Exception as exc:
            checks["database"] = {"ok": False, "error": _describe(exc)}
            return checks
        checks["database"] = {"ok": True}

        head = _head()
        try:
            # Read directly: alembic's MigrationContext would log two INFO lines per probe.
            async with asyncio.timeout(CHECK_TIMEOUT_SECONDS):
                current = await conn.scalar(text("SELECT version_num FROM alembic_version"))
        except Exception as exc:
            checks["migrations"] = {"ok": False, "head": head, "error": _describe(exc)}
            return checks
        checks["migrations"] = {"ok": current == head, "current": current, "head": head}
        if current != head:
            checks["migrations"]["error"] = "the schema is not current; run `uploadpools migrate`"
            return checks

        fresh_after = state.clock.now() - timedelta(seconds=STALE_AFTER_SECONDS)
        try:
            async with asyncio.timeout(CHECK_TIMEOUT_SECONDS):
                known = await conn.scalar(select(func.count()).select_from(EngineNode))
                live = await conn.scalar(
                    select(func.count())
                    .select_from(EngineNode)
                    .where(EngineNode.stopped_at.is_(None), EngineNode.heartbeat_at >= fresh_after)
                )
        except Exception as exc:
            checks["engine"] = {"ok": False, "error": _describe(exc)}
            return checks
    if state.engine_runner is None and not known:
        checks["engine"] = {"ok": True, "skipped": "no engine has run against this database"}
    elif live:
        checks["engine"] = {"ok": True, "live_nodes": live}
    else:
        checks["engine"] = {
            "ok": False,
            "live_nodes": 0,
            "error": f"no engine process has sent a heartbeat in {STALE_AFTER_SECONDS:g} s",
        }
    return checks


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return f"timed out after {CHECK_TIMEOUT_SECONDS:g} s"
    # The driver's own first line (SQLAlchemy's wrapper adds the SQL and a link).
    cause = getattr(exc, "orig", None) or exc
    first = (str(cause).strip().splitlines() or [""])[0][:200]
    return f"{type(cause).__name__}: {first}" if first else type(cause).__name__


@router.get("/healthz", include_in_schema=False)
async def healthz() -> JSONResponse:
    return JSONResponse({"status": "ok"})


@router.get("/readyz", include_in_schema=False)
async def readyz(state: StateDep) -> JSONResponse:
    checks = await _checks(state)
    ok = all(c["ok"] for c in checks.values())
    failed = [name for name, c in checks.items() if not c["ok"]]
    body = {"status": "ready" if ok else "unavailable", "failed": failed, "checks": checks}
    return JSONResponse(body, status_code=200 if ok else 503)
