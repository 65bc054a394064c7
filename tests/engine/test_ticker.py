"""The ticker: due slots become firings exactly once, FIFO, pause, downtime, empty queue."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from apihelpers import make_account, make_pool, upload_n
from uploadpools.engine.ticker import Ticker
from uploadpools.models import EngineNode, Firing
from uploadpools.models.engine_node import STALE_AFTER_SECONDS

pytestmark = pytest.mark.asyncio
NINE = datetime(2026, 3, 3, 9, 0, tzinfo=UTC)  # the day after START, in UTC


async def active_pool(client, tenant, *, slots=None, times=("09:00",), tz="UTC", **over):  # type: ignore[no-untyped-def]
    """An active pool posting to a new folder account; its slots at `times` unless given."""
    acc = await make_account(client, tenant)
    pool = await make_pool(
        client,
        tenant,
        acc,
        timezone=tz,
        state="active",
        slots=slots or [{"time": t, "account_ids": [acc]} for t in times],
        **over,
    )
    return pool, acc


async def pools_at_nine(client, tenant, video, n, *, slots=1, videos=1, name="p"):  # type: ignore[no-untyped-def]
    """n active UTC pools, each with `slots` slots at 09:00 (an account each) and `videos`
    uploads queued; [(pool, item ids)]."""
    out = []
    for i in range(n):
        accounts = [await make_account(client, tenant, f"{name}{i}-{k}") for k in range(slots)]
        pool = await make_pool(
            client,
            tenant,
            accounts[0],
            name=f"{name}{i}",
            timezone="UTC",
            state="active",
            slots=[{"time": "09:00", "account_ids": [a]} for a in accounts],
        )
        out.append((pool, await upload_n(client, tenant, pool["id"], video, videos)))
    return out


async def engine_node(maker, name, now, *, roles, age_s=0.0, stopped=False):  # type: ignore[no-untyped-def]
    """An `engine_nodes` row: a process with these roles, its last heartbeat `age_s` ago."""
    async with maker() as s, s.begin():
        s.add(
            EngineNode(
                id=name,
                hostname="h",
                pid=1,
                role="worker",
                roles=roles,
                started_at=now - timedelta(hours=1),
                heartbeat_at=now - timedelta(seconds=age_s),
                stopped_at=now if stopped else None,
            )
        )


async def firings(app, pool_id):  # type: ignore[no-untyped-def]
    async with app.state.uploadpools.maker() as s:
        return list(
            (
                await s.scalars(
                    select(Firing)
                    .where(Firing.pool_id == pool_id)
                    .order_by(Firing.scheduled_for, Firing.id)
                )
            ).all()
        )


async def item(client, tenant, pool_id, item_id):  # type: ignore[no-untyped-def]
    return (
        await client.get(f"/api/v1/pools/{pool_id}/videos/{item_id}", headers=tenant.headers)
    ).json()


async def notes(client, tenant):  # type: ignore[no-untyped-def]
    return (await client.get("/api/v1/notifications", headers=tenant.headers)).json()["items"]


class TestFiring:
    async def test_fires_at_its_instant_not_before(
        self, client, tenant, engine, clock, app, sample_mp4
    ):
        pool, _ = await active_pool(client, tenant)
        a, b = await upload_n(client, tenant, pool["id"], sample_mp4, 2)
        clock.set(NINE - timedelta(seconds=1))
        assert (await engine.ticker.tick()).fired == 0
        clock.set(NINE)
        result = await engine.ticker.tick()
        assert result.fired == 1
        (f,) = await firings(app, pool["id"])
        assert (f.scheduled_for, f.fired_at, f.item_id, f.kind) == (NINE, NINE, a, "scheduled")
        got = await item(client, tenant, pool["id"], a)
        assert got["status"] == "dispatching"
        assert [d["status"] for d in got["deliveries"]] == ["pending"]
        pool_now = (await client.get(f"/api/v1/pools/{pool['id']}", headers=tenant.headers)).json()
        assert pool_now["next_fire_at"] == "2026-03-04T09:00:00Z"
        assert pool_now["queued_count"] == 1
        assert (await engine.ticker.tick()).fired == 0  # nothing due twice

    async def test_delivery_posts_and_item_is_dispatched(
        self, client, tenant, engine, clock, app, sample_mp4, settings
    ):
        pool, acc = await active_pool(client, tenant)
        (a,) = await upload_n(client, tenant, pool["id"], sample_mp4, 1)
        clock.set(NINE)
        await engine.run()
        got = await item(client, tenant, pool["id"], a)
        assert got["status"] == "dispatched"
        (d,) = got["deliveries"]
        assert (d["status"], d["account_id"], d["attempts"]) == ("posted", acc, 1)
        files = sorted(p.name for p in (settings.data_dir / "folders" / "out").iterdir())
        assert len(files) == 2 and files[0].endswith(".json") ^ files[1].endswith(".json")
        (f,) = await firings(app, pool["id"])
        assert f.outcome == "dispatched"
        usage = (await client.get("/api/v1/usage", headers=tenant.headers)).json()
        assert usage["used"] == 1

    async def test_two_slots_at_one_instant_take_two_items_in_slot_order(
        self, client, tenant, engine, clock, app, sample_mp4
    ):
        a1 = await make_account(client, tenant, "first")
        a2 = await make_account(client, tenant, "second")
        pool = await make_pool(
            client,
            tenant,
            a1,
            timezone="UTC",
            state="active",
            slots=[{"time": "09:00", "account_ids": [a1]}, {"time": "09:00", "account_ids": [a2]}],
        )
        x, y, z = await upload_n(client, tenant, pool["id"], sample_mp4, 3)
        clock.set(NINE)
        await engine.ticker.tick()
        fs = await firings(app, pool["id"])
        by_slot = {f.slot_id: f.item_id for f in fs}
        assert by_slot == {pool["slots"][0]["id"]: x, pool["slots"][1]["id"]: y}

    async def test_concurrent_tickers_fire_once(
        self, client, tenant, clock, app, sample_mp4, settings
    ):
        pool, _ = await active_pool(client, tenant)
        await upload_n(client, tenant, pool["id"], sample_mp4, 3)
        clock.set(NINE)
        st = app.state.uploadpools
        tickers = [Ticker(st.maker, settings, clock) for _ in range(4)]
        results = await asyncio.gather(*(t.tick() for t in tickers))
        assert sum(r.fired for r in results) == 1
        assert len(await firings(app, pool["id"])) == 1

    async def test_batches_in_parallel_lanes_fire_each_slot_once_in_queue_order(
        self, client, tenant, clock, app, sample_mp4, settings
    ):
        """Small batches, several at once (PostgreSQL runs `ticker_concurrency` of them):
        every pool is taken by one batch, its two slots take its two items in slot order."""
        pools = await pools_at_nine(client, tenant, sample_mp4, 7, slots=2, videos=2)
        clock.set(NINE)
        tuned = settings.model_copy(update={"engine_batch_size": 2, "ticker_concurrency": 3})
        result = await Ticker(app.state.uploadpools.maker, tuned, clock).tick()
        assert result.fired == 14
        for pool, (x, y) in pools:
            fs = await firings(app, pool["id"])
            assert {f.slot_id: f.item_id for f in fs} == {
                pool["slots"][0]["id"]: x,
                pool["slots"][1]["id"]: y,
            }

    async def test_lanes_two_while_alone_one_while_other_tickers_live(self, app, clock, settings):
        """PostgreSQL: a second lane only while no other live ticker process overlaps this
        one's batches; a stopped, silent (three beats behind the newest heartbeat) or
        non-ticker node does not count; the setting wins. SQLite: always one."""
        maker = app.state.uploadpools.maker
        auto = settings.model_copy(update={"ticker_concurrency": None})
        ticker = Ticker(maker, auto, clock)
        now = clock.now()
        alone = 1 if ticker._dialect == "sqlite" else 2

        def node(name: str, **kw):  # type: ignore[no-untyped-def]
            return engine_node(maker, name, now, **kw)

        assert await ticker.lanes() == alone
        await node("h:1", roles="ticker,dispatcher")  # this process's own row
        assert await ticker.lanes() == alone
        await node("h:2", roles="dispatcher,fetcher")
        await node("h:3", roles="ticker", stopped=True)
        await node("h:4", roles="ticker", age_s=STALE_AFTER_SECONDS + 1)
        assert await ticker.lanes() == alone
        await node("h:5", roles="ticker", age_s=STALE_AFTER_SECONDS - 1)
        assert await ticker.lanes() == 1
        fixed = settings.model_copy(update={"ticker_concurrency": 3})
        assert await Ticker(maker, fixed, clock).lanes() == (3 if alone == 2 else 1)

    async def test_moving_a_fired_slot_later_the_same_day_does_not_fire_again(
        self, client, tenant, engine, clock, app, sample_mp4
    ):
        pool, _ = await active_pool(client, tenant)
        await upload_n(client, tenant, pool["id"], sample_mp4, 3)
        clock.set(NINE)
        await engine.ticker.tick()
        slot_id = pool["slots"][0]["id"]
        r = await client.patch(
            f"/api/v1/pools/{pool['id']}/slots/{slot_id}",
            json={"time": "18:00"},
            headers=tenant.headers,
        )
        assert r.json()["next_fire_at"] == "2026-03-03T18:00:00Z"
        clock.set(NINE.replace(hour=18))
        assert (await engine.ticker.tick()).fired == 0
        assert len(await firings(app, pool["id"])) == 1
        clock.set(NINE.replace(hour=18) + timedelta(days=1))
        assert (await engine.ticker.tick()).fired == 1

    async def test_dst_gap_slot_fires_once_at_the_gap_end(
        self, client, tenant, engine, clock, app, sample_mp4
    ):
        clock.set(datetime(2026, 3, 7, 12, tzinfo=UTC))
        pool, _ = await active_pool(client, tenant, tz="America/New_York", slots=None)
        slot_id = pool["slots"][0]["id"]
        await client.patch(
            f"/api/v1/pools/{pool['id']}/slots/{slot_id}",
            json={"time": "02:30"},
            headers=tenant.headers,
        )
        await upload_n(client, tenant, pool["id"], sample_mp4, 2)
        for hour in range(0, 24):
            clock.set(datetime(2026, 3, 8, hour, tzinfo=UTC))
            await engine.ticker.tick()
        fs = await firings(app, pool["id"])
        assert [(f.local_date.isoformat(), f.scheduled_for) for f in fs] == [
            ("2026-03-08", datetime(2026, 3, 8, 7, 0, tzinfo=UTC))
        ]


class TestEmptyQueue:
    async def test_empty_firing_recorded_and_told_once_per_spell(
        self, client, tenant, engine, clock, app, sample_mp4
    ):
        pool, _ = await active_pool(client, tenant)
        for day in range(3):
            clock.set(NINE + timedelta(days=day))
            await engine.ticker.tick()
        fs = await firings(app, pool["id"])
        assert [f.outcome for f in fs] == ["empty", "empty", "empty"]
        assert [n["kind"] for n in await notes(client, tenant)] == ["pool.empty"]
        await upload_n(client, tenant, pool["id"], sample_mp4, 1)
        for day in range(3, 5):
            clock.set(NINE + timedelta(days=day))
            await engine.ticker.tick()
        kinds = [n["kind"] for n in await notes(client, tenant)]
        assert kinds.count("pool.empty") == 2

    async def test_running_low_told_once(self, client, tenant, engine, clock, app, sample_mp4):
        pool, _ = await active_pool(client, tenant)
        await upload_n(client, tenant, pool["id"], sample_mp4, 3)
        for day in range(2):
            clock.set(NINE + timedelta(days=day))
            await engine.ticker.tick()
        kinds = [n["kind"] for n in await notes(client, tenant)]
        assert kinds.count("pool.running_low") == 1


class TestPause:
    async def test_paused_pool_fires_nothing_and_keeps_queue(
        self, client, tenant, engine, clock, app, sample_mp4
    ):
        pool, _ = await active_pool(client, tenant)
        ids = await upload_n(client, tenant, pool["id"], sample_mp4, 2)
        await client.patch(
            f"/api/v1/pools/{pool['id']}", json={"state": "paused"}, headers=tenant.headers
        )
        for day in range(3):
            clock.set(NINE + timedelta(days=day))
            await engine.ticker.tick()
        assert await firings(app, pool["id"]) == []
        r = await client.get(
            f"/api/v1/pools/{pool['id']}/videos",
            params={"status": "queued"},
            headers=tenant.headers,
        )
        assert [i["id"] for i in r.json()["items"]] == ids

    async def test_resume_fires_from_next_occurrence_without_catch_up(
        self, client, tenant, engine, clock, app, sample_mp4
    ):
        pool, _ = await active_pool(client, tenant)
        await upload_n(client, tenant, pool["id"], sample_mp4, 2)
        await client.patch(
            f"/api/v1/pools/{pool['id']}", json={"state": "paused"}, headers=tenant.headers
        )
        clock.set(NINE + timedelta(days=2, hours=1))
        await client.patch(
            f"/api/v1/pools/{pool['id']}", json={"state": "active"}, headers=tenant.headers
        )
        await engine.ticker.tick()
        assert await firings(app, pool["id"]) == []
        clock.set(NINE + timedelta(days=3))
        await engine.ticker.tick()
        fs = await firings(app, pool["id"])
        assert [f.scheduled_for for f in fs] == [NINE + timedelta(days=3)]


class TestDowntime:
    async def test_short_downtime_fires_late_within_grace(
        self, client, tenant, engine, clock, app, sample_mp4
    ):
        pool, _ = await active_pool(client, tenant)
        (a,) = await upload_n(client, tenant, pool["id"], sample_mp4, 1)
        clock.set(NINE + timedelta(minutes=14, seconds=59))
        await engine.ticker.tick()
        (f,) = await firings(app, pool["id"])
        assert (f.outcome, f.scheduled_for, f.fired_at, f.item_id) == (
            "pending",
            NINE,
            clock.now(),
            a,
        )

    async def test_long_downtime_is_one_missed_record_and_consumes_nothing(
        self, client, tenant, engine, clock, app, sample_mp4
    ):
        pool, _ = await active_pool(client, tenant)
        ids = await upload_n(client, tenant, pool["id"], sample_mp4, 2)
        clock.set(NINE + timedelta(days=2, hours=3))  # missed the 3rd, 4th and 5th at 09:00
        result = await engine.ticker.tick()
        assert (result.fired, result.missed) == (0, 1)
        (f,) = await firings(app, pool["id"])
        assert f.outcome == "missed"
        assert (f.local_date.isoformat(), f.covers_until.isoformat(), f.missed_count) == (
            "2026-03-03",
            "2026-03-05",
            3,
        )
        r = await client.get(
            f"/api/v1/pools/{pool['id']}/videos",
            params={"status": "queued"},
            headers=tenant.headers,
        )
        assert [i["id"] for i in r.json()["items"]] == ids
        (n,) = await notes(client, tenant)
        assert (n["kind"], n["level"]) == ("firing.missed", "warning")
        assert "3 slot time(s)" in n["message"]
        pool_now = (await client.get(f"/api/v1/pools/{pool['id']}", headers=tenant.headers)).json()
        assert pool_now["next_fire_at"] == "2026-03-06T09:00:00Z"

    async def test_outage_ending_inside_grace_fires_the_last_late(
        self, client, tenant, engine, clock, app, sample_mp4
    ):
        pool, _ = await active_pool(client, tenant)
        (a,) = await upload_n(client, tenant, pool["id"], sample_mp4, 1)
        clock.set(NINE + timedelta(days=1, minutes=5))
        result = await engine.ticker.tick()
        assert (result.fired, result.missed) == (1, 1)
        fs = await firings(app, pool["id"])
        assert [(f.outcome, f.scheduled_for) for f in fs] == [
            ("missed", NINE),
            ("pending", NINE + timedelta(days=1)),
        ]
        assert fs[1].item_id == a
