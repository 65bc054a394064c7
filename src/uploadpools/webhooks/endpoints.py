from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel
from starlette.responses import Response

from uploadpools.deps import CurrentWorkspace, Idempotency, NowDep, SessionDep, StateDep
from uploadpools.idempotency import IdempotencyGuard
from uploadpools.kit.pagination import clamp_limit
from uploadpools.kit.responses import commit_response
from uploadpools.models import WebhookDelivery, WebhookEndpoint, WebhookEvent
from uploadpools.schemas import Page
from uploadpools.webhooks.events import render
from uploadpools.webhooks.schemas import (
    AttemptRead,
    SecretRotated,
    WebhookCreate,
    WebhookCreated,
    WebhookDeliveryRead,
    WebhookRead,
)
from uploadpools.webhooks.service import WebhookService

router = APIRouter(prefix="/webhooks", tags=["webhooks"])


def read(e: WebhookEndpoint) -> WebhookRead:
    return WebhookRead(
        id=e.id,
        url=e.url,
        events=list(e.events),
        created_at=e.created_at,
        disabled_at=e.disabled_at,
        disabled_reason=e.disabled_reason,
        previous_secret_expires_at=e.previous_secret_until if e.previous_secret else None,
    )


def delivery_read(public_url: str, d: WebhookDelivery, e: WebhookEvent) -> WebhookDeliveryRead:
    return WebhookDeliveryRead(
        id=d.id,
        event_id=e.id,
        event_type=e.type,
        status=d.status,
        attempts=d.attempts,
        attempt_log=[AttemptRead.model_validate(a) for a in d.log or []],
        next_attempt_at=d.next_attempt_at,
        created_at=d.created_at,
        finished_at=d.finished_at,
        payload=render(public_url, e),
    )


async def commit_secret_response(
    session: SessionDep, idem: IdempotencyGuard, status_code: int, model: BaseModel
) -> Response:
    """Like `commit_response`, but the body kept for an Idempotency-Key replay has the
    secret blanked: it is never stored in plain text, so a replay does not show it."""
    body = model.model_dump_json().encode()
    kept = model.model_copy(update={"secret": None}).model_dump_json().encode()
    await idem.complete(session, status_code, kept)
    await session.commit()
    idem.done()
    return Response(body, status_code=status_code, media_type="application/json")


@router.get("", response_model=Page[WebhookRead])
async def list_webhooks(
    session: SessionDep,
    state: StateDep,
    ws: CurrentWorkspace,
    limit: Annotated[int | None, Query()] = None,
    cursor: str | None = None,
) -> Page[WebhookRead]:
    rows, nxt = await WebhookService(session, state.settings).list(
        ws.workspace_id, limit=clamp_limit(limit), cursor=cursor
    )
    return Page(items=[read(e) for e in rows], next_cursor=nxt)


@router.post("", status_code=201, response_model=WebhookCreated)
async def create_webhook(
    body: WebhookCreate,
    session: SessionDep,
    state: StateDep,
    ws: CurrentWorkspace,
    now: NowDep,
    idem: Idempotency,
) -> Response:
    """Subscribe a URL to events. The answer shows the signing secret, once."""
    endpoint, secret = await WebhookService(session, state.settings).create(
        ws.workspace_id, body.url, body.events, now
    )
    out = WebhookCreated(**read(endpoint).model_dump(), secret=secret)
    return await commit_secret_response(session, idem, 201, out)


@router.delete("/{webhook_id}", status_code=204)
async def delete_webhook(
    webhook_id: str, session: SessionDep, state: StateDep, ws: CurrentWorkspace
) -> Response:
    svc = WebhookService(session, state.settings)
    await svc.delete(await svc.get(ws.workspace_id, webhook_id))
    await session.commit()
    return Response(status_code=204)


@router.post("/{webhook_id}/rotate-secret", response_model=SecretRotated)
async def rotate_secret(
    webhook_id: str,
    session: SessionDep,
    state: StateDep,
    ws: CurrentWorkspace,
    now: NowDep,
    idem: Idempotency,
) -> Response:
    """A new signing secret (shown once). The old one keeps signing for the grace period:
    both signatures are sent in `webhook-signature` meanwhile."""
    svc = WebhookService(session, state.settings)
    endpoint = await svc.get(ws.workspace_id, webhook_id)
    secret = await svc.rotate(endpoint, now)
    out = SecretRotated(
        id=endpoint.id, secret=secret, previous_secret_expires_at=endpoint.previous_secret_until
    )
    return await commit_secret_response(session, idem, 200, out)


@router.get("/{webhook_id}/deliveries", response_model=Page[WebhookDeliveryRead])
async def list_deliveries(
    webhook_id: str,
    session: SessionDep,
    state: StateDep,
    ws: CurrentWorkspace,
    limit: Annotated[int | None, Query()] = None,
    cursor: str | None = None,
) -> Page[WebhookDeliveryRead]:
    """The delivery log, newest first: every attempt's status code or error."""
    svc = WebhookService(session, state.settings)
    endpoint = await svc.get(ws.workspace_id, webhook_id)
    rows, nxt = await svc.deliveries(endpoint, limit=clamp_limit(limit), cursor=cursor)
    public = state.settings.public_url
    return Page(items=[delivery_read(public, d, e) for d, e in rows], next_cursor=nxt)


async def _commit_delivery(
    session: SessionDep,
    state: StateDep,
    idem: IdempotencyGuard,
    d: WebhookDelivery,
    e: WebhookEvent,
) -> Response:
    response = await commit_response(
        session, idem, 202, delivery_read(state.settings.public_url, d, e)
    )
    state.wake()
    return response


@router.post(
    "/{webhook_id}/deliveries/{delivery_id}/resend",
    status_code=202,
    response_model=WebhookDeliveryRead,
)
async def resend_delivery(
    webhook_id: str,
    delivery_id: str,
    session: SessionDep,
    state: StateDep,
    ws: CurrentWorkspace,
    now: NowDep,
    idem: Idempotency,
) -> Response:
    """ "Send again": a new delivery of the same event (same `webhook-id`), sent now."""
    svc = WebhookService(session, state.settings)
    endpoint = await svc.get(ws.workspace_id, webhook_id)
    d, e = await svc.resend(endpoint, delivery_id, now)
    return await _commit_delivery(session, state, idem, d, e)


@router.post("/{webhook_id}/test", status_code=202, response_model=WebhookDeliveryRead)
async def send_test(
    webhook_id: str,
    session: SessionDep,
    state: StateDep,
    ws: CurrentWorkspace,
    now: NowDep,
    idem: Idempotency,
) -> Response:
    """ "Send test": a `webhook.test` event to this endpoint alone."""
    svc = WebhookService(session, state.settings)
    endpoint = await svc.get(ws.workspace_id, webhook_id)
    d, e = await svc.send_test(endpoint, now)
    return await _commit_delivery(session, state, idem, d, e)
