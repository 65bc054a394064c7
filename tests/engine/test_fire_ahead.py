"""Firings prepared ahead (PostgreSQL): a ticker writes an instant's firings before it, in
transactions that keep their pools locked, and commits them at the instant. Nothing shows
before the commit, everything is what a tick at the instant writes, a change to a
prepared pool waits and lands after the firing, and a rollback leaves the slots due."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

import pytest
from sqlalchemy import select
from test_runner import runner, wait_for
from test_ticker import NINE, active_pool, engine_node, firings, item, pools_at_nine

from apihelpers import upload_n
from lockhelpers import idle_in_transaction, waiting_on_a_lock
from uploadpools.engine.ticker import LEAD_MARGIN_SECONDS, Ticker
from uploadpools.kit.clock import FrozenClock
from uploadpools.models import Delivery, Slot

pytestmark = pytest.mark.asyncio


@pytest.fixture
def postgres(database_url):  # type: ignore[no-untyped-def]
    """Preparing holds a transaction open: on SQLite, with its one writer (and one
    connection per process), nothing else could run meanwhile; the engine never does it
    there (`test_no_lead_on_sqlite`)."""
    if not database_url.startswith("postgresql"):
        pytest.skip("firings are prepared ahead on PostgreSQL only")


class _ClockAfter:
    """`before` for the first `calls` readings, then `after`: the instant comes while the
    ticker is still preparing."""

    def __init__(self, before: datetime, after: datetime, calls: int) -> None:
        self.before, self.after, self.calls = before, after, calls

    def now(self) -> datetime:
        self.calls -= 1
        return self.before if self.calls >= 0 else self.after


async def test_no_lead_on_sqlite(app, clock, settings, database_url):  # type: ignore[no-untyped-def]
    if database_url.startswith("postgresql"):
        pytest.skip("SQLite")
    assert await Ticker(app.state.uploadpools.maker, settings, clock).lead(NINE) == 0


async def test_lead_follows_the_slots_due_the_speed_and_the_tickers(  # type: ignore[no-untyped-def]
    postgres, client, tenant, app, clock, settings, sample_mp4
):
    maker = app.state.uploadpools.maker
    ticker = Ticker(maker, settings, clock)
    cap = settings.ticker_lead_max_seconds
    clock.set(NINE - timedelta(seconds=cap + 1))
    assert await ticker.lead(NINE) == cap  # too far to count yet: wake at NINE - cap
    clock.set(NINE - timedelta(seconds=1))
    assert await ticker.lead(NINE) == 0  # nothing due then
    await pools_at_nine(client, tenant, sample_mp4, 3, videos=0)
    ticker.seconds_per_firing = 0.5
    assert await ticker.lead(NINE) == pytest.approx(LEAD_MARGIN_SECONDS + 1.5)
    assert await ticker.lead(NINE + timedelta(seconds=1)) == 0  # another instant
    for name in ("h:1", "h:2"):  # this process and a second live ticker share the work
        await engine_node(maker, name, clock.now(), roles="ticker")
    assert await ticker.lead(NINE) == pytest.approx(LEAD_MARGIN_SECONDS + 0.75)
    ticker.seconds_per_firing = 60.0
    assert await ticker.lead(NINE) == settings.ticker_lead_max_seconds
    off = Ticker(maker, settings.model_copy(update={"ticker_lead_max_seconds": 0}), clock)
    assert await off.lead(NINE) == 0


async def test_the_speed_is_learned_from_preparations_large_enough(app, clock, settings):  # type: ignore[no-untyped-def]
    ticker = Ticker(app.state.uploadpools.maker, settings, clock)
    first = ticker.seconds_per_firing
    ticker.learn(100, 10.0)  # too few to tell
    assert ticker.seconds_per_firing == first
    ticker.learn(1000, 0.5)
    assert ticker.seconds_per_firing == pytest.approx((first + 0.5e-3) / 2)


async def test_prepared_firings_show_at_the_commit_as_a_tick_at_the_instant_writes_them(  # type: ignore[no-untyped-def]
    postgres, client, tenant, app, clock, settings, sample_mp4
):
    [(pool, (a, _b))] = await pools_at_nine(client, tenant, sample_mp4, 1, videos=2)
    [(other, (c,))] = await pools_at_nine(client, tenant, sample_mp4, 1, name="q")
    clock.set(NINE - timedelta(seconds=2))
    ticker = Ticker(app.state.uploadpools.maker, settings, clock)
    prepared = await ticker.prepare(NINE)
    try:
        assert prepared.result.fired == 2
        assert await firings(app, pool["id"]) == []  # not committed: invisible
        assert (await item(client, tenant, pool["id"], a))["status"] == "queued"
    finally:
        clock.set(NINE)
        committed = await prepared.commit()
    assert committed.fired == 2 and len(committed.firing_ids) == 2
    (f,) = await firings(app, pool["id"])
    assert (f.scheduled_for, f.fired_at, f.item_id, f.outcome) == (NINE, NINE, a, "pending")
    got = await item(client, tenant, pool["id"], a)
    assert got["status"] == "dispatching"
    assert [d["status"] for d in got["deliveries"]] == ["pending"]
    assert [f.item_id for f in await firings(app, other["id"])] == [c]
    async with app.state.uploadpools.maker() as s:
        nxt = set((await s.scalars(select(Slot.next_fire_at))).all())
        assert nxt == {NINE + timedelta(days=1)}
        assert len((await s.scalars(select(Delivery))).all()) == 2
    assert (await ticker.tick()).fired == 0  # nothing is due twice
    await prepared.close()  # after a commit: nothing left to roll back


async def test_a_change_to_a_prepared_pool_waits_and_lands_after_the_firing(  # type: ignore[no-untyped-def]
    postgres, client, tenant, app, clock, settings, sample_mp4
):
    """Moving the second video to the top while the 09:00 firing is prepared: the request
    waits for the pool's lock, the firing takes the video that was at the head, and the
    move lands after it."""
    pool, _acc = await active_pool(client, tenant)
    a, b, c = await upload_n(client, tenant, pool["id"], sample_mp4, 3)
    clock.set(NINE - timedelta(seconds=1))
    prepared = await Ticker(app.state.uploadpools.maker, settings, clock).prepare(NINE)
    try:
        move = asyncio.create_task(
            client.patch(
                f"/api/v1/pools/{pool['id']}/videos/{c}",
                json={"position": 0},
                headers=tenant.headers,
            )
        )
        await wait_for(lambda: waiting_on_a_lock(app))
        assert not move.done()
        clock.set(NINE)
        assert (await prepared.commit()).fired == 1
    finally:
        await prepared.close()
    r = await move
    assert r.status_code == 200, r.text
    assert [f.item_id for f in await firings(app, pool["id"])] == [a]
    queued = await client.get(
        f"/api/v1/pools/{pool['id']}/videos?status=queued", headers=tenant.headers
    )
    assert [i["id"] for i in queued.json()["items"]] == [c, b]


async def test_two_tickers_prepare_one_instant_between_them(  # type: ignore[no-untyped-def]
    postgres, client, tenant, app, clock, settings, sample_mp4
):
    """Small batches in several lanes, two tickers: each pool is prepared by one of them,
    once, and a tick at the instant finds nothing left."""
    pools = await pools_at_nine(client, tenant, sample_mp4, 9)
    clock.set(NINE - timedelta(seconds=3))
    tuned = settings.model_copy(update={"engine_batch_size": 2, "ticker_concurrency": 2})
    maker = app.state.uploadpools.maker
    one, two = Ticker(maker, tuned, clock), Ticker(maker, tuned, clock)
    first, second = await asyncio.gather(one.prepare(NINE), two.prepare(NINE))
    try:
        assert first.result.fired + second.result.fired == 9
        assert first.result.fired and second.result.fired
        clock.set(NINE)
        assert (await first.commit()).fired + (await second.commit()).fired == 9
    finally:
        await first.close()
        await second.close()
    for pool, (x,) in pools:
        assert [f.item_id for f in await firings(app, pool["id"])] == [x]
    assert (await one.tick()).fired == 0


async def test_preparing_stops_at_the_instant_and_a_tick_fires_the_rest(  # type: ignore[no-untyped-def]
    postgres, client, tenant, app, settings, sample_mp4
):
    pools = await pools_at_nine(client, tenant, sample_mp4, 5)
    tuned = settings.model_copy(update={"engine_batch_size": 2, "ticker_concurrency": 1})
    maker = app.state.uploadpools.maker
    # One reading for the first batch: then the instant has come.
    prepared = await Ticker(
        maker, tuned, _ClockAfter(NINE - timedelta(seconds=1), NINE, 1)
    ).prepare(NINE)
    try:
        assert prepared.result.fired == 2
        assert (await prepared.commit()).fired == 2
    finally:
        await prepared.close()
    assert (await Ticker(maker, tuned, FrozenClock(NINE)).tick()).fired == 3
    for pool, (x,) in pools:
        assert [(f.item_id, f.fired_at) for f in await firings(app, pool["id"])] == [(x, NINE)]


async def test_prepared_firings_rolled_back_leave_the_slots_due(  # type: ignore[no-untyped-def]
    postgres, client, tenant, app, clock, settings, sample_mp4
):
    """A ticker that stops (or dies: its connection closes) before the instant: nothing
    was recorded, no pool stays locked, and a tick at the instant fires every slot."""
    pools = await pools_at_nine(client, tenant, sample_mp4, 3)
    clock.set(NINE - timedelta(seconds=1))
    ticker = Ticker(app.state.uploadpools.maker, settings, clock)
    prepared = await ticker.prepare(NINE)
    assert prepared.result.fired == 3
    await prepared.close()
    assert (await prepared.commit()).fired == 0  # nothing left to commit
    clock.set(NINE)
    assert (await ticker.tick()).fired == 3
    for pool, (x,) in pools:
        assert [f.item_id for f in await firings(app, pool["id"])] == [x]


async def _a_ticker_preparing_nine(client, tenant, app, clock, sample_mp4):  # type: ignore[no-untyped-def]
    """One pool with one video due at 09:00, the clock within the lead of it, and an
    engine that runs its ticker loop only (not started yet)."""
    pool, _acc = await active_pool(client, tenant)
    (a,) = await upload_n(client, tenant, pool["id"], sample_mp4, 1)
    clock.set(NINE - timedelta(seconds=LEAD_MARGIN_SECONDS / 5))
    eng = runner(app, clock)
    eng.settings = eng.settings.model_copy(update={"engine_roles": ["ticker"]})
    return pool, a, eng


async def test_the_engine_prepares_the_next_instant_and_commits_it_when_it_comes(  # type: ignore[no-untyped-def]
    postgres, client, tenant, app, clock, sample_mp4
):
    """The ticker loop: within the lead of 09:00 it prepares the firing and holds it (an
    open transaction, nothing visible) until the clock says 09:00, then commits it."""
    pool, a, eng = await _a_ticker_preparing_nine(client, tenant, app, clock, sample_mp4)

    async def fired() -> bool:
        return [f.item_id for f in await firings(app, pool["id"])] == [a]

    await eng.start()
    try:
        await wait_for(lambda: idle_in_transaction(app))
        assert not await fired()
        clock.set(NINE)
        await wait_for(fired)
    finally:
        await eng.stop()
    assert not await idle_in_transaction(app)


async def test_a_stopping_engine_rolls_its_prepared_firings_back(  # type: ignore[no-untyped-def]
    postgres, client, tenant, app, clock, settings, sample_mp4
):
    pool, a, eng = await _a_ticker_preparing_nine(client, tenant, app, clock, sample_mp4)
    await eng.start()
    try:
        await wait_for(lambda: idle_in_transaction(app))
    finally:
        await eng.stop()
    assert not await idle_in_transaction(app)
    assert await firings(app, pool["id"]) == []
    clock.set(NINE)
    assert (await Ticker(app.state.uploadpools.maker, settings, clock).tick()).fired == 1
    assert [f.item_id for f in await firings(app, pool["id"])] == [a]
