"""The Webhooks page: status, rotate (new secret once, old one until the grace ends),
"Send test", the delivery log and "Send again" — each through WebhookService, and the
sender picks up what the page queued (a real receiver on 127.0.0.1)."""

from __future__ import annotations

import json
import re
from datetime import timedelta

from sqlalchemy import select
from standardwebhooks import Webhook

from uploadpools.models import WebhookDelivery, WebhookEndpoint
from uploadpools.store.engine import session_scope
from uploadpools.webhooks.sender import Sender
from webhelpers import sign_in

SECRET = re.compile(r'<code class="secret">(whsec_[^<]+)</code>')


async def subscribe(client, csrf, url):  # type: ignore[no-untyped-def]
    r = await client.post("/webhooks", data={"csrf": csrf, "url": url, "events": ["pool.empty"]})
    assert r.status_code == 200, r.text
    page = (await client.get("/webhooks")).text
    hook = re.search(r"/webhooks/([^/]+)/rotate", page).group(1)
    return hook, SECRET.search(r.text).group(1)


async def deliveries(app, hook):  # type: ignore[no-untyped-def]
    async with app.state.uploadpools.maker() as s:
        return list(
            (
                await s.scalars(
                    select(WebhookDelivery)
                    .where(WebhookDelivery.endpoint_id == hook)
                    .order_by(WebhookDelivery.id)
                )
            ).all()
        )


class TestWebhooksPage:
    async def test_status_shows_active_then_disabled_with_why(self, client, app, tenant, clock):
        csrf = await sign_in(client, tenant.email)
        hook, _ = await subscribe(client, csrf, "https://93.184.216.34/h")
        page = (await client.get("/webhooks")).text
        assert ">active</span>" in page and "disabled" not in page
        async with session_scope(app.state.uploadpools.maker) as s:
            row = await s.get(WebhookEndpoint, hook)
            row.disabled_at = clock.now()
            row.disabled_reason = "the receiver answered 410 Gone"
        page = (await client.get("/webhooks")).text
        assert ">disabled</span>" in page and "410 Gone" in page
        assert "410 Gone" in (await client.get(f"/webhooks/{hook}/deliveries")).text

    async def test_rotate_shows_the_new_secret_once_and_the_grace_end(
        self, client, app, tenant, clock
    ):
        csrf = await sign_in(client, tenant.email)
        hook, old = await subscribe(client, csrf, "https://93.184.216.34/h")
        r = await client.post(f"/webhooks/{hook}/rotate", data={"csrf": csrf})
        assert r.status_code == 200
        new = SECRET.search(r.text).group(1)
        assert new != old
        until = app.state.uploadpools.settings.webhook_secret_grace_hours
        expected = (clock.now() + timedelta(hours=until)).strftime("%a %-d %b %H:%M")
        assert re.search(r'id="grace-until">([^<]+)<', r.text).group(1) == f"{expected} UTC"
        assert "whsec_" not in (await client.get("/webhooks")).text

    async def test_send_test_and_send_again_are_delivered_by_the_sender(
        self, client, app, tenant, clock, allow_loopback, receiver
    ):
        csrf = await sign_in(client, tenant.email)
        hook, secret = await subscribe(client, csrf, receiver.url)
        assert "No deliveries yet." in (await client.get(f"/webhooks/{hook}/deliveries")).text
        r = await client.post(f"/webhooks/{hook}/test", data={"csrf": csrf})
        assert r.status_code == 303 and r.headers["location"] == f"/webhooks/{hook}/deliveries"
        [first] = await deliveries(app, hook)
        assert first.status == "pending" and first.next_attempt_at == clock.now()

        st = app.state.uploadpools
        receiver.answer(500, b"down")
        await Sender(st.maker, st.settings, clock, st.http).send_once()
        page = (await client.get(f"/webhooks/{hook}/deliveries")).text
        assert "webhook.test" in page and "HTTP 500" in page and ">pending</span>" in page

        r = await client.post(f"/webhooks/{hook}/deliveries/{first.id}/resend", data={"csrf": csrf})
        assert r.status_code == 303
        again = [d for d in await deliveries(app, hook) if d.id != first.id]
        assert [d.status for d in again] == ["pending"]
        receiver.answer(200, b"ok")
        await Sender(st.maker, st.settings, clock, st.http).send_once()
        page = (await client.get(f"/webhooks/{hook}/deliveries")).text
        assert ">delivered</span>" in page and "HTTP 200" in page
        # The same event both times, signed with the subscription's secret.
        bodies = [Webhook(secret).verify(q["body"], q["headers"]) for q in receiver.requests]
        assert [b["type"] for b in bodies] == ["webhook.test", "webhook.test"]
        assert len({json.dumps(b, sort_keys=True) for b in bodies}) == 1
