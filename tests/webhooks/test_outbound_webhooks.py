"""Outbound lifecycle webhooks: subscriptions, the outbox, signing, retries, rotation,
410, the private-network guard. Receivers are real HTTP servers on 127.0.0.1; a receiver
verifies every delivery with `standardwebhooks.Webhook(secret).verify`. The clock is moved,
never slept."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from apihelpers import fields, make_account, make_pool, upload_n
from uploadpools.models import Pool, WebhookDelivery, WebhookEndpoint, WebhookEvent
from uploadpools.notifications.service import notify
from uploadpools.ops import metrics
from uploadpools.store.engine import session_scope
from uploadpools.webhooks.sender import RETRY_DELAYS, Sender

pytestmark = pytest.mark.asyncio
API = "/api/v1"
NINE = datetime(2026, 3, 3, 9, 0, tzinfo=UTC)  # the slot's first instant after START


async def active_pool(client, tenant):  # type: ignore[no-untyped-def]
    acc = await make_account(client, tenant)
    pool = await make_pool(client, tenant, acc, timezone="UTC", state="active")
    return pool, acc


@pytest.fixture
def sender(app, clock):  # type: ignore[no-untyped-def]
    st = app.state.uploadpools
    return Sender(st.maker, st.settings, clock, st.http)


async def subscribe(client, tenant, url, events=("item.queued",)):  # type: ignore[no-untyped-def]
    r = await client.post(
        f"{API}/webhooks", json={"url": url, "events": list(events)}, headers=tenant.headers
    )
    assert r.status_code == 201, r.text
    return r.json()


def received(receiver):  # type: ignore[no-untyped-def]
    return [json.loads(r["body"]) for r in receiver.requests]


def verify(secret, request):  # type: ignore[no-untyped-def]
    return Webhook(secret).verify(request["body"], request["headers"])


async def log_of(client, tenant, hook_id):  # type: ignore[no-untyped-def]
    r = await client.get(f"{API}/webhooks/{hook_id}/deliveries", headers=tenant.headers)
    assert r.status_code == 200, r.text
    return r.json()["items"]


async def count(app, model) -> int:  # type: ignore[no-untyped-def]
    async with app.state.uploadpools.maker() as s:
        return int(await s.scalar(select(func.count()).select_from(model)) or 0)


class TestSubscriptions:
    async def test_create_shows_the_secret_once(self, client, tenant, allow_loopback, receiver):
        hook = await subscribe(client, tenant, receiver.url, ["item.queued", "pool.empty"])
        assert hook["secret"].startswith("whsec_")
        Webhook(hook["secret"])  # a valid Standard Webhooks secret
        assert hook["events"] == ["item.queued", "pool.empty"]
        listed = (await client.get(f"{API}/webhooks", headers=tenant.headers)).json()["items"]
        assert [h["id"] for h in listed] == [hook["id"]]
        assert "secret" not in listed[0]
        assert hook["secret"] not in json.dumps(listed)

    async def test_an_idempotent_replay_does_not_show_the_secret_again(
        self, client, tenant, allow_loopback, receiver
    ):
        body = {"url": receiver.url, "events": ["item.queued"]}
        headers = {**tenant.headers, "Idempotency-Key": "k1"}
        first = await client.post(f"{API}/webhooks", json=body, headers=headers)
        again = await client.post(f"{API}/webhooks", json=body, headers=headers)
        assert first.status_code == again.status_code == 201
        assert first.json()["secret"].startswith("whsec_")
        assert again.json()["id"] == first.json()["id"]
        assert again.json()["secret"] is None  # never stored in plain text

    async def test_bad_input_names_the_field(self, client, tenant, allow_loopback, receiver):
        cases = [
            ({"url": "ftp://example.com/x", "events": ["item.queued"]}, {"url"}),
            ({"url": receiver.url, "events": ["item.exploded"]}, {"events.0"}),
            ({"url": receiver.url, "events": []}, {"events"}),
            ({"url": "nope", "events": ["item.queued", "x"]}, {"url", "events.1"}),
            ({"events": ["item.queued"]}, {"url"}),
        ]
        for body, bad in cases:
            r = await client.post(f"{API}/webhooks", json=body, headers=tenant.headers)
            assert fields(r) == bad, body

    @pytest.mark.parametrize(
        "url", ["http://127.0.0.1:9/hook", "http://10.1.2.3/hook", "http://169.254.169.254/"]
    )
    async def test_private_destinations_are_refused(self, client, tenant, url):
        r = await client.post(
            f"{API}/webhooks", json={"url": url, "events": ["item.queued"]}, headers=tenant.headers
        )
        assert fields(r) == {"url"}
        assert "UPLOADPOOLS_PRIVATE_NETWORKS_ALLOWED" in r.json()["errors"][0]["message"]

    async def test_delete(self, client, tenant, allow_loopback, receiver):
        hook = await subscribe(client, tenant, receiver.url)
        r = await client.delete(f"{API}/webhooks/{hook['id']}", headers=tenant.headers)
        assert r.status_code == 204
        r = await client.delete(f"{API}/webhooks/{hook['id']}", headers=tenant.headers)
        assert r.status_code == 404
        assert (await client.get(f"{API}/webhooks", headers=tenant.headers)).json()["items"] == []


class TestOutbox:
    async def test_enqueue_emits_item_queued_signed_and_linked(
        self, client, tenant, allow_loopback, receiver, sender, sample_mp4
    ):
        hook = await subscribe(client, tenant, receiver.url)
        pool, _ = await active_pool(client, tenant)
        (item_id,) = await upload_n(client, tenant, pool["id"], sample_mp4, 1)
        assert await sender.run_until_idle() == 1
        [req] = receiver.requests
        body = verify(hook["secret"], req)
        assert body["type"] == "item.queued"
        assert req["headers"]["webhook-id"] == body["id"]
        assert body["timestamp"].endswith("Z")
        assert body["data"]["pool"] == {
            "id": pool["id"],
            "name": pool["name"],
            "url": f"http://testserver/api/v1/pools/{pool['id']}",
        }
        assert body["data"]["item"]["id"] == item_id
        assert body["data"]["item"]["status"] == "queued"
        assert body["data"]["item"]["url"] == (
            f"http://testserver/api/v1/pools/{pool['id']}/videos/{item_id}"
        )
        [d] = await log_of(client, tenant, hook["id"])
        assert (d["status"], d["attempts"], d["event_type"]) == ("delivered", 1, "item.queued")
        assert [a["status_code"] for a in d["attempt_log"]] == [200]

    async def test_nothing_is_written_without_a_subscription(
        self, client, tenant, make_tenant, allow_loopback, receiver, app, sample_mp4
    ):
        other = await make_tenant()
        await subscribe(client, other, receiver.url)  # another workspace's subscription
        await subscribe(client, tenant, receiver.url, ["pool.empty"])  # another event
        pool, _ = await active_pool(client, tenant)
        await upload_n(client, tenant, pool["id"], sample_mp4, 2)
        assert await count(app, WebhookEvent) == 0
        assert await count(app, WebhookDelivery) == 0

    async def test_the_event_is_absent_when_its_transaction_rolls_back(
        self, client, tenant, allow_loopback, receiver, app, clock
    ):
        await subscribe(client, tenant, receiver.url, ["pool.empty"])
        pool, _ = await active_pool(client, tenant)
        maker = app.state.uploadpools.maker

        async def empty_notice() -> None:
            async with maker() as s:
                pass
            async with session_scope(maker) as s:
                p = await s.get(Pool, pool["id"])
                await notify(
                    s,
                    workspace_id=tenant.workspace_id,
                    level="warning",
                    kind="pool.empty",
                    message="empty",
                    now=clock.now(),
                    pool_id=p.id,
                )
                raise RuntimeError("the causing change fails")

        with pytest.raises(RuntimeError):
            await empty_notice()
        assert await count(app, WebhookEvent) == 0
        assert await count(app, WebhookDelivery) == 0
        # The same change committed writes the event and its delivery.
        async with session_scope(maker) as s:
            await notify(
                s,
                workspace_id=tenant.workspace_id,
                level="warning",
                kind="pool.empty",
                message="empty",
                now=clock.now(),
                pool_id=pool["id"],
            )
        assert await count(app, WebhookEvent) == 1
        assert await count(app, WebhookDelivery) == 1

    async def test_a_firing_emits_delivery_posted_and_item_dispatched(
        self, client, tenant, allow_loopback, receiver, sender, engine, clock, sample_mp4
    ):
        hook = await subscribe(
            client,
            tenant,
            receiver.url,
            ["delivery.posted", "item.dispatched", "item.skipped", "delivery.skipped"],
        )
        pool, acc = await active_pool(client, tenant)
        (item_id,) = await upload_n(client, tenant, pool["id"], sample_mp4, 1)
        clock.set(NINE)
        await engine.run()
        await sender.run_until_idle()
        bodies = [verify(hook["secret"], r) for r in receiver.requests]
        assert sorted(b["type"] for b in bodies) == ["delivery.posted", "item.dispatched"]
        posted = next(b for b in bodies if b["type"] == "delivery.posted")["data"]
        assert posted["delivery"]["account_id"] == acc
        assert posted["delivery"]["status"] == "posted"
        assert posted["item"]["id"] == item_id
        done = next(b for b in bodies if b["type"] == "item.dispatched")["data"]
        assert done["item"]["status"] == "dispatched"
        assert done["firing"]["scheduled_for"] == "2026-03-03T09:00:00Z"
        assert [d["status"] for d in done["deliveries"]] == ["posted"]

    async def test_a_skip_emits_delivery_skipped_and_item_skipped(
        self, client, tenant, allow_loopback, receiver, sender, engine, clock, sample_mp4
    ):
        hook = await subscribe(
            client, tenant, receiver.url, ["delivery.posted", "delivery.skipped", "item.skipped"]
        )
        pool, acc = await active_pool(client, tenant)
        await upload_n(client, tenant, pool["id"], sample_mp4, 1)
        r = await client.patch(
            f"{API}/accounts/{acc}", json={"status": "disabled"}, headers=tenant.headers
        )
        assert r.status_code == 200, r.text
        clock.set(NINE)
        await engine.run()
        await sender.run_until_idle()
        bodies = {
            b["type"]: b["data"] for b in (verify(hook["secret"], r) for r in receiver.requests)
        }
        assert set(bodies) == {"delivery.skipped", "item.skipped"}
        assert bodies["delivery.skipped"]["delivery"]["reason"] == "account_disabled"
        assert bodies["item.skipped"]["item"]["skip_reason"] == "account_disabled"


class TestDelivery:
    async def test_fails_twice_then_succeeds_with_the_same_webhook_id(
        self, client, tenant, allow_loopback, receiver, sender, clock, sample_mp4
    ):
        attempts = metrics.WEBHOOK_ATTEMPTS
        before = {o: attempts.labels(o)._value.get() for o in ("retry", "delivered")}
        hook = await subscribe(client, tenant, receiver.url)
        receiver.answer(500)
        receiver.answer(503)
        pool, _ = await active_pool(client, tenant)
        await upload_n(client, tenant, pool["id"], sample_mp4, 1)
        assert await sender.run_until_idle() == 1
        # Not due again before its backoff.
        assert await sender.run_until_idle() == 0
        [d] = await log_of(client, tenant, hook["id"])
        assert (d["status"], d["attempts"]) == ("pending", 1)
        assert d["next_attempt_at"] is not None
        for delay in RETRY_DELAYS[:2]:
            clock.advance(delay * 1.2)
            assert await sender.run_until_idle() == 1
        ids = [r["headers"]["webhook-id"] for r in receiver.requests]
        assert len(ids) == 3 and len(set(ids)) == 1
        for r in receiver.requests:
            verify(hook["secret"], r)
        [d] = await log_of(client, tenant, hook["id"])
        assert (d["status"], d["attempts"], d["next_attempt_at"]) == ("delivered", 3, None)
        assert [(a["status_code"], a["error"]) for a in d["attempt_log"]] == [
            (500, "HTTP 500"),
            (503, "HTTP 503"),
            (200, None),
        ]
        # /metrics counts each attempt by outcome.
        assert attempts.labels("retry")._value.get() - before["retry"] == 2
        assert attempts.labels("delivered")._value.get() - before["delivered"] == 1

    async def test_retries_span_about_three_days_then_fail(
        self, client, tenant, allow_loopback, receiver, sender, clock, app
    ):
        hook = await subscribe(client, tenant, receiver.url)
        for _ in range(20):
            receiver.answer(500)
        r = await client.post(f"{API}/webhooks/{hook['id']}/test", headers=tenant.headers)
        assert r.status_code == 202, r.text
        start = clock.now()
        for _ in range(50):
            await sender.run_until_idle()
            due = await sender.next_due()
            if due is None:
                break
            clock.set(max(clock.now(), due))
        [d] = await log_of(client, tenant, hook["id"])
        assert d["status"] == "failed" and d["attempts"] == len(RETRY_DELAYS) + 1
        assert len(receiver.requests) == len(RETRY_DELAYS) + 1
        spent = clock.now() - start
        assert timedelta(days=2.5) < spent < timedelta(days=3.5)

    async def test_410_disables_the_endpoint(
        self, client, tenant, allow_loopback, receiver, sender, sample_mp4
    ):
        hook = await subscribe(client, tenant, receiver.url)
        receiver.answer(410)
        pool, _ = await active_pool(client, tenant)
        await upload_n(client, tenant, pool["id"], sample_mp4, 1)
        await sender.run_until_idle()
        [listed] = (await client.get(f"{API}/webhooks", headers=tenant.headers)).json()["items"]
        assert listed["disabled_at"] is not None
        assert "410" in listed["disabled_reason"]
        [d] = await log_of(client, tenant, hook["id"])
        assert (d["status"], d["attempt_log"][0]["status_code"]) == ("failed", 410)
        notes = (await client.get(f"{API}/notifications", headers=tenant.headers)).json()["items"]
        assert any(n["kind"] == "webhook.disabled" for n in notes)
        # Later events are no longer sent.
        await upload_n(client, tenant, pool["id"], sample_mp4, 1)
        assert await sender.run_until_idle() == 0
        assert len(receiver.requests) == 1

    async def test_a_redirect_to_a_private_address_is_not_followed(
        self, client, tenant, allow_loopback, receiver, sender, clock, app
    ):
        hook = await subscribe(client, tenant, receiver.url)
        receiver.answer(307, headers={"location": "http://10.255.255.1/hook"})
        r = await client.post(f"{API}/webhooks/{hook['id']}/test", headers=tenant.headers)
        assert r.status_code == 202
        await sender.run_until_idle()
        assert len(receiver.requests) == 1
        [d] = await log_of(client, tenant, hook["id"])
        assert d["status"] == "pending"
        assert "refused" in d["attempt_log"][0]["error"]
        assert "10.255.255.1" in d["attempt_log"][0]["error"]

    async def test_a_307_to_an_allowed_address_is_followed(
        self, client, tenant, allow_loopback, receiver, sender
    ):
        hook = await subscribe(client, tenant, receiver.url)
        receiver.answer(307, headers={"location": "/moved"})
        r = await client.post(f"{API}/webhooks/{hook['id']}/test", headers=tenant.headers)
        assert r.status_code == 202
        await sender.run_until_idle()
        assert len(receiver.requests) == 2
        assert verify(hook["secret"], receiver.requests[1])["type"] == "webhook.test"
        [d] = await log_of(client, tenant, hook["id"])
        assert d["status"] == "delivered"

    async def test_send_test_and_send_again(self, client, tenant, allow_loopback, receiver, sender):
        hook = await subscribe(client, tenant, receiver.url)
        r = await client.post(f"{API}/webhooks/{hook['id']}/test", headers=tenant.headers)
        assert r.status_code == 202
        first = r.json()
        assert (first["event_type"], first["status"]) == ("webhook.test", "pending")
        await sender.run_until_idle()
        r = await client.post(
            f"{API}/webhooks/{hook['id']}/deliveries/{first['id']}/resend", headers=tenant.headers
        )
        assert r.status_code == 202, r.text
        again = r.json()
        assert again["id"] != first["id"] and again["event_id"] == first["event_id"]
        await sender.run_until_idle()
        a, b = receiver.requests
        assert a["headers"]["webhook-id"] == b["headers"]["webhook-id"] == first["event_id"]
        assert verify(hook["secret"], b) == verify(hook["secret"], a)
        log = await log_of(client, tenant, hook["id"])
        assert [d["status"] for d in log] == ["delivered", "delivered"]
        r = await client.post(
            f"{API}/webhooks/{hook['id']}/deliveries/nope/resend", headers=tenant.headers
        )
        assert r.status_code == 404


class TestRotation:
    async def test_old_and_new_secrets_both_verify_during_the_grace_period(
        self, client, tenant, allow_loopback, receiver, sender, clock
    ):
        hook = await subscribe(client, tenant, receiver.url)
        old = hook["secret"]
        r = await client.post(f"{API}/webhooks/{hook['id']}/rotate-secret", headers=tenant.headers)
        assert r.status_code == 200, r.text
        new = r.json()["secret"]
        assert new.startswith("whsec_") and new != old
        assert r.json()["previous_secret_expires_at"] == "2026-03-03T12:00:00Z"

        await client.post(f"{API}/webhooks/{hook['id']}/test", headers=tenant.headers)
        await sender.run_until_idle()
        req = receiver.requests[-1]
        assert len(req["headers"]["webhook-signature"].split(" ")) == 2
        assert verify(old, req) == verify(new, req)

        clock.advance(hours=24, seconds=1)
        await client.post(f"{API}/webhooks/{hook['id']}/test", headers=tenant.headers)
        await sender.run_until_idle()
        req = receiver.requests[-1]
        assert len(req["headers"]["webhook-signature"].split(" ")) == 1
        verify(new, req)
        with pytest.raises(WebhookVerificationError):
            verify(old, req)

    async def test_secrets_are_encrypted_at_rest(
        self, client, tenant, allow_loopback, receiver, app
    ):
        hook = await subscribe(client, tenant, receiver.url)
        async with app.state.uploadpools.maker() as s:
            row = await s.get(WebhookEndpoint, hook["id"])
        assert hook["secret"].encode() not in row.secret
        assert hook["secret"].split("_", 1)[1].encode() not in row.secret


class TestMoreEvents:
    async def test_an_empty_pool_and_a_quota_running_low_then_out(
        self, client, make_tenant, allow_loopback, receiver, sender, engine, clock, sample_mp4
    ):
        tenant = await make_tenant(quota=3)
        hook = await subscribe(
            client, tenant, receiver.url, ["pool.empty", "quota.low", "quota.exceeded"]
        )
        accounts = [await make_account(client, tenant, f"f{i}") for i in range(4)]
        pool = await make_pool(
            client,
            tenant,
            accounts[0],
            timezone="UTC",
            state="active",
            slots=[{"time": "09:00", "account_ids": accounts}],
        )
        await upload_n(client, tenant, pool["id"], sample_mp4, 1)
        clock.set(NINE)
        await engine.run()  # 3 of 4 posted: the 2nd unit leaves 1 (low), the 4th is over
        clock.set(NINE + timedelta(days=1))
        await engine.run()  # nothing queued any more
        await sender.run_until_idle()
        bodies = {
            b["type"]: b["data"] for b in (verify(hook["secret"], r) for r in receiver.requests)
        }
        assert set(bodies) == {"quota.low", "quota.exceeded", "pool.empty"}
        assert bodies["quota.low"]["quota"] == {"limit": 3, "remaining": 1}
        assert [d["reason"] for d in bodies["quota.exceeded"]["deliveries"]] == ["quota_exceeded"]
        assert bodies["pool.empty"]["pool"]["id"] == pool["id"]
        assert "no videos queued" in bodies["pool.empty"]["message"]

    async def test_the_engine_loop_sends_when_woken_by_a_commit(
        self, client, tenant, allow_loopback, receiver, app, clock, settings, sample_mp4
    ):
        import asyncio

        from uploadpools.engine.worker import Engine

        settings.engine_roles = ["webhooks"]
        settings.engine_idle_seconds = 600  # only the wake-up can make it prompt
        st = app.state.uploadpools
        eng = Engine(st.maker, settings, clock, st.storage, st.http, st.fetcher, role="worker")
        rounds = []
        send_once = eng.sender.send_once

        async def counted() -> int:
            rounds.append(1)
            return await send_once()

        eng.sender.send_once = counted  # type: ignore[method-assign]
        await eng.start()
        try:
            async with asyncio.timeout(10):  # the loop has looked once and found nothing
                while not rounds:
                    await asyncio.sleep(0.01)
            hook = await subscribe(client, tenant, receiver.url)
            pool, _ = await active_pool(client, tenant)
            await upload_n(client, tenant, pool["id"], sample_mp4, 1)
            async with asyncio.timeout(10):
                while not receiver.requests:
                    await asyncio.sleep(0.02)
        finally:
            await eng.stop()
        assert verify(hook["secret"], receiver.requests[0])["type"] == "item.queued"
