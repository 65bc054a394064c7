"""The schedule preview marks firings forecast to be skipped, and why."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import update

from apihelpers import make_account, make_pool, upload_n
from uploadpools.models import Account

pytestmark = pytest.mark.asyncio


async def test_quota_cap_and_reauth_are_forecast(
    client, make_tenant, app, clock, sample_mp4, settings
):  # type: ignore[no-untyped-def]
    clock.set(datetime(2026, 3, 28, 12, tzinfo=UTC))
    tenant = await make_tenant(quota=3)
    ok = await make_account(client, tenant, "ok")
    stale = await make_account(client, tenant, "stale")
    async with app.state.uploadpools.maker() as s:
        await s.execute(update(Account).where(Account.id == stale).values(status="needs_reauth"))
        await s.commit()
    pool = await make_pool(
        client,
        tenant,
        ok,
        timezone="UTC",
        state="active",
        slots=[{"time": "09:00", "account_ids": [ok, stale]}],
    )
    await upload_n(client, tenant, pool["id"], sample_mp4, 5)
    r = await client.get(
        f"/api/v1/pools/{pool['id']}/schedule", params={"limit": 6}, headers=tenant.headers
    )
    entries = r.json()["items"]
    reasons = [{(s["account_id"], s["reason"]) for s in e["skips"]} for e in entries]
    assert [e["at"][:10] for e in entries] == [
        "2026-03-29",
        "2026-03-30",
        "2026-03-31",
        "2026-04-01",
        "2026-04-02",
        "2026-04-03",
    ]
    assert reasons[0] == reasons[1] == reasons[2] == {(stale, "auth_expired")}
    # March has 3 units: the 29th, 30th and 31st use them... and April renews the quota.
    assert reasons[3] == reasons[4] == {(stale, "auth_expired")}
    assert reasons[5] == set()  # no video left for that firing: nothing to skip
    assert entries[5]["item_id"] is None


async def test_quota_runs_out_within_the_month(client, make_tenant, clock, sample_mp4):  # type: ignore[no-untyped-def]
    tenant = await make_tenant(quota=2)
    acc = await make_account(client, tenant)
    pool = await make_pool(client, tenant, acc, timezone="UTC", state="active")
    await upload_n(client, tenant, pool["id"], sample_mp4, 3)
    r = await client.get(
        f"/api/v1/pools/{pool['id']}/schedule", params={"limit": 3}, headers=tenant.headers
    )
    skips = [e["skips"] for e in r.json()["items"]]
    assert skips[0] == skips[1] == []
    assert [(s["account_id"], s["reason"]) for s in skips[2]] == [(acc, "quota_exceeded")]


async def test_platform_cap_is_forecast(client, tenant, clock, sample_mp4, settings):  # type: ignore[no-untyped-def]
    settings.platform_account_daily_caps = {"folder": 1}
    acc = await make_account(client, tenant)
    pool = await make_pool(
        client,
        tenant,
        acc,
        timezone="UTC",
        state="active",
        slots=[{"time": "09:00", "account_ids": [acc]}, {"time": "10:00", "account_ids": [acc]}],
    )
    await upload_n(client, tenant, pool["id"], sample_mp4, 3)
    r = await client.get(
        f"/api/v1/pools/{pool['id']}/schedule", params={"limit": 3}, headers=tenant.headers
    )
    reasons = [[s["reason"] for s in e["skips"]] for e in r.json()["items"]]
    # 24 h after the first post the window has room again.
    assert reasons == [[], ["platform_daily_limit"], []]
