"""The engine's loops: waking on changes, timeouts retried, graceful shutdown."""

from __future__ import annotations

import asyncio
import threading

import pytest
from sqlalchemy import select
from test_dispatcher import deliveries, webhook_pool
from test_ticker import NINE, item

from uploadpools.connectors.webhook.connector import WebhookConnector
from uploadpools.engine.worker import Engine
from uploadpools.models import EngineNode

pytestmark = pytest.mark.asyncio


def runner(app, clock):  # type: ignore[no-untyped-def]
    st = app.state.uploadpools
    return Engine(st.maker, st.settings, clock, st.storage, st.http, st.fetcher, role="worker")


async def wait_for(predicate, limit_s: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    """Wait for the engine's own tasks (real work), never for time to pass."""
    async with asyncio.timeout(limit_s):
        while not await predicate():
            await asyncio.sleep(0.02)


async def test_timeout_is_retried_then_posts(
    allow_loopback, client, tenant, engine, clock, app, receiver, sample_mp4, monkeypatch
):  # type: ignore[no-untyped-def]
    monkeypatch.setattr(WebhookConnector, "timeout_s", 0.3)
    pool, _acc, (a,) = await webhook_pool(client, tenant, receiver, sample_mp4)
    hold = threading.Event()
    receiver.hold = hold  # the first request hangs past the connector's timeout
    clock.set(NINE)
    await engine.run()
    (d,) = await deliveries(app)
    assert (d.status, d.attempts) == ("pending", 1)
    assert "0.3" in (d.detail or "")
    hold.set()
    receiver.hold = None
    clock.set(d.next_attempt_at)
    await engine.dispatcher.run_until_idle()
    got = await item(client, tenant, pool["id"], a)
    assert (got["status"], got["deliveries"][0]["attempts"]) == ("dispatched", 2)


async def test_due_slot_fires_when_engine_runs_and_stop_finishes_in_flight(
    allow_loopback, client, tenant, clock, app, receiver, sample_mp4
):  # type: ignore[no-untyped-def]
    pool, _acc, (a,) = await webhook_pool(client, tenant, receiver, sample_mp4)
    hold = threading.Event()
    receiver.hold = hold
    clock.set(NINE)
    eng = runner(app, clock)
    await eng.start()
    try:

        async def received() -> bool:
            return len(receiver.requests) == 1

        await wait_for(received)
        stopping = asyncio.create_task(eng.stop(grace_seconds=10))
        await asyncio.sleep(0.05)
        assert not stopping.done()  # waiting for the in-flight post
        hold.set()
        await stopping
    finally:
        hold.set()
    got = await item(client, tenant, pool["id"], a)
    assert got["deliveries"][0]["status"] == "posted"
    async with app.state.uploadpools.maker() as s:
        node = (await s.scalars(select(EngineNode))).one()
    assert node.role == "worker" and node.stopped_at is not None


async def test_api_change_wakes_the_ticker(client, tenant, clock, app, sample_mp4, settings):  # type: ignore[no-untyped-def]
    """A sleeping scheduler (idle for a long time) fires a slot made due by an edit at once."""
    from apihelpers import make_account, make_pool

    settings.engine_idle_seconds = 3600
    acc = await make_account(client, tenant)
    pool = await make_pool(client, tenant, acc, timezone="UTC")
    eng = runner(app, clock)
    app.state.uploadpools.engine_runner = eng
    await eng.start()
    try:
        await asyncio.sleep(0.05)  # let the loops go to sleep
        clock.set(NINE)
        r = await client.patch(
            f"/api/v1/pools/{pool['id']}", json={"state": "active"}, headers=tenant.headers
        )
        assert r.json()["next_fire_at"] == "2026-03-04T09:00:00Z"
        clock.set(NINE.replace(day=4))

        async def fired() -> bool:
            return (
                len(await deliveries(app)) == 0
                and await eng.ticker.next_due() is not None
                and (await eng.ticker.next_due()).day == 5
            )

        app.state.uploadpools.wake()
        await wait_for(fired)
    finally:
        app.state.uploadpools.engine_runner = None
        await eng.stop()
