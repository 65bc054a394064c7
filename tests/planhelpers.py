"""What PostgreSQL's generic plan of a captured statement is (a prepared statement run
often enough, or with `plan_cache_mode = force_generic_plan`): for the tests that a
partial index stays usable when its predicate is in the statement's text."""

from __future__ import annotations

from typing import Any

from sqlalchemy import event, text


def capture(app: Any) -> list[tuple[str, Any]]:
    """Every statement (and its parameters) the app runs from now on."""
    seen: list[tuple[str, Any]] = []

    @event.listens_for(app.state.uploadpools.engine.sync_engine, "before_cursor_execute")
    def _record(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        seen.append((statement, parameters))

    return seen


async def generic_plan(session: Any, sql: str, params: Any) -> str:
    """EXPLAIN of `sql`'s generic plan with these parameters, sequential scans priced out
    (a plan that can use an index does)."""
    args = ", ".join(
        str(p) if isinstance(p, int) else "'" + str(p).replace("'", "''") + "'" for p in params
    )
    await session.execute(text("SET LOCAL plan_cache_mode = force_generic_plan"))
    await session.execute(text("SET LOCAL enable_seqscan = off"))
    conn = await session.connection()
    await conn.exec_driver_sql(f"PREPARE generic AS {sql}")
    plan = "\n".join(r[0] for r in await conn.exec_driver_sql(f"EXPLAIN EXECUTE generic({args})"))
    await conn.exec_driver_sql("DEALLOCATE generic")
    return plan
