"""The engine role that sends the outbox (`engine_roles` "webhooks").

Same claim pattern as the dispatcher: due deliveries are claimed in one short transaction
(`FOR UPDATE SKIP LOCKED`, a lease and a fencing token), POSTed with no transaction open,
and the attempt recorded in a second transaction only while the token is still ours.

Per attempt: the body is the event rendered (`events.render`), signed per Standard
Webhooks with the endpoint's secret (and, during a rotation's grace period, the previous
secret too: two space-separated signatures). `webhook-id` is the event id on every
attempt and every resend, so receivers can de-duplicate. `webhook-timestamp` is the
sending host's wall clock (receivers compare it with theirs), not the scheduling clock.

Outcomes: 2xx delivered; 410 Gone disables the endpoint (and tells the workspace);
anything else (other statuses, timeouts, connection errors, refused destinations) is
retried on `RETRY_DELAYS` (with ±10 % jitter; about three days in all), then the delivery
is `failed`. Redirects: 307/308 are followed (at most 3 hops), each hop checked against
the private-network guard first; other 3xx are failed attempts (following them would
turn the POST into a GET).
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import urljoin

import anyio
import httpx
from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from standardwebhooks import Webhook

from uploadpools.config import Settings
from uploadpools.kit.clock import Clock, SystemClock
from uploadpools.kit.netguard import DestinationRefused, resolve_and_check
from uploadpools.models import WebhookDelivery, WebhookEndpoint, WebhookEvent
from uploadpools.notifications.service import notify
from uploadpools.ops import metrics
from uploadpools.store.engine import session_scope
from uploadpools.webhooks.events import iso, render
from uploadpools.webhooks.service import WebhookService

log = logging.getLogger(__name__)

# Wait after the n-th failed attempt (attempt n+1 follows it). 10 attempts over ~75 h.
RETRY_DELAYS = (
    timedelta(seconds=5),
    timedelta(minutes=5),
    timedelta(minutes=30),
    timedelta(hours=2),
    timedelta(hours=5),
    timedelta(hours=10),
    timedelta(hours=14),
    timedelta(hours=20),
    timedelta(hours=24),
)
MAX_ATTEMPTS = len(RETRY_DELAYS) + 1
MAX_REDIRECTS = 3
_MAX_BODY = 16 * 1024


def retry_delay(failed_attempts: int) -> timedelta | None:
    """The wait after `failed_attempts` failures, jittered; None when they are spent."""
    if failed_attempts >= MAX_ATTEMPTS:
        return None
    return RETRY_DELAYS[failed_attempts - 1] * random.uniform(0.9, 1.1)


@dataclass
class Claimed:
    delivery_id: str
    token: int
    endpoint_id: str
    url: str
    msg_id: str
    body: bytes
    secrets: list[str]


@dataclass
class Result:
    status_code: int | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


class Sender:
    def __init__(
        self,
        maker: async_sessionmaker[AsyncSession],
        settings: Settings,
        clock: Clock,
        http: httpx.AsyncClient,
        *,
        wall: Clock | None = None,
        concurrency: int = 8,
    ) -> None:
        self.maker = maker
        self.settings = settings
        self.clock = clock
        self.wall = wall or SystemClock()
        self.http = http
        self._sem = asyncio.Semaphore(concurrency)
        self.concurrency = concurrency

    @property
    def lease(self) -> timedelta:
        return timedelta(seconds=self.settings.webhook_timeout_s * (MAX_REDIRECTS + 1) + 30)

    async def next_due(self) -> datetime | None:
        async with self.maker() as session:
            pending = await session.scalar(
                select(WebhookDelivery.next_attempt_at)
                .where(WebhookDelivery.status == "pending")
                .order_by(WebhookDelivery.next_attempt_at)
                .limit(1)
            )
            lease = await session.scalar(
                select(WebhookDelivery.lease_until)
                .where(WebhookDelivery.status == "sending")
                .order_by(WebhookDelivery.lease_until)
                .limit(1)
            )
        found = [t for t in (pending, lease) if t is not None]
        return min(found) if found else None

    async def claim(self, limit: int) -> list[Claimed]:
        now = self.clock.now()
        out: list[Claimed] = []
        async with session_scope(self.maker) as session:
            rows = list(
                (
                    await session.scalars(
                        select(WebhookDelivery)
                        .where(
                            or_(
                                (WebhookDelivery.status == "pending")
                                & (WebhookDelivery.next_attempt_at <= now),
                                (WebhookDelivery.status == "sending")
                                & (WebhookDelivery.lease_until < now),
                            )
                        )
                        .order_by(WebhookDelivery.next_attempt_at, WebhookDelivery.id)
                        .limit(limit)
                        .with_for_update(skip_locked=True)
                    )
                ).all()
            )
            if not rows:
                return out
            endpoints = {
                e.id: e
                for e in (
                    await session.scalars(
                        select(WebhookEndpoint).where(
                            WebhookEndpoint.id.in_({d.endpoint_id for d in rows})
                        )
                    )
                ).all()
            }
            evs = {
                e.id: e
                for e in (
                    await session.scalars(
                        select(WebhookEvent).where(WebhookEvent.id.in_({d.event_id for d in rows}))
                    )
                ).all()
            }
            svc = WebhookService(session, self.settings)
            for d in rows:
                endpoint, event = endpoints[d.endpoint_id], evs[d.event_id]
                if endpoint.disabled_at is not None:
                    d.status = "failed"
                    d.finished_at = now
                    d.next_attempt_at = d.lease_until = None
                    d.log = [
                        *d.log,
                        {"at": iso(now), "status_code": None, "error": "the webhook is disabled"},
                    ]
                    continue
                d.status = "sending"
                d.lease_token += 1
                d.lease_until = now + self.lease
                d.attempts += 1
                keys = svc.secrets_of(endpoint, now)
                body = json.dumps(
                    render(self.settings.public_url, event),
                    separators=(",", ":"),
                    ensure_ascii=False,
                ).encode()
                out.append(
                    Claimed(
                        d.id,
                        d.lease_token,
                        endpoint.id,
                        endpoint.url,
                        event.id,
                        body,
                        [k for k in (keys.current, keys.previous) if k],
                    )
                )
        return out

    async def send_once(self) -> int:
        claimed = await self.claim(self.concurrency * 2)
        if claimed:
            await asyncio.gather(*(self._run(c) for c in claimed))
        return len(claimed)

    async def run_until_idle(self, max_rounds: int = 100) -> int:
        total = 0
        for _ in range(max_rounds):
            n = await self.send_once()
            total += n
            if n == 0:
                break
        return total

    async def _run(self, c: Claimed) -> None:
        async with self._sem:
            at = self.clock.now()
            try:
                result = await self._post(c)
            except Exception as exc:  # a bug here must not lose the delivery's story
                log.exception("webhook delivery %s failed unexpectedly", c.delivery_id)
                result = Result(error=f"unexpected error: {type(exc).__name__}")
            await self._record(c, at, result)

    def headers(self, c: Claimed) -> dict[str, str]:
        ts = self.wall.now()
        return {
            "content-type": "application/json",
            "user-agent": "uploadpools-webhooks/1",
            "webhook-id": c.msg_id,
            "webhook-timestamp": str(int(ts.timestamp())),
            "webhook-signature": " ".join(Webhook(s).sign(c.msg_id, ts, c.body) for s in c.secrets),
        }

    async def _post(self, c: Claimed) -> Result:
        url = c.url
        headers = self.headers(c)
        timeout = self.settings.webhook_timeout_s
        try:
            with anyio.fail_after(timeout):
                for _hop in range(MAX_REDIRECTS + 1):
                    await resolve_and_check(url, self.settings.allowed_networks)
                    request = self.http.build_request(
                        "POST", url, content=c.body, headers=headers, timeout=timeout
                    )
                    response = await self.http.send(request, stream=True, follow_redirects=False)
                    try:
                        size = 0
                        async for chunk in response.aiter_bytes():
                            size += len(chunk)
                            if size >= _MAX_BODY:
                                break
                    finally:
                        with anyio.CancelScope(shield=True):
                            await response.aclose()
                    status = response.status_code
                    location = response.headers.get("location")
                    if status in (307, 308) and location:
                        url = urljoin(url, location)
                        continue
                    if 300 <= status < 400:
                        return Result(status, "a redirect other than 307/308 is not followed")
                    return Result(
                        status, None if 200 <= status < 300 or status == 410 else f"HTTP {status}"
                    )
                return Result(None, f"more than {MAX_REDIRECTS} redirects")
        except DestinationRefused as exc:
            return Result(None, f"refused: {exc}")
        except (TimeoutError, httpx.TimeoutException):
            return Result(None, f"no answer within {timeout:g} s")
        except httpx.HTTPError as exc:
            return Result(None, f"could not connect: {str(exc) or type(exc).__name__}")

    async def _record(self, c: Claimed, at: datetime, result: Result) -> None:
        outcome = await self._record_attempt(c, at, result)
        if outcome is not None:  # counted once committed
            metrics.WEBHOOK_ATTEMPTS.labels(outcome).inc()

    async def _record_attempt(self, c: Claimed, at: datetime, result: Result) -> str | None:
        """The attempt's outcome (delivered, gone, retry, failed); None when fenced off."""
        now = self.clock.now()
        async with session_scope(self.maker) as session:
            d = await session.scalar(
                select(WebhookDelivery)
                .where(WebhookDelivery.id == c.delivery_id, WebhookDelivery.lease_token == c.token)
                .with_for_update()
            )
            if d is None or d.status != "sending":
                log.warning("webhook delivery %s: lease lost, attempt not recorded", c.delivery_id)
                return None
            d.log = [
                *d.log,
                {"at": iso(at), "status_code": result.status_code, "error": result.error},
            ]
            d.lease_until = None
            if result.ok:
                d.status = "delivered"
                d.finished_at = now
                d.next_attempt_at = None
                return "delivered"
            if result.status_code == 410:
                d.status = "failed"
                d.finished_at = now
                d.next_attempt_at = None
                await self._disable(session, c.endpoint_id, now)
                return "gone"
            delay = retry_delay(d.attempts)
            if delay is None:
                d.status = "failed"
                d.finished_at = now
                d.next_attempt_at = None
                return "failed"
            d.status = "pending"
            d.next_attempt_at = now + delay
            return "retry"

    async def _disable(self, session: AsyncSession, endpoint_id: str, now: datetime) -> None:
        endpoint = await session.get(WebhookEndpoint, endpoint_id)
        if endpoint is None or endpoint.disabled_at is not None:
            return
        endpoint.disabled_at = now
        endpoint.disabled_reason = "the receiver answered 410 Gone"
        await notify(
            session,
            workspace_id=endpoint.workspace_id,
            level="warning",
            kind="webhook.disabled",
            message=(
                f"The webhook to {_shown(endpoint.url)} was disabled: its receiver answered "
                "410 Gone. Create it again to resume."
            ),
            now=now,
        )


def _shown(url: str) -> str:
    try:
        u = httpx.URL(url)
    except httpx.InvalidURL:
        return "its URL"
    port = f":{u.port}" if u.port is not None else ""
    return f"{u.scheme}://{u.host}{port}{u.path}"
