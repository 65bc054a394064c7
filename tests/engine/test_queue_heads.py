"""The ticker reads only the front of each queue: the first waiting item whose video is
ready goes out (items still waiting for their video keep their place), and whether a
queue is running low is judged by counting it only as far as the firings coming within
the horizon. Queues here are deeper than the ticker's look-ahead (the items a slot needs
plus 4)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select, update
from test_ticker import NINE, active_pool, firings, notes

from apihelpers import upload_n
from uploadpools.models import Firing, Media, QueueItem

pytestmark = pytest.mark.asyncio
FOUR_A_DAY = ("09:00", "12:00", "15:00", "18:00")  # 8 firings within the next 48 h


async def _media_state(app, item_ids, state):  # type: ignore[no-untyped-def]
    """As if these videos were still being fetched (`pending`)."""
    async with app.state.uploadpools.maker() as s:
        media = select(QueueItem.media_id).where(QueueItem.id.in_(item_ids))
        await s.execute(update(Media).where(Media.id.in_(media)).values(state=state))
        await s.commit()


async def _queued(client, tenant, pool_id):  # type: ignore[no-untyped-def]
    r = await client.get(f"/api/v1/pools/{pool_id}/videos?status=queued", headers=tenant.headers)
    return [i["id"] for i in r.json()["items"]]


class TestTheHead:
    async def test_an_item_waiting_for_its_video_keeps_its_place(
        self, client, tenant, engine, clock, app, sample_mp4
    ):
        pool, _ = await active_pool(client, tenant)
        a, b, c = await upload_n(client, tenant, pool["id"], sample_mp4, 3)
        await _media_state(app, [a], "pending")
        clock.set(NINE)
        assert (await engine.ticker.tick()).fired == 1
        assert [f.item_id for f in await firings(app, pool["id"])] == [b]
        assert await _queued(client, tenant, pool["id"]) == [a, c]

    async def test_a_ready_item_behind_the_look_ahead_is_found(
        self, client, tenant, engine, clock, app, sample_mp4
    ):
        pool, _ = await active_pool(client, tenant)
        ids = await upload_n(client, tenant, pool["id"], sample_mp4, 8)
        await _media_state(app, ids[:6], "pending")
        clock.set(NINE)
        assert (await engine.ticker.tick()).fired == 1
        assert [f.item_id for f in await firings(app, pool["id"])] == [ids[6]]


class TestRunningLow:
    @pytest.mark.parametrize(("queued", "told"), [(8, True), (10, False)])
    async def test_a_deep_queue_is_judged_against_the_coming_firings(
        self, client, tenant, engine, clock, app, sample_mp4, queued, told
    ):
        pool, _ = await active_pool(client, tenant, times=FOUR_A_DAY)
        await upload_n(client, tenant, pool["id"], sample_mp4, queued)
        clock.set(NINE)
        assert (await engine.ticker.tick()).fired == 1
        low = [n for n in await notes(client, tenant) if n["kind"] == "pool.running_low"]
        if told:
            assert len(low) == 1
            assert "7 video(s) left for 8 slot(s) in the next 48 h" in low[0]["message"]
        else:
            assert low == []

    async def test_held_items_at_the_front_are_not_counted_as_waiting(
        self, client, tenant, engine, clock, app, sample_mp4
    ):
        """Two posts still going out hold the first two items; the nine behind them are
        enough for the 8 coming firings, so the queue is not running low."""
        pool, _ = await active_pool(client, tenant, times=FOUR_A_DAY)
        ids = await upload_n(client, tenant, pool["id"], sample_mp4, 11)
        async with app.state.uploadpools.maker() as s:  # held by two pending firings
            for i, item_id in enumerate(ids[:2]):
                s.add(
                    Firing(
                        pool_id=pool["id"],
                        slot_id=pool["slots"][0]["id"],
                        kind="manual",
                        local_date=(NINE - timedelta(days=1)).date(),
                        scheduled_for=NINE - timedelta(hours=1 + i),
                        fired_at=NINE - timedelta(hours=1 + i),
                        outcome="pending",
                        item_id=item_id,
                    )
                )
            await s.commit()
        clock.set(NINE)
        assert (await engine.ticker.tick()).fired == 1
        taken = [f.item_id for f in await firings(app, pool["id"]) if f.kind == "scheduled"]
        assert [t for t in taken if t is not None] == [ids[2]]  # the others: missed, earlier
        # 8 waiting after the firing, 8 coming: not low.
        assert [n for n in await notes(client, tenant) if n["kind"] == "pool.running_low"] == []
