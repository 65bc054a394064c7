"""The outbox. `emit` is called inside the transaction that makes the change, so an event
exists exactly when its cause was committed. It writes nothing (and costs one indexed
query per workspace and transaction) when no endpoint of the workspace subscribes.

Stored `data` holds ids and names; links (`url`) under the public URL are added when the
body is rendered for sending (`render`), so they follow the configured public URL.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Protocol

from sqlalchemy import bindparam, insert, select
from sqlalchemy import event as sa_event
from sqlalchemy.ext.asyncio import AsyncSession

from uploadpools.engine.wakeup import notify_change
from uploadpools.kit.ids import new_id
from uploadpools.models import (
    Account,
    Delivery,
    Pool,
    QueueItem,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookEvent,
)

EVENT_TYPES = (
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
TEST_EVENT = "webhook.test"
# Notifications whose kind is itself the event: emitted by the notification writers.
NOTICE_EVENTS = frozenset(
    {"pool.empty", "pool.running_low", "quota.low", "account.needs_reauth", "firing.missed"}
)

_CACHE = "uploadpools.webhook_subscribers"
_WAKE = "uploadpools.webhook_wake"
# In-process senders to wake after a commit that wrote events (other processes hear NOTIFY).
_wakers: set[Callable[[], None]] = set()


def add_waker(fn: Callable[[], None]) -> None:
    _wakers.add(fn)


def remove_waker(fn: Callable[[], None]) -> None:
    _wakers.discard(fn)


def _wake_all(_session: Any) -> None:
    for fn in list(_wakers):
        fn()


def iso(dt: datetime | None) -> str | None:
    return None if dt is None else dt.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _tx_cache(session: AsyncSession) -> dict[str, list[tuple[str, list[str]]]]:
    """The subscribers cache of the session's current transaction (a new one per transaction)."""
    tx = session.sync_session.get_transaction()
    cached = session.info.get(_CACHE)
    if cached is None or cached[0] is not tx:
        cached = (tx, {})
        session.info[_CACHE] = cached
    subs: dict[str, list[tuple[str, list[str]]]] = cached[1]
    return subs


async def _subscribers(session: AsyncSession, workspace_id: str) -> list[tuple[str, list[str]]]:
    """Active endpoints of the workspace, looked up once per transaction."""
    subs = _tx_cache(session)
    if workspace_id not in subs:
        rows = await session.execute(
            select(WebhookEndpoint.id, WebhookEndpoint.events).where(
                WebhookEndpoint.workspace_id == workspace_id,
                WebhookEndpoint.disabled_at.is_(None),
            )
        )
        subs[workspace_id] = [(r[0], list(r[1] or [])) for r in rows.all()]
    return subs[workspace_id]


_endpoints = WebhookEndpoint.__table__
_ACTIVE_ENDPOINTS = select(_endpoints.c.workspace_id, _endpoints.c.id, _endpoints.c.events).where(
    _endpoints.c.workspace_id.in_(bindparam("ws", expanding=True)),
    _endpoints.c.disabled_at.is_(None),
)


async def _prefetch_subscribers(session: AsyncSession, workspace_ids: set[str]) -> None:
    """Fill `_subscribers`' per-transaction cache for several workspaces in one query."""
    subs = _tx_cache(session)
    wanted = sorted(workspace_ids - subs.keys())
    if not wanted:
        return
    for ws in wanted:
        subs[ws] = []
    conn = await session.connection()
    for ws, eid, evs in (await conn.execute(_ACTIVE_ENDPOINTS, {"ws": wanted})).all():
        subs[ws].append((eid, list(evs or [])))


async def listening(session: AsyncSession, workspace_ids: set[str]) -> dict[str, set[str]]:
    """The event types some active endpoint of each workspace subscribes to (one query for
    all of them, then cached for the transaction), so callers build only events that
    will be written."""
    await _prefetch_subscribers(session, workspace_ids)
    return {
        ws: {t for _, evs in await _subscribers(session, ws) for t in evs} for ws in workspace_ids
    }


async def emit_many(
    session: AsyncSession, type_: str, events: list[tuple[str, dict[str, Any]]], now: datetime
) -> None:
    """`emit` for many events of one type, `(workspace_id, data)` each, in order: one
    subscriber look-up and two multi-row inserts however many there are."""
    if not events:
        return
    await _prefetch_subscribers(session, {ws for ws, _ in events})
    event_rows: list[dict[str, Any]] = []
    delivery_rows: list[dict[str, Any]] = []
    for workspace_id, data in events:
        targets = [eid for eid, evs in await _subscribers(session, workspace_id) if type_ in evs]
        if not targets:
            continue
        event_id = new_id()
        event_rows.append(
            dict(id=event_id, workspace_id=workspace_id, type=type_, data=data, created_at=now)
        )
        delivery_rows += _delivery_rows(event_id, targets, now)
    if not event_rows:
        return
    await session.execute(insert(WebhookEvent.__table__), event_rows)
    await session.execute(insert(WebhookDelivery.__table__), delivery_rows)
    await _wake_after_commit(session)


async def _wake_after_commit(session: AsyncSession) -> None:
    tx = session.sync_session.get_transaction()
    if session.info.get(_WAKE) is not tx:  # once per transaction
        session.info[_WAKE] = tx
        sa_event.listen(session.sync_session, "after_commit", _wake_all, once=True)
        await notify_change(session)


async def emit(
    session: AsyncSession,
    workspace_id: str,
    type_: str,
    data: dict[str, Any],
    now: datetime,
    *,
    endpoint_ids: list[str] | None = None,
) -> str | None:
    """Write the event and one pending delivery per subscribed endpoint (or to the given
    endpoints, for "send test"). Returns the event id, or None when nobody listens."""
    if endpoint_ids is None:
        targets = [
            eid for eid, events in await _subscribers(session, workspace_id) if type_ in events
        ]
    else:
        targets = endpoint_ids
    if not targets:
        return None
    event_id = new_id()
    await session.execute(
        insert(WebhookEvent.__table__),
        [dict(id=event_id, workspace_id=workspace_id, type=type_, data=data, created_at=now)],
    )
    await session.execute(
        insert(WebhookDelivery.__table__),
        _delivery_rows(event_id, targets, now),
    )
    await _wake_after_commit(session)
    return event_id


# -- payload pieces (ids and names; `render` adds the links) --------------------------------


class _Named(Protocol):
    @property
    def id(self) -> str: ...
    @property
    def name(self) -> str: ...


def pool_data(pool: _Named) -> dict[str, Any]:
    return {"id": pool.id, "name": pool.name}


def item_data(item: QueueItem) -> dict[str, Any]:
    return {
        "id": item.id,
        "pool_id": item.pool_id,
        "title": item.title,
        "caption": item.caption,
        "status": item.status,
        "skip_reason": item.skip_reason,
        "skip_detail": item.skip_detail,
        "enqueued_at": iso(item.enqueued_at),
        "dispatched_at": iso(item.dispatched_at),
    }


def queued_item_data(row: dict[str, Any]) -> dict[str, Any]:
    """`item_data` of an item just queued, from the row written for it."""
    return {
        "id": row["id"],
        "pool_id": row["pool_id"],
        "title": row["title"],
        "caption": row["caption"],
        "status": "queued",
        "skip_reason": None,
        "skip_detail": None,
        "enqueued_at": iso(row["enqueued_at"]),
        "dispatched_at": None,
    }


def delivery_data(d: Delivery) -> dict[str, Any]:
    return {
        "id": d.id,
        "item_id": d.item_id,
        "firing_id": d.firing_id,
        "account_id": d.account_id,
        "platform": d.platform,
        "status": d.status,
        "reason": d.reason,
        "detail": d.detail,
        "remote_id": d.remote_id,
        "remote_url": d.remote_url,
        "attempts": d.attempts,
        "finished_at": iso(d.finished_at),
    }


def account_data(a: Account) -> dict[str, Any]:
    return {"id": a.id, "name": a.name, "platform": a.platform, "status": a.status}


async def emit_notice(
    session: AsyncSession,
    *,
    workspace_id: str,
    kind: str,
    level: str,
    message: str,
    now: datetime,
    pool_id: str | None,
    item_id: str | None = None,
    extra: dict[str, Any] | None = None,
) -> None:
    """The event of a notification whose kind is an event (`NOTICE_EVENTS`)."""
    if kind not in NOTICE_EVENTS:
        return
    if not any(kind in ev for _, ev in await _subscribers(session, workspace_id)):
        return
    data: dict[str, Any] = {"message": message, "level": level}
    if pool_id is not None:
        pool = await session.get(Pool, pool_id)
        if pool is not None:
            data["pool"] = pool_data(pool)
    if item_id is not None:
        item = await session.get(QueueItem, item_id)
        if item is not None:
            data["item"] = item_data(item)
    data.update(extra or {})
    await emit(session, workspace_id, kind, data, now)


def render(public_url: str, event: WebhookEvent) -> dict[str, Any]:
    """The body sent: `{id, type, timestamp, data}` with API links added to the objects."""
    api = public_url.rstrip("/") + "/api/v1"
    data = {k: (dict(v) if isinstance(v, dict) else v) for k, v in (event.data or {}).items()}
    pool = data.get("pool")
    if isinstance(pool, dict) and pool.get("id"):
        pool["url"] = f"{api}/pools/{pool['id']}"
    item = data.get("item")
    if isinstance(item, dict) and item.get("id") and item.get("pool_id"):
        item["url"] = f"{api}/pools/{item['pool_id']}/videos/{item['id']}"
    account = data.get("account")
    if isinstance(account, dict) and account.get("id"):
        account["url"] = f"{api}/accounts/{account['id']}"
    return {"id": event.id, "type": event.type, "timestamp": iso(event.created_at), "data": data}


def _delivery_rows(event_id: str, targets: list[str], now: datetime) -> list[dict[str, Any]]:
    """One pending outbox delivery per endpoint for a new event."""
    return [
        dict(
            id=new_id(),
            event_id=event_id,
            endpoint_id=eid,
            status="pending",
            attempts=0,
            next_attempt_at=now,
            lease_token=0,
            lease_until=None,
            log=[],
            created_at=now,
            finished_at=None,
        )
        for eid in targets
    ]
