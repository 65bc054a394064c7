"""Outbound webhook subscriptions as the web page needs them: the webhooks service's."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from uploadpools.config import Settings
from uploadpools.exceptions import FieldError, ValidationFailed
from uploadpools.models import WebhookEndpoint
from uploadpools.webhooks.events import EVENT_TYPES as EVENTS
from uploadpools.webhooks.service import WebhookService

__all__ = ["EVENTS", "create_webhook", "delete_webhook", "list_webhooks"]

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
