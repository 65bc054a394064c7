"""Outbound webhook subscriptions as the web page needs them: the webhooks service's."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from uploadpools.config import Settings
from uploadpools.exceptions import FieldError, ValidationFailed
from uploadpools.models import WebhookDelivery, WebhookEndpoint, WebhookEvent
from uploadpools.webhooks.events import EVENT_TYPES as EVENTS
from uploadpools.webhooks.service import WebhookService

__all__ = [
    "EVENTS",
    "create_webhook",
    "delete_webhook",
    "delivery_log",
    "list_webhooks",
    "resend",
    "rotate_secret",
    "send_test",
]

_PAGE = 500


async def list_webhooks(
    session: AsyncSession, settings: Settings, workspace_id: str
) -> list[WebhookEndpoint]:
    rows, _ = await WebhookService(session, settings).list(workspace_id, limit=_PAGE, cursor=None)
    return rows


async def create_webhook(
    session: AsyncSession,
    settings: Settings,
    workspace_id: str,
    url: str,
    events: list[str],
    now: datetime,
) -> tuple[WebhookEndpoint, str]:
    """The subscription and its signing secret (shown once; stored encrypted)."""
    try:
        return await WebhookService(session, settings).create(
            workspace_id, url.strip(), events, now
        )
    except ValidationFailed as exc:
        # `events.3` → the events fieldset: the page shows one message per field.
        raise ValidationFailed(
            [FieldError(e.field.split(".")[0], e.message) for e in exc.errors]
        ) from exc


async def delete_webhook(
    session: AsyncSession, settings: Settings, workspace_id: str, webhook_id: str
) -> None:
    service = WebhookService(session, settings)
    await service.delete(await service.get(workspace_id, webhook_id))


async def rotate_secret(
    session: AsyncSession, settings: Settings, workspace_id: str, webhook_id: str, now: datetime
) -> tuple[WebhookEndpoint, str]:
    """The new secret (shown once); the old one signs too until `previous_secret_until`."""
    service = WebhookService(session, settings)
    endpoint = await service.get(workspace_id, webhook_id)
    return endpoint, await service.rotate(endpoint, now)


async def send_test(
    session: AsyncSession, settings: Settings, workspace_id: str, webhook_id: str, now: datetime
) -> WebhookDelivery:
    service = WebhookService(session, settings)
    delivery, _ = await service.send_test(await service.get(workspace_id, webhook_id), now)
    return delivery


async def delivery_log(
    session: AsyncSession, settings: Settings, workspace_id: str, webhook_id: str
) -> tuple[WebhookEndpoint, list[dict[str, Any]]]:
    """The subscription and its latest deliveries, newest first, as the page shows them."""
    service = WebhookService(session, settings)
    endpoint = await service.get(workspace_id, webhook_id)
    rows, _ = await service.deliveries(endpoint, limit=_PAGE, cursor=None)
    return endpoint, [_shown(d, e) for d, e in rows]


async def resend(
    session: AsyncSession,
    settings: Settings,
    workspace_id: str,
    webhook_id: str,
    delivery_id: str,
    now: datetime,
) -> WebhookDelivery:
    service = WebhookService(session, settings)
    delivery, _ = await service.resend(
        await service.get(workspace_id, webhook_id), delivery_id, now
    )
    return delivery


def _shown(d: WebhookDelivery, e: WebhookEvent) -> dict[str, Any]:
    return {
        "id": d.id,
        "event": e.type,
        "status": d.status,
        "created_at": d.created_at,
        "next_attempt_at": d.next_attempt_at if d.status == "pending" else None,
        "attempts": [
            {
                "at": datetime.fromisoformat(a["at"]) if a.get("at") else None,
                "status_code": a.get("status_code"),
                "error": a.get("error"),
            }
            for a in d.log
        ],
    }
