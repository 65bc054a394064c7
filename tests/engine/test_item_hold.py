"""An item is `dispatching` while a pending firing holds it: the firing is the only row
written for it when the head is taken, and the item is written once, when it settles."""

from __future__ import annotations

from datetime import UTC, timedelta

import pytest
from sqlalchemy import select, text
from test_ticker import NINE, active_pool

from apihelpers import upload_n
from uploadpools.models import Firing, QueueItem
from uploadpools.store.migrate import downgrade, upgrade

pytestmark = pytest.mark.asyncio
TEN = NINE + timedelta(hours=1)


async def _stored(app, item_id):  # type: ignore[no-untyped-def]
    """The item's row as stored: (status, dispatched_at)."""
    async with app.state.uploadpools.maker() as s:
        row = (
            await s.execute(
                select(QueueItem.__table__.c.status, QueueItem.__table__.c.dispatched_at).where(
                    QueueItem.__table__.c.id == item_id
                )
            )
        ).one()
    return row[0], row[1]


async def _get(client, tenant, pool_id, path=""):  # type: ignore[no-untyped-def]
    r = await client.get(f"/api/v1/pools/{pool_id}/videos{path}", headers=tenant.headers)
    assert r.status_code == 200, r.text
    return r.json()


async def _two_videos_first_held(client, tenant, engine, clock, video):  # type: ignore[no-untyped-def]
    """An active pool with two videos queued; the 09:00 firing holds the first."""
    pool, _ = await active_pool(client, tenant)
    a, b = await upload_n(client, tenant, pool["id"], video, 2)
    clock.set(NINE)
    await engine.ticker.tick()
    return pool, a, b


class TestTakingTheHead:
    async def test_the_firing_holds_the_item_and_the_item_row_is_written_at_settling(
        self, client, tenant, engine, clock, app, sample_mp4
    ):
        pool, _ = await active_pool(client, tenant)
        a, b = await upload_n(client, tenant, pool["id"], sample_mp4, 2)
        clock.set(NINE)
        assert (await engine.ticker.tick()).fired == 1
        # Not written by the firing: still stored as queued, with no dispatch time.
        assert await _stored(app, a) == ("queued", None)
        got = await _get(client, tenant, pool["id"], f"/{a}")
        assert (got["status"], got["dispatched_at"], got["position"]) == (
            "dispatching",
            "2026-03-03T09:00:00Z",
            None,
        )
        # Out of the queue: b is first, and the only one queued.
        queue = await _get(client, tenant, pool["id"], "?status=queued")
        assert [(i["id"], i["position"]) for i in queue["items"]] == [(b, 0)]
        held = await _get(client, tenant, pool["id"], "?status=dispatching")
        assert [i["id"] for i in held["items"]] == [a]
        view = (await client.get(f"/api/v1/pools/{pool['id']}", headers=tenant.headers)).json()
        assert view["queued_count"] == 1
        # Settling writes the item once: its final status and the firing's instant.
        clock.set(NINE + timedelta(seconds=30))
        await engine.dispatcher.run_until_idle()
        status, at = await _stored(app, a)
        assert (status, at.astimezone(UTC)) == ("dispatched", NINE)
        got = await _get(client, tenant, pool["id"], f"/{a}")
        assert (got["status"], got["dispatched_at"]) == ("dispatched", "2026-03-03T09:00:00Z")

    async def test_a_held_item_is_not_taken_again_by_the_next_slot(
        self, client, tenant, engine, clock, app, sample_mp4
    ):
        pool, _ = await active_pool(client, tenant, times=("09:00", "10:00"))
        a, b, c = await upload_n(client, tenant, pool["id"], sample_mp4, 3)
        clock.set(NINE)
        await engine.ticker.tick()
        clock.set(TEN)  # the 09:00 post has not settled (no dispatcher ran)
        await engine.ticker.tick()
        async with app.state.uploadpools.maker() as s:
            taken = (
                await s.scalars(
                    select(Firing.item_id)
                    .where(Firing.pool_id == pool["id"])
                    .order_by(Firing.scheduled_for)
                )
            ).all()
        assert taken == [a, b]
        queue = await _get(client, tenant, pool["id"], "?status=queued")
        assert [(i["id"], i["position"]) for i in queue["items"]] == [(c, 0)]

    async def test_post_next_now_skips_held_items_and_holds_its_own(
        self, client, tenant, engine, clock, app, sample_mp4
    ):
        pool, a, b = await _two_videos_first_held(client, tenant, engine, clock, sample_mp4)
        slot = pool["slots"][0]["id"]
        r = await client.post(
            f"/api/v1/pools/{pool['id']}/slots/{slot}/fire", headers=tenant.headers
        )
        assert r.status_code == 202, r.text
        assert r.json()["item_id"] == b
        assert await _stored(app, b) == ("queued", None)
        got = await _get(client, tenant, pool["id"], f"/{b}")
        assert got["status"] == "dispatching"
        assert (await _get(client, tenant, pool["id"], "?status=queued"))["items"] == []

    async def test_a_held_item_cannot_be_edited_moved_or_removed(
        self, client, tenant, engine, clock, app, sample_mp4
    ):
        pool, a, b = await _two_videos_first_held(client, tenant, engine, clock, sample_mp4)
        url = f"/api/v1/pools/{pool['id']}/videos/{a}"
        for change in ({"title": "new"}, {"position": 0}, {"position": 1}):
            r = await client.patch(url, json=change, headers=tenant.headers)
            assert r.status_code == 409, (change, r.text)
        r = await client.delete(url, headers=tenant.headers)
        assert r.status_code == 409, r.text
        assert await _stored(app, a) == ("queued", None)
        got = await _get(client, tenant, pool["id"], f"/{a}")
        assert (got["status"], got["title"], got["position"]) == ("dispatching", "v0", None)
        queue = await _get(client, tenant, pool["id"], "?status=queued")
        assert [(i["id"], i["position"]) for i in queue["items"]] == [(b, 0)]

    async def test_deleting_the_slot_of_a_held_item_skips_it_interrupted(
        self, client, tenant, engine, clock, app, sample_mp4
    ):
        """Deleting the firing would otherwise hand the item back to the queue, and a
        post that may have gone out could go out twice."""
        pool, acc = await active_pool(client, tenant, times=("09:00", "10:00"))
        a, b = await upload_n(client, tenant, pool["id"], sample_mp4, 2)
        clock.set(NINE)
        await engine.ticker.tick()
        slot = pool["slots"][0]["id"]
        r = await client.delete(f"/api/v1/pools/{pool['id']}/slots/{slot}", headers=tenant.headers)
        assert r.status_code == 204, r.text
        got = await _get(client, tenant, pool["id"], f"/{a}")
        assert (got["status"], got["skip_reason"]) == ("skipped", "interrupted")
        assert got["dispatched_at"] == "2026-03-03T09:00:00Z"
        queue = await _get(client, tenant, pool["id"], "?status=queued")
        assert [i["id"] for i in queue["items"]] == [b]


async def test_migration_0011_stores_dispatching_as_held_and_back(
    client, tenant, engine, clock, app, sample_mp4
):
    pool, _ = await active_pool(client, tenant)
    a, _b = await upload_n(client, tenant, pool["id"], sample_mp4, 2)
    clock.set(NINE)
    await engine.ticker.tick()
    db = app.state.uploadpools.engine
    await downgrade(db, "0010")
    status, at = await _stored(app, a)
    assert (status, at.astimezone(UTC)) == ("dispatching", NINE)
    await upgrade(db)
    assert await _stored(app, a) == ("queued", None)
    # An item stored as dispatching that no pending firing holds is left as it is.
    async with db.begin() as conn:
        await conn.execute(
            text("UPDATE firings SET outcome = 'skipped' WHERE item_id = :i"), {"i": a}
        )
        await conn.execute(
            text("UPDATE queue_items SET status = 'dispatching' WHERE id = :i"), {"i": a}
        )
    await downgrade(db, "0010")
    await upgrade(db)
    assert (await _stored(app, a))[0] == "dispatching"
    # Shown as it is stored, in the list and under the status filter alike.
    got = await _get(client, tenant, pool["id"], "?status=dispatching")
    assert [i["id"] for i in got["items"]] == [a]
