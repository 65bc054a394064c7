"""Outbound webhook subscriptions, as the web page needs them.

Deliberately minimal (rows of `WebhookEndpoint`, nothing sent): the webhooks service is
being built separately, and these three functions are the one place to switch to it."""

from __future__ import annotations

import secrets
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from uploadpools.config import Settings
from uploadpools.exceptions import NotFound, ValidationFailed
from uploadpools.kit.crypto import SecretBox
from uploadpools.kit.netguard import DestinationRefused, resolve_and_check
from uploadpools.models import WebhookEndpoint

EVENTS = (
    "item.queued",
    "item.dispatched",
    "item.skipped",
    "delivery.posted",
    "delivery.skipped",
    "pool.empty",
    "pool.running_low",
    "quota.low",
    "quota.exceeded",
    "account.needs_reauth",
    "firing.missed",
)


async def list_webhooks(session: AsyncSession, workspace_id: str) -> list[WebhookEndpoint]:
    return list(
        (
            await session.scalars(
                select(WebhookEndpoint)
                .where(WebhookEndpoint.workspace_id == workspace_id)
                .order_by(WebhookEndpoint.id)
            )
        ).all()
    )


async def create_webhook(
    session: AsyncSession,
    settings: Settings,
    workspace_id: str,
    url: str,
    events: list[str],
    now: datetime,
) -> tuple[WebhookEndpoint, str]:
    """The subscription and its signing secret (shown once; stored encrypted)."""
    url = url.strip()
    if not url.startswith(("https://", "http://")):
        raise ValidationFailed.one("url", "must be an http(s) URL")
    try:
        await resolve_and_check(url, settings.allowed_networks)
    except DestinationRefused as exc:
        raise ValidationFailed.one("url", str(exc))
    unknown = [e for e in events if e not in EVENTS]
    if unknown or not events:
        raise ValidationFailed.one("events", "choose at least one of the listed events")
    secret = "whsec_" + secrets.token_urlsafe(24)
    row = WebhookEndpoint(
        workspace_id=workspace_id,
        url=url,
        events=events,
        secret=SecretBox(settings.secret()).encrypt({"secret": secret}),
        created_at=now,
    )
    session.add(row)
    await session.flush()
    return row, secret


async def delete_webhook(session: AsyncSession, workspace_id: str, webhook_id: str) -> None:
    row = await session.scalar(
        select(WebhookEndpoint).where(
            WebhookEndpoint.id == webhook_id, WebhookEndpoint.workspace_id == workspace_id
        )
    )
    if row is None:
        raise NotFound("no such webhook")
    await session.delete(row)
