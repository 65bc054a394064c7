"""Subscriptions: create (secret shown once), list, delete, rotate the secret, the
delivery log, "send again" and "send test". Services never commit; the edge does."""

from __future__ import annotations

import base64
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from uploadpools.config import Settings
from uploadpools.exceptions import FieldError, NotFound, ValidationFailed
from uploadpools.kit.crypto import SecretBox
from uploadpools.kit.netguard import DestinationRefused, resolve_and_check
from uploadpools.kit.pagination import decode_cursor, encode_cursor
from uploadpools.models import WebhookDelivery, WebhookEndpoint, WebhookEvent
from uploadpools.webhooks.events import EVENT_TYPES, TEST_EVENT, emit

SECRET_PREFIX = "whsec_"


class WebhookNotFound(NotFound):
    title = "Webhook not found"


def new_secret() -> str:
    """A Standard Webhooks secret: `whsec_` + base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


@dataclass
class Secrets:
    current: str
    previous: str | None  # still valid during the rotation grace period


class WebhookService:
    def __init__(self, session: AsyncSession, settings: Settings) -> None:
        self.session = session
        self.settings = settings
        self.box = SecretBox(settings.secret())

    async def validate(self, url: str, events: list[str]) -> None:
        errors: list[FieldError] = []
        try:
            await resolve_and_check(url, self.settings.allowed_networks)
        except DestinationRefused as exc:
            errors.append(FieldError("url", str(exc)))
        if not events:
            errors.append(FieldError("events", "name at least one event"))
        for i, ev in enumerate(events):
            if ev not in EVENT_TYPES:
                errors.append(
                    FieldError(f"events.{i}", f"unknown event; one of {', '.join(EVENT_TYPES)}")
                )
        if errors:
            raise ValidationFailed(errors)

    async def create(
        self, workspace_id: str, url: str, events: list[str], now: datetime
    ) -> tuple[WebhookEndpoint, str]:
        await self.validate(url, events)
        secret = new_secret()
        endpoint = WebhookEndpoint(
            workspace_id=workspace_id,
            url=url,
            events=list(dict.fromkeys(events)),
            secret=self.box.encrypt({"secret": secret}),
            created_at=now,
        )
        self.session.add(endpoint)
        await self.session.flush()
        return endpoint, secret

    async def list(
        self, workspace_id: str, *, limit: int, cursor: str | None
    ) -> tuple[list[WebhookEndpoint], str | None]:
        q = select(WebhookEndpoint).where(WebhookEndpoint.workspace_id == workspace_id)
        if cursor:
            q = q.where(WebhookEndpoint.id > str(decode_cursor(cursor, 1)[0]))
        rows = list(
            (await self.session.scalars(q.order_by(WebhookEndpoint.id).limit(limit + 1))).all()
        )
        more = len(rows) > limit
        rows = rows[:limit]
        return rows, encode_cursor(rows[-1].id) if more and rows else None

    async def get(self, workspace_id: str, endpoint_id: str) -> WebhookEndpoint:
        endpoint = await self.session.scalar(
            select(WebhookEndpoint).where(
                WebhookEndpoint.id == endpoint_id, WebhookEndpoint.workspace_id == workspace_id
            )
        )
        if endpoint is None:
            raise WebhookNotFound("no such webhook")
        return endpoint

    async def delete(self, endpoint: WebhookEndpoint) -> None:
        await self.session.delete(endpoint)
        await self.session.flush()

    def secrets_of(self, endpoint: WebhookEndpoint, now: datetime) -> Secrets:
        current = str(self.box.decrypt(endpoint.secret)["secret"])
        previous = None
        if (
            endpoint.previous_secret is not None
            and endpoint.previous_secret_until is not None
            and endpoint.previous_secret_until > now
        ):
            previous = str(self.box.decrypt(endpoint.previous_secret)["secret"])
        return Secrets(current, previous)

    async def rotate(self, endpoint: WebhookEndpoint, now: datetime) -> str:
        """A new secret; the current one keeps signing too for the grace period."""
        secret = new_secret()
        endpoint.previous_secret = endpoint.secret
        endpoint.previous_secret_until = now + timedelta(
            hours=self.settings.webhook_secret_grace_hours
        )
        endpoint.secret = self.box.encrypt({"secret": secret})
        await self.session.flush()
        return secret

    async def deliveries(
        self, endpoint: WebhookEndpoint, *, limit: int, cursor: str | None
    ) -> tuple[list[tuple[WebhookDelivery, WebhookEvent]], str | None]:
        q = (
            select(WebhookDelivery, WebhookEvent)
            .join(WebhookEvent, WebhookEvent.id == WebhookDelivery.event_id)
            .where(WebhookDelivery.endpoint_id == endpoint.id)
        )
        if cursor:
            q = q.where(WebhookDelivery.id < str(decode_cursor(cursor, 1)[0]))
        rows = [
            (d, e)
            for d, e in (
                await self.session.execute(q.order_by(WebhookDelivery.id.desc()).limit(limit + 1))
            ).all()
        ]
        more = len(rows) > limit
        rows = rows[:limit]
        return rows, encode_cursor(rows[-1][0].id) if more and rows else None

    async def delivery(
        self, endpoint: WebhookEndpoint, delivery_id: str
    ) -> tuple[WebhookDelivery, WebhookEvent]:
        row = (
            await self.session.execute(
                select(WebhookDelivery, WebhookEvent)
                .join(WebhookEvent, WebhookEvent.id == WebhookDelivery.event_id)
                .where(
                    WebhookDelivery.id == delivery_id,
                    WebhookDelivery.endpoint_id == endpoint.id,
                )
            )
        ).first()
        if row is None:
            raise NotFound("no such delivery of this webhook")
        return row[0], row[1]

    async def resend(
        self, endpoint: WebhookEndpoint, delivery_id: str, now: datetime
    ) -> tuple[WebhookDelivery, WebhookEvent]:
        """ "Send again": a new delivery of the same event (same `webhook-id`), due now."""
        _, event = await self.delivery(endpoint, delivery_id)
        again = WebhookDelivery(
            event_id=event.id,
            endpoint_id=endpoint.id,
            status="pending",
            attempts=0,
            next_attempt_at=now,
            lease_token=0,
            log=[],
            created_at=now,
        )
        self.session.add(again)
        await self.session.flush()
        return again, event

    async def send_test(
        self, endpoint: WebhookEndpoint, now: datetime
    ) -> tuple[WebhookDelivery, WebhookEvent]:
        event_id = await emit(
            self.session,
            endpoint.workspace_id,
            TEST_EVENT,
            {"message": "A test event from Upload Pools.", "webhook": {"id": endpoint.id}},
            now,
            endpoint_ids=[endpoint.id],
        )
        d = await self.session.scalar(
            select(WebhookDelivery).where(
                WebhookDelivery.event_id == event_id, WebhookDelivery.endpoint_id == endpoint.id
            )
        )
        event = await self.session.get(WebhookEvent, event_id)
        assert d is not None and event is not None
        return d, event
