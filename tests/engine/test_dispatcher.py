"""The dispatcher: quota, platform limits, retries, auth, no double posts, fencing."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from typing import Any, ClassVar

import pytest
from pydantic import BaseModel
from sqlalchemy import select
from test_ticker import NINE, active_pool, firings, item, notes

from apihelpers import make_account, make_pool, upload_n
from uploadpools.connectors import registry
from uploadpools.connectors.base import AuthExpired, PublishRequest, PublishResult
from uploadpools.engine.dispatcher import Dispatcher
from uploadpools.kit.crypto import SecretBox
from uploadpools.models import Account, Delivery, Workspace

pytestmark = pytest.mark.asyncio


async def webhook_account(client, tenant, url: str, name: str = "hook") -> str:  # type: ignore[no-untyped-def]
    r = await client.post(
        "/api/v1/accounts",
        json={"platform": "webhook", "name": name, "config": {"url": url}},
        headers=tenant.headers,
    )
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


async def webhook_pool(client, tenant, receiver, sample_mp4, n=1):  # type: ignore[no-untyped-def]
    acc = await webhook_account(client, tenant, receiver.url)
    pool = await make_pool(client, tenant, acc, timezone="UTC", state="active")
    ids = await upload_n(client, tenant, pool["id"], sample_mp4, n)
    return pool, acc, ids


async def deliveries(app) -> list[Delivery]:  # type: ignore[no-untyped-def]
    async with app.state.uploadpools.maker() as s:
        return list((await s.scalars(select(Delivery).order_by(Delivery.id))).all())


class TestQuota:
    async def test_fifty_due_together_with_thirteen_left_post_exactly_thirteen(
        self, client, make_tenant, clock, app, sample_mp4, settings
    ):
        tenant = await make_tenant(quota=13)
        accounts = [await make_account(client, tenant, f"f{i}") for i in range(50)]
        pool = await make_pool(
            client,
            tenant,
            accounts[0],
            timezone="UTC",
            state="active",
            slots=[{"time": "09:00", "account_ids": accounts}],
        )
        (a,) = await upload_n(client, tenant, pool["id"], sample_mp4, 1)
        clock.set(NINE)
        st = app.state.uploadpools
        from uploadpools.engine.ticker import Ticker

        await Ticker(st.maker, settings, clock).tick()
        # Three workers race for the same 50 deliveries.
        workers = [
            Dispatcher(st.maker, settings, clock, st.storage, st.http, node=f"w{i}")
            for i in range(3)
        ]
        await asyncio.gather(*(w.run_until_idle() for w in workers))
        ds = await deliveries(app)
        assert len(ds) == 50
        assert sum(d.status == "posted" for d in ds) == 13
        skipped = [d for d in ds if d.status == "skipped"]
        assert len(skipped) == 37 and {d.reason for d in skipped} == {"quota_exceeded"}
        usage = (await client.get("/api/v1/usage", headers=tenant.headers)).json()
        assert (usage["used"], usage["limit"]) == (13, 13)
        got = await item(client, tenant, pool["id"], a)
        assert got["status"] == "dispatched"  # at least one posted
        fs = await firings(app, pool["id"])
        assert [(f.kind, f.outcome, f.scheduled_for) for f in fs] == [
            ("scheduled", "partial", NINE)
        ]
        assert any(
            n["level"] == "warning" and "quota" in n["message"] for n in await notes(client, tenant)
        )

    async def test_all_workspaces_of_an_owner_share_the_quota(
        self, client, make_tenant, engine, clock, app, sample_mp4
    ):
        owner = await make_tenant(quota=1)
        st = app.state.uploadpools
        # A second workspace of the same owner, with its own key (a team's other workspace).
        from uploadpools.auth.service import create_api_key
        from uploadpools.store.engine import session_scope

        async with session_scope(st.maker) as s:
            ws2 = Workspace(name="second", owner_id=owner.user_id, created_at=clock.now())
            s.add(ws2)
            await s.flush()
            _, key2 = await create_api_key(
                s, workspace_id=ws2.id, user_id=owner.user_id, name="k", now=clock.now()
            )
        from conftest import Tenant

        other = Tenant(owner.email, owner.user_id, ws2.id, key2)
        p1, _ = await active_pool(client, owner)
        p2, _ = await active_pool(client, other)
        (i1,) = await upload_n(client, owner, p1["id"], sample_mp4, 1)
        (i2,) = await upload_n(client, other, p2["id"], sample_mp4, 1)
        clock.set(NINE)
        await engine.run()
        statuses = sorted(
            [
                (await item(client, owner, p1["id"], i1))["status"],
                (await item(client, other, p2["id"], i2))["status"],
            ]
        )
        assert statuses == ["dispatched", "skipped"]
        for t in (owner, other):
            assert (await client.get("/api/v1/usage", headers=t.headers)).json()["used"] == 1

    async def test_paid_owner_is_never_limited(
        self, client, make_tenant, engine, clock, app, sample_mp4
    ):
        tenant = await make_tenant(plan="paid", quota=0)
        pool, _ = await active_pool(client, tenant)
        (a,) = await upload_n(client, tenant, pool["id"], sample_mp4, 1)
        clock.set(NINE)
        await engine.run()
        assert (await item(client, tenant, pool["id"], a))["status"] == "dispatched"
        usage = (await client.get("/api/v1/usage", headers=tenant.headers)).json()
        assert (usage["used"], usage["limit"]) == (1, None)


class TestWebhookOutcomes:
    async def test_rate_limit_skips_with_warning(
        self, allow_loopback, client, tenant, engine, clock, app, receiver, sample_mp4
    ):
        pool, acc, (a,) = await webhook_pool(client, tenant, receiver, sample_mp4)
        receiver.answer(429, b'{"error": "slow down"}', {"Retry-After": "60"})
        clock.set(NINE)
        await engine.run()
        got = await item(client, tenant, pool["id"], a)
        assert got["status"] == "skipped"
        assert got["deliveries"][0]["reason"] == "platform_rate_limited"
        assert got["skip_reason"] == "platform_rate_limited"
        (n,) = await notes(client, tenant)
        assert n["level"] == "warning" and n["item_id"] == a
        assert (await client.get("/api/v1/usage", headers=tenant.headers)).json()["used"] == 0

    async def test_server_error_is_retried_then_posts(
        self, allow_loopback, client, tenant, engine, clock, app, receiver, sample_mp4
    ):
        pool, acc, (a,) = await webhook_pool(client, tenant, receiver, sample_mp4)
        receiver.answer(503, b"busy")
        receiver.answer(
            200, json.dumps({"id": "remote-1", "url": "https://example.test/p/1"}).encode()
        )
        clock.set(NINE)
        await engine.run()
        (d,) = await deliveries(app)
        assert (d.status, d.attempts) == ("pending", 1)
        assert d.next_attempt_at is not None and d.next_attempt_at > clock.now()
        assert (await client.get("/api/v1/usage", headers=tenant.headers)).json()["used"] == 0
        clock.set(d.next_attempt_at)
        await engine.dispatcher.run_until_idle()
        got = await item(client, tenant, pool["id"], a)
        assert got["status"] == "dispatched"
        (dd,) = got["deliveries"]
        assert (dd["status"], dd["attempts"], dd["remote_id"], dd["remote_url"]) == (
            "posted",
            2,
            "remote-1",
            "https://example.test/p/1",
        )
        ids = {r["headers"]["webhook-id"] for r in receiver.requests}
        assert len(receiver.requests) == 2 and len(ids) == 1  # same id: receivers can de-duplicate

    async def test_errors_past_the_retry_window_skip_as_platform_error(
        self, allow_loopback, client, tenant, engine, clock, app, receiver, sample_mp4, settings
    ):
        pool, acc, (a,) = await webhook_pool(client, tenant, receiver, sample_mp4)
        for _ in range(50):
            receiver.answer(500, b"down")
        clock.set(NINE)
        for _ in range(50):
            await engine.run()
            (d,) = await deliveries(app)
            if d.status != "pending":
                break
            clock.set(d.next_attempt_at)
        got = await item(client, tenant, pool["id"], a)
        assert got["status"] == "skipped"
        assert got["deliveries"][0]["reason"] == "platform_error"
        assert clock.now() <= NINE + timedelta(minutes=settings.retry_window_minutes)
        assert got["deliveries"][0]["attempts"] >= 3

    async def test_client_error_skips_at_once(
        self, allow_loopback, client, tenant, engine, clock, app, receiver, sample_mp4
    ):
        pool, acc, (a,) = await webhook_pool(client, tenant, receiver, sample_mp4)
        receiver.answer(400, b'{"error": "bad"}')
        clock.set(NINE)
        await engine.run()
        got = await item(client, tenant, pool["id"], a)
        assert (got["status"], got["deliveries"][0]["attempts"]) == ("skipped", 1)
        assert got["deliveries"][0]["reason"] == "platform_error"
        assert "400" in got["deliveries"][0]["detail"]


class AuthFailing:
    """A platform whose token was revoked: every post answers with an auth error."""

    platform: ClassVar[str] = "bluesky"

    class config_model(BaseModel):
        handle: str

    def __init__(self, ctx: Any) -> None:
        self.ctx = ctx

    async def publish(self, request: PublishRequest, jobs: Any) -> PublishResult:
        raise AuthExpired("the app password was revoked")

    async def reconcile(self, request: PublishRequest) -> Any:
        return None


class TestAuth:
    async def test_auth_error_marks_account_needs_reauth_and_notifies(
        self, client, tenant, engine, clock, app, sample_mp4, settings, monkeypatch
    ):
        monkeypatch.setitem(registry.BUILTIN_CONNECTORS, "bluesky", AuthFailing)
        st = app.state.uploadpools
        async with st.maker() as s:
            acc = Account(
                workspace_id=tenant.workspace_id,
                platform="bluesky",
                name="bsky",
                status="connected",
                credentials=SecretBox(settings.secret()).encrypt({"handle": "me"}),
                created_at=clock.now(),
                updated_at=clock.now(),
            )
            s.add(acc)
            await s.commit()
        pool = await make_pool(client, tenant, acc.id, timezone="UTC", state="active")
        a, b = await upload_n(client, tenant, pool["id"], sample_mp4, 2)
        clock.set(NINE)
        await engine.run()
        got = await item(client, tenant, pool["id"], a)
        assert got["deliveries"][0]["reason"] == "auth_expired"
        account = (await client.get(f"/api/v1/accounts/{acc.id}", headers=tenant.headers)).json()
        assert account["status"] == "needs_reauth"
        kinds = [n["kind"] for n in await notes(client, tenant)]
        assert "account.needs_reauth" in kinds
        # The next firing does not call the platform: it skips the account at once.
        clock.set(NINE + timedelta(days=1))
        await engine.run()
        got = await item(client, tenant, pool["id"], b)
        assert (
            got["status"],
            got["deliveries"][0]["reason"],
            got["deliveries"][0]["attempts"],
        ) == ("skipped", "auth_expired", 0)


class TestNoDoublePosts:
    async def test_folder_post_that_landed_before_a_crash_is_not_posted_again(
        self, client, tenant, clock, app, sample_mp4, settings
    ):
        pool, acc = await active_pool(client, tenant)
        (a,) = await upload_n(client, tenant, pool["id"], sample_mp4, 1)
        clock.set(NINE)
        st = app.state.uploadpools
        from uploadpools.engine.ticker import Ticker

        await Ticker(st.maker, settings, clock).tick()
        dying = Dispatcher(st.maker, settings, clock, st.storage, st.http, node="dying")
        (c,) = await dying.claim(10)
        # The worker gets as far as the irreversible step, then dies before recording.
        connector = registry.connector_for("folder", dying.ctx)
        from uploadpools.engine.dispatcher import _Jobs

        await connector.publish(c.request, _Jobs(dying, c))
        clock.advance(seconds=settings.lease_seconds + 1)
        survivor = Dispatcher(st.maker, settings, clock, st.storage, st.http, node="survivor")
        assert await survivor.run_until_idle() == 1
        got = await item(client, tenant, pool["id"], a)
        assert got["deliveries"][0]["status"] == "posted"
        videos = [
            p
            for p in (settings.data_dir / "folders" / "out").iterdir()
            if not p.name.endswith(".json")
        ]
        assert len(videos) == 1
        assert (await client.get("/api/v1/usage", headers=tenant.headers)).json()["used"] == 1

    async def test_webhook_crash_after_send_is_skipped_interrupted_not_resent(
        self, allow_loopback, client, tenant, clock, app, receiver, sample_mp4, settings
    ):
        pool, acc, (a,) = await webhook_pool(client, tenant, receiver, sample_mp4)
        clock.set(NINE)
        st = app.state.uploadpools
        from uploadpools.engine.dispatcher import _Jobs
        from uploadpools.engine.ticker import Ticker

        await Ticker(st.maker, settings, clock).tick()
        dying = Dispatcher(st.maker, settings, clock, st.storage, st.http, node="dying")
        (c,) = await dying.claim(10)
        await registry.connector_for("webhook", dying.ctx).publish(c.request, _Jobs(dying, c))
        assert len(receiver.requests) == 1
        clock.advance(seconds=settings.lease_seconds + 1)
        survivor = Dispatcher(st.maker, settings, clock, st.storage, st.http, node="survivor")
        await survivor.run_until_idle()
        assert len(receiver.requests) == 1  # never sent twice
        got = await item(client, tenant, pool["id"], a)
        assert (got["status"], got["deliveries"][0]["reason"]) == ("skipped", "interrupted")
        assert any(
            "may have been posted" in n["message"] or "may have gone out" in n["message"]
            for n in await notes(client, tenant)
        )

    async def test_worker_that_lost_its_lease_cannot_record(
        self, client, tenant, clock, app, sample_mp4, settings
    ):
        pool, acc = await active_pool(client, tenant)
        await upload_n(client, tenant, pool["id"], sample_mp4, 1)
        clock.set(NINE)
        st = app.state.uploadpools
        from uploadpools.engine.dispatcher import Outcome
        from uploadpools.engine.ticker import Ticker

        await Ticker(st.maker, settings, clock).tick()
        slow = Dispatcher(st.maker, settings, clock, st.storage, st.http, node="slow")
        (c,) = await slow.claim(10)
        clock.advance(seconds=settings.lease_seconds + 1)
        fast = Dispatcher(st.maker, settings, clock, st.storage, st.http, node="fast")
        (c2,) = await fast.claim(10)
        assert c2.token == c.token + 1
        await slow._record(c, Outcome("skipped", "platform_error", "stale"))
        (d,) = await deliveries(app)
        assert (d.status, d.lease_owner) == ("in_progress", "fast")
        await fast._run(c2)
        (d,) = await deliveries(app)
        assert d.status == "posted"


class TestPlatformCaps:
    async def test_cap_from_our_own_ledger_skips_before_calling(
        self, allow_loopback, client, tenant, engine, clock, app, receiver, sample_mp4, settings
    ):
        settings.platform_account_daily_caps = {"webhook": 1}
        pool, acc, (a, b) = await webhook_pool(client, tenant, receiver, sample_mp4, n=2)
        slot_id = pool["slots"][0]["id"]
        clock.set(NINE)
        await engine.run()
        r = await client.post(
            f"/api/v1/pools/{pool['id']}/slots/{slot_id}/fire", headers=tenant.headers
        )
        assert r.status_code == 202
        await engine.dispatcher.run_until_idle()
        got = await item(client, tenant, pool["id"], b)
        assert got["deliveries"][0]["reason"] == "platform_daily_limit"
        assert len(receiver.requests) == 1


class TestPostNextNow:
    async def test_manual_firing_posts_head_and_keeps_the_days_schedule(
        self, client, tenant, engine, clock, app, sample_mp4
    ):
        pool, acc = await active_pool(client, tenant)
        a, b = await upload_n(client, tenant, pool["id"], sample_mp4, 2)
        slot_id = pool["slots"][0]["id"]
        clock.set(NINE - timedelta(hours=2))
        r = await client.post(
            f"/api/v1/pools/{pool['id']}/slots/{slot_id}/fire", headers=tenant.headers
        )
        assert r.status_code == 202, r.text
        f = r.json()
        assert (f["outcome"], f["kind"], f["item_id"]) == ("manual", "manual", a)
        await engine.dispatcher.run_until_idle()
        assert (await item(client, tenant, pool["id"], a))["status"] == "dispatched"
        clock.set(NINE)
        await engine.run()
        assert (await item(client, tenant, pool["id"], b))["status"] == "dispatched"
        hist = (
            await client.get(f"/api/v1/pools/{pool['id']}/firings", headers=tenant.headers)
        ).json()["items"]
        assert [(h["kind"], h["result"]) for h in hist] == [
            ("scheduled", "dispatched"),
            ("manual", "dispatched"),
        ]

    async def test_fire_on_empty_queue_records_empty(self, client, tenant, engine, clock, app):
        pool, acc = await active_pool(client, tenant)
        r = await client.post(
            f"/api/v1/pools/{pool['id']}/slots/{pool['slots'][0]['id']}/fire",
            headers=tenant.headers,
        )
        assert r.status_code == 202
        assert (r.json()["result"], r.json()["item_id"]) == ("empty", None)

    async def test_fire_unknown_slot_404(self, client, tenant):
        pool, acc = await active_pool(client, tenant)
        r = await client.post(f"/api/v1/pools/{pool['id']}/slots/nope/fire", headers=tenant.headers)
        assert r.status_code == 404


class TestOurDatabaseFailing:
    async def test_a_job_save_that_cannot_reach_the_database_is_transient(
        self, settings, clock, tmp_path
    ):
        """Not `platform_error`: the connector saves before its irreversible step, so
        the engine may retry (the workers test saw skips when PostgreSQL refused clients)."""
        import httpx

        from uploadpools.connectors.base import Transient
        from uploadpools.engine.dispatcher import Claimed, Dispatcher, _Jobs
        from uploadpools.media.storage import LocalStorage
        from uploadpools.store.engine import create_engine, create_sessionmaker

        gone = settings.model_copy(
            update={"database_url": f"sqlite:///{tmp_path}/no-such-dir/uploadpools.db"}
        )
        engine = create_engine(gone)
        try:
            async with httpx.AsyncClient() as http:
                d = Dispatcher(
                    create_sessionmaker(engine), gone, clock, LocalStorage(tmp_path), http
                )
                jobs = _Jobs(d, Claimed("d1", 1, False, "webhook", None))  # type: ignore[arg-type]
                with pytest.raises(Transient, match="our database was unavailable"):
                    await jobs.save({"upload": "session-uri"})
        finally:
            await engine.dispose()
