"""Verified API keys are trusted for `api_key_cache_seconds`, never longer."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import update

from uploadpools.models import ApiKey
from uploadpools.store.engine import session_scope

pytestmark = pytest.mark.asyncio

POOLS = "/api/v1/pools"


async def revoke(app, tenant, clock) -> None:  # type: ignore[no-untyped-def]
    async with session_scope(app.state.uploadpools.maker) as s:
        await s.execute(
            update(ApiKey)
            .where(ApiKey.workspace_id == tenant.workspace_id)
            .values(revoked_at=clock.now())
        )


async def test_a_revoked_key_stops_working_within_the_cache_bound(client, app, tenant, clock):
    assert app.state.uploadpools.settings.api_key_cache_seconds == 5
    assert (await client.get(POOLS, headers=tenant.headers)).status_code == 200
    await revoke(app, tenant, clock)
    clock.advance(timedelta(seconds=4.9))
    # Still trusted from the first request: the database was not asked again.
    assert (await client.get(POOLS, headers=tenant.headers)).status_code == 200
    clock.advance(timedelta(seconds=0.1))
    assert (await client.get(POOLS, headers=tenant.headers)).status_code == 401


async def test_forget_all_drops_trust_at_once(client, app, tenant, clock):
    assert (await client.get(POOLS, headers=tenant.headers)).status_code == 200
    await revoke(app, tenant, clock)
    app.state.uploadpools.principals.forget_all()
    assert (await client.get(POOLS, headers=tenant.headers)).status_code == 401


async def test_zero_seconds_asks_the_database_every_time(client, app, tenant, clock):
    app.state.uploadpools.principals.ttl = timedelta(0)
    assert (await client.get(POOLS, headers=tenant.headers)).status_code == 200
    await revoke(app, tenant, clock)
    assert (await client.get(POOLS, headers=tenant.headers)).status_code == 401


async def test_a_wrong_key_is_never_trusted(client, tenant):
    wrong = tenant.key[:-4] + ("AAAA" if not tenant.key.endswith("AAAA") else "BBBB")
    for _ in range(2):
        r = await client.get(POOLS, headers={"Authorization": f"Bearer {wrong}"})
        assert r.status_code == 401, r.text
    assert (await client.get(POOLS, headers=tenant.headers)).status_code == 200
