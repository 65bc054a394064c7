"""Firings and deliveries reference their slot, item and account without foreign keys
(migration 0008), and firings their pool and deliveries their firing without one either
(migration 0009): deleting one of those keeps the links right, on both databases."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from apihelpers import make_account, make_pool
from media_samples import make_mp4
from uploadpools.models import Delivery, Firing

pytestmark = pytest.mark.asyncio


async def _skipped_item(client, tenant, tmp_path):  # type: ignore[no-untyped-def]
    """A pool whose slot posts to a disabled account, fired now: the item ends skipped,
    with its firing and one skipped delivery."""
    acc = await make_account(client, tenant)
    pool = await make_pool(client, tenant, acc)
    video = make_mp4(tmp_path / "v.mp4")
    with video.open("rb") as f:
        r = await client.post(
            f"/api/v1/pools/{pool['id']}/videos",
            files={"file": ("v.mp4", f, "video/mp4")},
            headers=tenant.headers,
        )
    assert r.status_code == 201, r.text
    item_id = r.json()["id"]
    r = await client.patch(
        f"/api/v1/accounts/{acc}", json={"status": "disabled"}, headers=tenant.headers
    )
    assert r.status_code == 200, r.text
    slot_id = pool["slots"][0]["id"]
    r = await client.post(
        f"/api/v1/pools/{pool['id']}/slots/{slot_id}/fire", headers=tenant.headers
    )
    assert r.status_code in (200, 201, 202), r.text
    r = await client.get(f"/api/v1/pools/{pool['id']}/videos/{item_id}", headers=tenant.headers)
    assert r.json()["status"] == "skipped", r.text
    return pool, slot_id, acc, item_id


async def _rows(app, model, *where):  # type: ignore[no-untyped-def]
    async with app.state.uploadpools.maker() as s:
        return (await s.scalars(select(model).where(*where))).all()


async def test_deleting_a_skipped_item_removes_its_deliveries_and_keeps_the_firing(
    client, tenant, app, tmp_path
):
    pool, _slot, _acc, item_id = await _skipped_item(client, tenant, tmp_path)
    (firing,) = await _rows(app, Firing, Firing.item_id == item_id)
    assert len(await _rows(app, Delivery, Delivery.item_id == item_id)) == 1
    r = await client.delete(f"/api/v1/pools/{pool['id']}/videos/{item_id}", headers=tenant.headers)
    assert r.status_code == 204, r.text
    assert await _rows(app, Delivery, Delivery.item_id == item_id) == []
    (kept,) = await _rows(app, Firing, Firing.id == firing.id)
    assert kept.item_id is None
    r = await client.get(f"/api/v1/pools/{pool['id']}/firings", headers=tenant.headers)
    assert r.status_code == 200, r.text
    assert [f["id"] for f in r.json()["items"]] == [firing.id]


async def test_deleting_a_slot_removes_its_firings_and_their_deliveries(
    client, tenant, app, tmp_path
):
    pool, slot_id, _acc, item_id = await _skipped_item(client, tenant, tmp_path)
    r = await client.delete(f"/api/v1/pools/{pool['id']}/slots/{slot_id}", headers=tenant.headers)
    assert r.status_code == 204, r.text
    assert await _rows(app, Firing, Firing.slot_id == slot_id) == []
    assert await _rows(app, Delivery, Delivery.item_id == item_id) == []


async def test_deleting_an_account_keeps_its_deliveries_without_it(client, tenant, app, tmp_path):
    _pool, _slot, acc, item_id = await _skipped_item(client, tenant, tmp_path)
    r = await client.delete(
        f"/api/v1/accounts/{acc}", params={"force": "true"}, headers=tenant.headers
    )
    assert r.status_code == 204, r.text
    (delivery,) = await _rows(app, Delivery, Delivery.item_id == item_id)
    assert delivery.account_id is None
    async with app.state.uploadpools.maker() as s:
        assert await s.scalar(select(func.count()).where(Delivery.account_id == acc)) == 0


async def _counts(app) -> dict[str, int]:  # type: ignore[no-untyped-def]
    from uploadpools.models import Account, Media, Pool, QueueItem, Slot

    async with app.state.uploadpools.maker() as s:
        return {
            m.__tablename__: await s.scalar(select(func.count()).select_from(m))
            for m in (Account, Delivery, Firing, Media, Pool, QueueItem, Slot)
        }


async def test_migrations_down_and_up_again_keep_every_row(client, tenant, app, tmp_path):
    """SQLite rebuilds a table to change its constraints; with foreign keys on, dropping
    the old table would run its ON DELETE actions and take the rows that point at it."""
    from uploadpools.store.migrate import downgrade, head_revision, upgrade

    await _skipped_item(client, tenant, tmp_path)
    before = await _counts(app)
    assert before["deliveries"] == before["firings"] == before["queue_items"] == 1
    engine = app.state.uploadpools.engine
    await downgrade(engine, "0006")
    await upgrade(engine)
    assert await _counts(app) == before
    from uploadpools.store.migrate import current_revision

    assert await current_revision(engine) == head_revision()


async def test_an_items_deliveries_are_found_through_its_firings(client, tenant, app, tmp_path):
    """`deliveries.item_id` is not indexed (migration 0009): reading and deleting an item
    reach its deliveries through its firings, every one of them, and only its own."""
    pool, slot_id, _acc, item_id = await _skipped_item(client, tenant, tmp_path)
    h = tenant.headers
    video = make_mp4(tmp_path / "w.mp4")
    with video.open("rb") as f:
        r = await client.post(
            f"/api/v1/pools/{pool['id']}/videos",
            files={"file": ("w.mp4", f, "video/mp4")},
            headers=h,
        )
    other = r.json()["id"]
    # Requeued at the front and fired again: a second firing, a second delivery.
    r = await client.patch(
        f"/api/v1/pools/{pool['id']}/videos/{item_id}",
        json={"status": "queued", "position": 0},
        headers=h,
    )
    assert r.status_code == 200, r.text
    r = await client.post(f"/api/v1/pools/{pool['id']}/slots/{slot_id}/fire", headers=h)
    assert r.status_code in (200, 201, 202), r.text
    r = await client.post(f"/api/v1/pools/{pool['id']}/slots/{slot_id}/fire", headers=h)
    assert r.status_code in (200, 201, 202), r.text
    assert len(await _rows(app, Firing, Firing.item_id == item_id)) == 2
    mine = await _rows(app, Delivery, Delivery.item_id == item_id)
    assert len(mine) == 2
    body = (await client.get(f"/api/v1/pools/{pool['id']}/videos/{item_id}", headers=h)).json()
    assert len(body["deliveries"]) == 2, body
    assert {d["status"] for d in body["deliveries"]} == {"skipped"}
    assert len(await _rows(app, Delivery, Delivery.item_id == other)) == 1
    r = await client.delete(f"/api/v1/pools/{pool['id']}/videos/{item_id}", headers=h)
    assert r.status_code == 204, r.text
    assert await _rows(app, Delivery, Delivery.item_id == item_id) == []
    assert len(await _rows(app, Delivery, Delivery.item_id == other)) == 1


async def test_deleting_a_pool_removes_its_firings_and_their_deliveries(
    client, tenant, app, tmp_path
):
    """Firings and deliveries have no foreign key to cascade from (migration 0009)."""
    pool, _slot, _acc, _item = await _skipped_item(client, tenant, tmp_path)
    other, _s, _a, other_item = await _skipped_item(client, tenant, tmp_path)
    r = await client.delete(
        f"/api/v1/pools/{pool['id']}", params={"force": "true"}, headers=tenant.headers
    )
    assert r.status_code == 204, r.text
    assert await _rows(app, Firing, Firing.pool_id == pool["id"]) == []
    (kept,) = await _rows(app, Firing, Firing.pool_id == other["id"])
    assert len(await _rows(app, Delivery, Delivery.firing_id == kept.id)) == 1
    async with app.state.uploadpools.maker() as s:
        orphans = await s.scalar(
            select(func.count())
            .select_from(Delivery)
            .where(Delivery.firing_id.not_in(select(Firing.id)))
        )
    assert orphans == 0
    assert len(await _rows(app, Delivery, Delivery.item_id == other_item)) == 1
