from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from starlette.responses import Response

from uploadpools.deps import (
    CurrentWorkspace,
    Idempotency,
    NowDep,
    SessionDep,
    SettingsDep,
    StateDep,
)
from uploadpools.engine.wakeup import notify_change
from uploadpools.kit.pagination import clamp_limit
from uploadpools.kit.responses import commit_response
from uploadpools.media.service import delete_media
from uploadpools.models import Firing
from uploadpools.pools.forecast import days_from_mask, predict_skips
from uploadpools.pools.repository import PoolView, SlotView
from uploadpools.pools.schemas import (
    FiringRead,
    PoolCreate,
    PoolRead,
    PoolUpdate,
    PredictedSkipRead,
    ScheduleEntry,
    ScheduleRead,
    SlotIn,
    SlotRead,
    SlotUpdate,
)
from uploadpools.pools.service import PoolService, fire_now
from uploadpools.schedule import format_days
from uploadpools.schemas import Page

router = APIRouter(prefix="/pools", tags=["pools"])


def slot_read(v: SlotView) -> SlotRead:
    return SlotRead(
        id=v.slot.id,
        time=v.slot.time,
        days=format_days(days_from_mask(v.slot.days_mask)),
        account_ids=v.account_ids,
        next_fire_at=v.slot.next_fire_at,
    )


def pool_read(v: PoolView) -> PoolRead:
    nexts = [s.slot.next_fire_at for s in v.slots if s.slot.next_fire_at is not None]
    return PoolRead(
        id=v.pool.id,
        name=v.pool.name,
        timezone=v.pool.timezone,
        state=v.pool.state,  # type: ignore[arg-type]
        grace_minutes=v.pool.grace_minutes,
        slots=[slot_read(s) for s in v.slots],
        queued_count=v.queued_count,
        next_fire_at=min(nexts) if nexts else None,
        created_at=v.pool.created_at,
    )


def firing_read(f: Firing) -> FiringRead:
    return FiringRead(
        id=f.id,
        slot_id=f.slot_id,
        scheduled_for=f.scheduled_for,
        fired_at=f.fired_at,
        outcome="manual" if f.kind == "manual" else f.outcome,
        kind=f.kind,
        result=f.outcome,
        item_id=f.item_id,
        local_date=f.local_date.isoformat(),
        covers_until=f.covers_until.isoformat() if f.covers_until else None,
        missed_count=f.missed_count,
    )


@router.post("", status_code=201, response_model=PoolRead)
async def create_pool(
    body: PoolCreate,
    session: SessionDep,
    settings: SettingsDep,
    state: StateDep,
    ws: CurrentWorkspace,
    now: NowDep,
    idem: Idempotency,
) -> Response:
    svc = PoolService(session, settings)
    pool = await svc.create(ws.workspace_id, body, now)
    await notify_change(session)
    state.wake()
    return await commit_response(
        session, idem, 201, pool_read(await svc.view(ws.workspace_id, pool.id))
    )


@router.get("", response_model=Page[PoolRead])
async def list_pools(
    session: SessionDep,
    settings: SettingsDep,
    ws: CurrentWorkspace,
    limit: Annotated[int | None, Query()] = None,
    cursor: str | None = None,
) -> Page[PoolRead]:
    views, nxt = await PoolService(session, settings).list(
        ws.workspace_id, limit=clamp_limit(limit), cursor=cursor
    )
    return Page(items=[pool_read(v) for v in views], next_cursor=nxt)


@router.get("/{pool_id}", response_model=PoolRead)
async def get_pool(
    pool_id: str, session: SessionDep, settings: SettingsDep, ws: CurrentWorkspace
) -> PoolRead:
    return pool_read(await PoolService(session, settings).view(ws.workspace_id, pool_id))


@router.patch("/{pool_id}", response_model=PoolRead)
async def update_pool(
    pool_id: str,
    body: PoolUpdate,
    session: SessionDep,
    settings: SettingsDep,
    state: StateDep,
    ws: CurrentWorkspace,
    now: NowDep,
) -> Response:
    svc = PoolService(session, settings)
    await svc.update(ws.workspace_id, pool_id, body, now)
    await session.flush()
    await notify_change(session)
    state.wake()
    return await commit_response(
        session, None, 200, pool_read(await svc.view(ws.workspace_id, pool_id))
    )


@router.delete("/{pool_id}", status_code=204)
async def delete_pool(
    pool_id: str,
    session: SessionDep,
    state: StateDep,
    ws: CurrentWorkspace,
    force: bool = False,
) -> Response:
    media_ids = await PoolService(session, state.settings).delete(
        ws.workspace_id, pool_id, force=force
    )
    keys = await delete_media(session, state.storage, media_ids)
    await session.commit()
    for key in keys:
        await state.storage.delete(key)
    return Response(status_code=204)


@router.post("/{pool_id}/slots", status_code=201, response_model=SlotRead)
async def create_slot(
    pool_id: str,
    body: SlotIn,
    session: SessionDep,
    settings: SettingsDep,
    state: StateDep,
    ws: CurrentWorkspace,
    now: NowDep,
    idem: Idempotency,
) -> Response:
    svc = PoolService(session, settings)
    slot = await svc.add_slot(ws.workspace_id, pool_id, body, now)
    pool = await svc.get(ws.workspace_id, pool_id)
    await notify_change(session)
    state.wake()
    return await commit_response(session, idem, 201, slot_read(await svc.slot_view(pool, slot.id)))


@router.patch("/{pool_id}/slots/{slot_id}", response_model=SlotRead)
async def update_slot(
    pool_id: str,
    slot_id: str,
    body: SlotUpdate,
    session: SessionDep,
    settings: SettingsDep,
    state: StateDep,
    ws: CurrentWorkspace,
    now: NowDep,
) -> Response:
    svc = PoolService(session, settings)
    await svc.update_slot(ws.workspace_id, pool_id, slot_id, body, now)
    pool = await svc.get(ws.workspace_id, pool_id)
    await notify_change(session)
    state.wake()
    return await commit_response(session, None, 200, slot_read(await svc.slot_view(pool, slot_id)))


@router.delete("/{pool_id}/slots/{slot_id}", status_code=204)
async def delete_slot(
    pool_id: str,
    slot_id: str,
    session: SessionDep,
    settings: SettingsDep,
    ws: CurrentWorkspace,
    now: NowDep,
) -> Response:
    await PoolService(session, settings).delete_slot(ws.workspace_id, pool_id, slot_id, now)
    await session.commit()
    return Response(status_code=204)


@router.post("/{pool_id}/slots/{slot_id}/fire", status_code=202, response_model=FiringRead)
async def fire_slot(
    pool_id: str,
    slot_id: str,
    session: SessionDep,
    state: StateDep,
    ws: CurrentWorkspace,
    now: NowDep,
    idem: Idempotency,
) -> Response:
    """Post next now: the head video goes to this slot's accounts at once (a `manual`
    firing; that day's scheduled firing still happens)."""
    firing = await fire_now(session, state.settings, ws.workspace_id, pool_id, slot_id, now)
    await notify_change(session)
    response = await commit_response(session, idem, 202, firing_read(firing))
    state.wake()
    return response


@router.get("/{pool_id}/schedule", response_model=ScheduleRead)
async def pool_schedule(
    pool_id: str,
    session: SessionDep,
    settings: SettingsDep,
    ws: CurrentWorkspace,
    now: NowDep,
    limit: Annotated[int, Query(ge=1)] = 20,
    assume_active: Annotated[
        bool, Query(description="Preview a paused pool as if it were resumed now.")
    ] = False,
) -> ScheduleRead:
    limit = min(limit, settings.schedule_preview_max)
    svc = PoolService(session, settings)
    coming = await svc.schedule(
        ws.workspace_id, pool_id, limit=limit, now=now, assume_active=assume_active
    )
    skips = (
        predict_skips(
            coming, await svc.skip_forecast_input(await svc.get(ws.workspace_id, pool_id), now), now
        )
        if coming
        else []
    )
    return ScheduleRead(
        items=[
            ScheduleEntry(
                slot_id=c.slot.slot.id,
                at=c.occurrence.at,
                local_date=c.occurrence.local_date.isoformat(),
                account_ids=c.slot.account_ids,
                item_id=c.item_id,
                skips=[
                    PredictedSkipRead(account_id=p.account_id, reason=p.reason, detail=p.detail)
                    for p in s
                ],
            )
            for c, s in zip(coming, skips, strict=True)
        ]
    )


@router.get("/{pool_id}/firings", response_model=Page[FiringRead])
async def pool_firings(
    pool_id: str,
    session: SessionDep,
    settings: SettingsDep,
    ws: CurrentWorkspace,
    limit: Annotated[int | None, Query()] = None,
    cursor: str | None = None,
) -> Page[FiringRead]:
    rows, nxt = await PoolService(session, settings).firings(
        ws.workspace_id, pool_id, limit=clamp_limit(limit), cursor=cursor
    )
    return Page(items=[firing_read(f) for f in rows], next_cursor=nxt)
