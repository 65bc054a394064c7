"""The queue index holds only queued rows on PostgreSQL (migration 0009): every query of
the queue must say `status = 'queued'` in its text, or a prepared statement's generic
plan cannot use the index and reads the pool's whole history instead."""

from __future__ import annotations

import re

import pytest

from apihelpers import make_account, make_pool, upload_n
from media_samples import make_mp4
from planhelpers import capture, generic_plan
from uploadpools.engine.firing import head_item

pytestmark = pytest.mark.asyncio

# `queue_items.status = $2` / `= ?`: the status as a bound parameter.
BOUND_STATUS = re.compile(r"queue_items\.status\s*(=|IN)\s*(\$\d+|\?|\()", re.IGNORECASE)


async def _pool_with_videos(client, tenant, tmp_path, n: int):  # type: ignore[no-untyped-def]
    acc = await make_account(client, tenant)
    pool = await make_pool(client, tenant, acc)
    await upload_n(client, tenant, pool["id"], make_mp4(tmp_path / "v.mp4"), n)
    return pool


async def test_queue_queries_state_the_queued_status_in_their_text(
    client, tenant, app, engine, tmp_path
):
    pool = await _pool_with_videos(client, tenant, tmp_path, 3)
    seen = capture(app)
    pid = pool["id"]
    h = tenant.headers
    items = (await client.get(f"/api/v1/pools/{pid}/videos", headers=h)).json()["items"]
    assert len(items) == 3
    r = await client.patch(
        f"/api/v1/pools/{pid}/videos/{items[2]['id']}", json={"position": 0}, headers=h
    )
    assert r.status_code == 200, r.text
    assert (await client.get(f"/api/v1/pools/{pid}/schedule", headers=h)).status_code == 200
    slot_id = pool["slots"][0]["id"]
    r = await client.post(f"/api/v1/pools/{pid}/slots/{slot_id}/fire", headers=h)
    assert r.status_code in (200, 201, 202), r.text
    await engine.ticker.tick()
    assert (await client.get(f"/api/v1/pools/{pid}", headers=h)).status_code == 200
    queue_reads = [s for s, _ in seen if "queue_items.status" in s and "INSERT" not in s[:12]]
    assert queue_reads, "the scenario read the queue"
    bound = [s for s in queue_reads if BOUND_STATUS.search(s) and "'queued'" not in s]
    assert bound == []


async def test_the_queue_head_uses_the_queue_index_in_a_generic_plan(
    client, tenant, app, database_url, tmp_path
):
    if not database_url.startswith("postgresql"):
        pytest.skip("PostgreSQL's plan cache")
    pool = await _pool_with_videos(client, tenant, tmp_path, 1)
    seen = capture(app)
    async with app.state.uploadpools.maker() as s:
        assert await head_item(s, pool["id"]) is not None
        ((sql, params),) = [(q, p) for q, p in seen if "queue_items" in q]
        plan = await generic_plan(s, sql, params)
    assert "ix_queue_items_pool_status_seq" in plan, plan
