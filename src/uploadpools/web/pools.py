"""Upload Pools pages: the list, the pool form, the pool page with its queue panel."""

from __future__ import annotations

import json
import zoneinfo
from datetime import datetime, timedelta
from functools import cache
from pathlib import PurePath
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.responses import JSONResponse, RedirectResponse, Response

from uploadpools.accounts.service import AccountService
from uploadpools.deps import AppState, SessionDep, StateDep
from uploadpools.engine.wakeup import notify_change
from uploadpools.exceptions import FieldError, UploadPoolsError, ValidationFailed
from uploadpools.media.service import delete_media
from uploadpools.media.upload import ReceivedUpload
from uploadpools.models import Account, Media, Pool, QueueItem
from uploadpools.pools import forecast
from uploadpools.pools.endpoints import pool_read
from uploadpools.pools.schemas import PoolUpdate, SlotIn, SlotUpdate
from uploadpools.pools.service import PoolService, fire_now
from uploadpools.queue.schemas import ItemFields, ItemUpdate
from uploadpools.queue.service import QueueService
from uploadpools.queue.upload import enqueue_upload
from uploadpools.web.common import done, safe_next
from uploadpools.web.deps import FormUser, UserDep, rollback
from uploadpools.web.poolform import PoolForm, SlotRow, by_field, errors_from_pydantic
from uploadpools.web.render import page
from uploadpools.web.session import SignedIn

router = APIRouter(include_in_schema=False)
QUEUE_PAGE = 500


@cache
def timezones() -> list[str]:
    return sorted(z for z in zoneinfo.available_timezones() if "/" in z or z == "UTC")


async def _accounts(session: AsyncSession, state: AppState, workspace_id: str) -> list[Account]:
    rows, _ = await AccountService(session, state.settings).list(
        workspace_id, limit=1000, cursor=None
    )
    return rows


def runs_dry(view: Any, now: datetime) -> datetime | None:
    """The first firing that will find the queue empty, with the queue as it is."""
    if view.pool.state != "active" or not forecast.firing_slots(view.slots):
        return None
    return forecast.expected_at(view.pool, view.slots, view.queued_count, now)


@router.get("/pools")
async def pools_list(
    request: Request, session: SessionDep, state: StateDep, me: UserDep
) -> Response:
    now = state.clock.now()
    views, _ = await PoolService(session, state.settings).list(
        me.workspace.id, limit=1000, cursor=None
    )
    accounts = {a.id: a for a in await _accounts(session, state, me.workspace.id)}
    rows = [
        {"view": v, "read": pool_read(v), "dry": runs_dry(v, now)}
        for v in sorted(views, key=lambda v: v.pool.name.lower())
    ]
    return page(request, "pools.html", {"rows": rows, "accounts": accounts, "now": now})


# -- the form ---------------------------------------------------------------------------------


def _form_page(
    request: Request,
    form: PoolForm,
    accounts: list[Account],
    *,
    pool: Pool | None,
    errors: dict[str, str] | None = None,
    status: int = 200,
) -> Response:
    return page(
        request,
        "pool_form.html",
        {
            "form": form,
            "pool": pool,
            "accounts": accounts,
            "errors": errors or {},
            "timezones": timezones(),
        },
        status,
    )


@router.get("/pools/new")
async def new_pool_form(
    request: Request, session: SessionDep, state: StateDep, me: UserDep
) -> Response:
    accounts = await _accounts(session, state, me.workspace.id)
    form = PoolForm(slots=[SlotRow(time="09:00", days=["mon", "tue", "wed", "thu", "fri"])])
    if len(accounts) == 1:
        form.slots[0].account_ids = [accounts[0].id]
    return _form_page(request, form, accounts, pool=None)


async def _invalid(
    request: Request,
    session: AsyncSession,
    state: AppState,
    me: SignedIn,
    form: PoolForm,
    pool: Pool | None,
    errors: list[FieldError],
) -> Response:
    await rollback(session, me)
    accounts = await _accounts(session, state, me.workspace.id)
    return _form_page(request, form, accounts, pool=pool, errors=by_field(errors), status=422)


@router.post("/pools/new")
async def create_pool(
    request: Request, session: SessionDep, state: StateDep, me: FormUser
) -> Response:
    form = PoolForm.parse(await request.form())
    try:
        data = form.validate()
        pool = await PoolService(session, state.settings).create(
            me.workspace.id, data, state.clock.now()
        )
    except ValidationError as exc:
        return await _invalid(request, session, state, me, form, None, errors_from_pydantic(exc))
    except ValidationFailed as exc:
        return await _invalid(request, session, state, me, form, None, exc.errors)
    await notify_change(session)
    await session.commit()
    state.wake()
    return RedirectResponse(f"/pools/{pool.id}", status_code=303)


@router.get("/pools/{pool_id}/edit")
async def edit_pool_form(
    request: Request, pool_id: str, session: SessionDep, state: StateDep, me: UserDep
) -> Response:
    view = await PoolService(session, state.settings).view(me.workspace.id, pool_id)
    read = pool_read(view)
    form = PoolForm(
        name=view.pool.name,
        timezone=view.pool.timezone,
        slots=[SlotRow(s.id, s.time, list(s.days), list(s.account_ids)) for s in read.slots],
    )
    accounts = await _accounts(session, state, me.workspace.id)
    return _form_page(request, form, accounts, pool=view.pool)


@router.post("/pools/{pool_id}/edit")
async def edit_pool(
    request: Request, pool_id: str, session: SessionDep, state: StateDep, me: FormUser
) -> Response:
    svc = PoolService(session, state.settings)
    now = state.clock.now()
    pool = await svc.get(me.workspace.id, pool_id)
    form = PoolForm.parse(await request.form())
    try:
        data = form.validate()
        await svc.update(
            me.workspace.id, pool_id, PoolUpdate(name=data.name, timezone=data.timezone), now
        )
        existing = {s.slot.id for s in (await svc.view(me.workspace.id, pool_id)).slots}
        kept = set()
        for i, (row, slot) in enumerate(zip(form.slots, data.slots, strict=True)):
            try:
                if row.id and row.id in existing:
                    kept.add(row.id)
                    await svc.update_slot(
                        me.workspace.id,
                        pool_id,
                        row.id,
                        SlotUpdate(time=slot.time, days=slot.days, account_ids=slot.account_ids),
                        now,
                    )
                else:
                    new = await svc.add_slot(
                        me.workspace.id, pool_id, SlotIn(**slot.model_dump()), now
                    )
                    kept.add(new.id)
            except ValidationFailed as exc:
                raise ValidationFailed(
                    [FieldError(f"slots.{i}.{e.field}", e.message) for e in exc.errors]
                )
        for slot_id in existing - kept:
            await svc.delete_slot(me.workspace.id, pool_id, slot_id, now)
    except ValidationError as exc:
        return await _invalid(request, session, state, me, form, pool, errors_from_pydantic(exc))
    except ValidationFailed as exc:
        return await _invalid(request, session, state, me, form, pool, exc.errors)
    await notify_change(session)
    await session.commit()
    state.wake()
    return RedirectResponse(f"/pools/{pool_id}", status_code=303)


@router.post("/pools/{pool_id}/state")
async def set_state(
    request: Request,
    pool_id: str,
    session: SessionDep,
    state: StateDep,
    me: FormUser,
    to: Annotated[str, Form()],
    next: Annotated[str, Form()] = "",
) -> Response:
    if to not in ("active", "paused"):
        raise ValidationFailed.one("to", "must be active or paused")
    await PoolService(session, state.settings).update(
        me.workspace.id,
        pool_id,
        PoolUpdate(state=to),
        state.clock.now(),  # type: ignore[arg-type]
    )
    await session.flush()
    await notify_change(session)
    await session.commit()
    state.wake()
    return done(request, safe_next(next, f"/pools/{pool_id}"))


@router.post("/pools/{pool_id}/delete")
async def delete_pool(
    request: Request, pool_id: str, session: SessionDep, state: StateDep, me: FormUser
) -> Response:
    media_ids = await PoolService(session, state.settings).delete(
        me.workspace.id, pool_id, force=True
    )
    keys = await delete_media(session, state.storage, media_ids)
    await session.commit()
    for key in keys:
        await state.storage.delete(key)
    return done(request, "/pools")


# -- the pool page ----------------------------------------------------------------------------


async def _pool_page(
    request: Request,
    session: AsyncSession,
    state: AppState,
    me: SignedIn,
    pool_id: str,
    *,
    item_errors: dict[str, dict[str, str]] | None = None,
    status: int = 200,
) -> Response:
    now = state.clock.now()
    svc = PoolService(session, state.settings)
    queue = QueueService(session, state.settings)
    view = await svc.view(me.workspace.id, pool_id)
    pool = view.pool
    read = pool_read(view)
    queued, _ = await queue.list(pool, status="queued", limit=QUEUE_PAGE, cursor=None)
    queued_reads = await queue.read(pool, queued, now, contiguous=True, slots=view.slots)
    recent, _ = await queue.list(pool, status=None, limit=60, cursor=None)
    others = [i for i in recent if i.status != "queued"]
    other_reads = await queue.read(pool, others, now, slots=view.slots)
    accounts = {a.id: a for a in await _accounts(session, state, me.workspace.id)}

    # The week calendar: the coming firings in the pool's timezone, today + 6 days.
    coming = await svc.schedule(
        me.workspace.id,
        pool_id,
        limit=min(state.settings.schedule_preview_max, 200),
        now=now,
        assume_active=True,
    )
    skips = (
        forecast.predict_skips(coming, await svc.skip_forecast_input(pool, now), now)
        if coming
        else []
    )
    tz = zoneinfo.ZoneInfo(pool.timezone)
    today = now.astimezone(tz).date()
    week = [today + timedelta(days=n) for n in range(7)]
    calendar: dict[Any, list[dict[str, Any]]] = {d: [] for d in week}
    for c, s in zip(coming, skips, strict=True):
        if c.occurrence.local_date in calendar:
            calendar[c.occurrence.local_date].append({"c": c, "skips": s})

    firings, _ = await svc.firings(me.workspace.id, pool_id, limit=20, cursor=None)
    slot_times = {s.id: s.time for s in read.slots}
    item_ids = {f.item_id for f in firings if f.item_id}
    titles: dict[str, str] = {i.id: i.title for i in queued_reads + other_reads}
    missing = item_ids - set(titles)
    if missing:
        for iid, title in (
            await session.execute(
                select(QueueItem.id, QueueItem.title).where(QueueItem.id.in_(missing))
            )
        ).all():
            titles[iid] = title
    return page(
        request,
        "pool.html",
        {
            "pool": pool,
            "read": read,
            "queued": queued_reads,
            "others": other_reads,
            "skipped_count": sum(1 for i in other_reads if i.status == "skipped"),
            "accounts": accounts,
            "calendar": calendar,
            "week": week,
            "today": today,
            "firings": firings,
            "slot_times": slot_times,
            "titles": titles,
            "dry": runs_dry(view, now),
            "item_errors": item_errors or {},
            # Posting in progress: the page refreshes itself until it is done.
            "live": any(i.status == "dispatching" for i in other_reads),
            "now": now,
        },
        status,
    )


@router.get("/pools/{pool_id}")
async def pool_page(
    request: Request, pool_id: str, session: SessionDep, state: StateDep, me: UserDep
) -> Response:
    return await _pool_page(request, session, state, me, pool_id)


@router.post("/pools/{pool_id}/slots/{slot_id}/fire")
async def post_next_now(
    request: Request, pool_id: str, slot_id: str, session: SessionDep, state: StateDep, me: FormUser
) -> Response:
    await fire_now(session, state.settings, me.workspace.id, pool_id, slot_id, state.clock.now())
    await notify_change(session)
    await session.commit()
    state.wake()
    return done(request, f"/pools/{pool_id}#history")


# -- the queue panel --------------------------------------------------------------------------


@router.post("/pools/{pool_id}/upload")
async def upload(
    request: Request, pool_id: str, session: SessionDep, state: StateDep, me: FormUser
) -> Response:
    """One video per request, sent by the drop zone's script with its progress bar.
    Streams to storage through the same receiver as the API; answers JSON."""
    try:
        item = await _receive(request, pool_id, session, state, me)
    except UploadPoolsError as exc:
        if exc.status_code == 404:
            raise
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code)
    return JSONResponse({"id": item.id, "title": item.title}, status_code=201)


async def _receive(
    request: Request, pool_id: str, session: AsyncSession, state: AppState, me: SignedIn
) -> QueueItem:
    def fields_of(received: ReceivedUpload) -> ItemFields:
        if received.stored is None:
            raise ValidationFailed.one("file", "choose a video file")
        title = received.fields.get("title") or PurePath(received.filename or "video").stem
        return ItemFields(title=title[:500])

    async def finish(_pool: Pool, item: QueueItem, _media: Media) -> QueueItem:
        await notify_change(session)
        await session.commit()
        return item

    item = await enqueue_upload(
        request,
        session,
        state.settings,
        state.storage,
        workspace_id=me.workspace.id,
        pool_id=pool_id,
        user_id=me.user.id,
        now=state.clock.now(),
        fields_of=fields_of,
        finish=finish,
    )
    assert isinstance(item, QueueItem)  # fields_of never hands the form back
    state.wake()
    return item


async def _locked_item(
    session: AsyncSession, state: AppState, me: SignedIn, pool_id: str, item_id: str
) -> tuple[Pool, QueueItem, QueueService]:
    pool = await PoolService(session, state.settings).get(me.workspace.id, pool_id, for_update=True)
    queue = QueueService(session, state.settings)
    return pool, await queue.get(pool, item_id), queue


@router.post("/pools/{pool_id}/items/{item_id}/move")
async def move_item(
    request: Request,
    pool_id: str,
    item_id: str,
    session: SessionDep,
    state: StateDep,
    me: FormUser,
    to: Annotated[str, Form()],
) -> Response:
    pool, item, queue = await _locked_item(session, state, me, pool_id, item_id)
    if to.isdigit():
        index = int(to)
    else:
        rank = await queue.repo.rank_of(item)
        moves = {"top": 0, "up": max(0, rank - 1), "down": rank + 1, "bottom": 1 << 30}
        if to not in moves:
            raise ValidationFailed.one("to", "must be top, up, down, bottom or a position")
        index = moves[to]
    await queue.update(pool, item, ItemUpdate(position=index), state.clock.now())
    await session.commit()
    state.wake()
    return done(request, f"/pools/{pool_id}#item-{item_id}")


@router.post("/pools/{pool_id}/items/{item_id}/edit")
async def edit_item(
    request: Request,
    pool_id: str,
    item_id: str,
    session: SessionDep,
    state: StateDep,
    me: FormUser,
    title: Annotated[str, Form()] = "",
    caption: Annotated[str, Form()] = "",
    options: Annotated[str, Form()] = "",
) -> Response:
    pool, item, queue = await _locked_item(session, state, me, pool_id, item_id)
    try:
        parsed = json.loads(options) if options.strip() else {}
        if not isinstance(parsed, dict) or not all(isinstance(v, dict) for v in parsed.values()):
            raise ValueError
    except ValueError:
        await rollback(session, me)
        return await _pool_page(
            request,
            session,
            state,
            me,
            pool_id,
            item_errors={
                item_id: {
                    "options": 'must be a JSON object per platform, e.g. {"tiktok": {"privacy": "public"}}'
                }
            },
            status=422,
        )
    try:
        data = ItemUpdate(title=title, caption=caption, options=parsed)
    except ValidationError as exc:
        await rollback(session, me)
        return await _pool_page(
            request,
            session,
            state,
            me,
            pool_id,
            item_errors={item_id: by_field(errors_from_pydantic(exc))},
            status=422,
        )
    await queue.update(pool, item, data, state.clock.now())
    await session.commit()
    return done(request, f"/pools/{pool_id}#item-{item_id}")


@router.post("/pools/{pool_id}/items/{item_id}/remove")
async def remove_item(
    request: Request, pool_id: str, item_id: str, session: SessionDep, state: StateDep, me: FormUser
) -> Response:
    _pool, item, queue = await _locked_item(session, state, me, pool_id, item_id)
    media_id = await queue.delete(item)
    keys = await delete_media(session, state.storage, [media_id])
    await session.commit()
    for key in keys:
        await state.storage.delete(key)
    state.wake()
    return done(request, f"/pools/{pool_id}#queue")


@router.post("/pools/{pool_id}/items/{item_id}/requeue")
async def requeue_item(
    request: Request,
    pool_id: str,
    item_id: str,
    session: SessionDep,
    state: StateDep,
    me: FormUser,
    to: Annotated[str, Form()] = "back",
) -> Response:
    pool, item, queue = await _locked_item(session, state, me, pool_id, item_id)
    await queue.requeue(pool, item, front=to == "front", now=state.clock.now())
    await session.commit()
    state.wake()
    return done(request, f"/pools/{pool_id}#queue")


@router.post("/pools/{pool_id}/requeue")
async def requeue_all(
    request: Request,
    pool_id: str,
    session: SessionDep,
    state: StateDep,
    me: FormUser,
    to: Annotated[str, Form()] = "back",
) -> Response:
    pool = await PoolService(session, state.settings).get(me.workspace.id, pool_id, for_update=True)
    await QueueService(session, state.settings).requeue_all(
        pool, front=to == "front", now=state.clock.now()
    )
    await session.commit()
    state.wake()
    return done(request, f"/pools/{pool_id}#queue")
