"""The (slot, local date) key is a partial index (`kind = 'scheduled'`): the ticker's
look-up of the occurrences already recorded says `kind = 'scheduled'` in its text, so a
prepared statement's generic plan probes that index instead of reading every firing."""

from __future__ import annotations

import pytest
from test_ticker import NINE, active_pool

from planhelpers import capture, generic_plan

pytestmark = pytest.mark.asyncio


async def test_the_recorded_occurrences_look_up_uses_the_key_in_a_generic_plan(
    client, tenant, app, engine, clock, database_url
):
    if not database_url.startswith("postgresql"):
        pytest.skip("PostgreSQL's plan cache")
    await active_pool(client, tenant)
    seen = capture(app)
    clock.set(NINE)
    assert (await engine.ticker.tick()).fired == 1
    ((sql, params),) = [
        (q, p)
        for q, p in seen
        if q.lstrip().startswith("SELECT firings.slot_id, firings.local_date")
    ]
    async with app.state.uploadpools.maker() as s:
        plan = await generic_plan(s, sql, params)
    assert "uq_firings_slot_local_date" in plan, plan
