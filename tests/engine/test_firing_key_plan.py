"""The (slot, local date) key is a partial index (`kind = 'scheduled'`): the ticker's
look-up of the occurrences already recorded says `kind = 'scheduled'` in its text, so a
prepared statement's generic plan probes that index instead of reading every firing."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import event, text
from test_ticker import NINE, active_pool

pytestmark = pytest.mark.asyncio


async def test_the_recorded_occurrences_look_up_uses_the_key_in_a_generic_plan(
    client, tenant, app, engine, clock, database_url
):
    if not database_url.startswith("postgresql"):
        pytest.skip("PostgreSQL's plan cache")
    await active_pool(client, tenant)
    seen: list[tuple[str, Any]] = []

    @event.listens_for(app.state.uploadpools.engine.sync_engine, "before_cursor_execute")
    def _record(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        seen.append((statement, parameters))

    clock.set(NINE)
    assert (await engine.ticker.tick()).fired == 1
    ((sql, params),) = [
        (q, p)
        for q, p in seen
        if q.lstrip().startswith("SELECT firings.slot_id, firings.local_date")
    ]
    args = ", ".join("'" + str(p).replace("'", "''") + "'" for p in params)
    async with app.state.uploadpools.maker() as s:
        await s.execute(text("SET LOCAL plan_cache_mode = force_generic_plan"))
        await s.execute(text("SET LOCAL enable_seqscan = off"))
        conn = await s.connection()
        await conn.exec_driver_sql(f"PREPARE recorded AS {sql}")
        plan = "\n".join(
            r[0] for r in await conn.exec_driver_sql(f"EXPLAIN EXECUTE recorded({args})")
        )
        await conn.exec_driver_sql("DEALLOCATE recorded")
    assert "uq_firings_slot_local_date" in plan, plan
