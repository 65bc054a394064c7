from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.responses import Response
from starlette.routing import Route

from uploadpools.auth.service import Principal
from uploadpools.deps import (
    AppState,
    CurrentWorkspace,
    Idempotency,
    IdempotencyKey,
    NowDep,
    SessionDep,
    StateDep,
    bearer,
    get_principal,
    releasing,
)
from uploadpools.exceptions import FieldError, ValidationFailed
from uploadpools.idempotency import IdempotencyGuard, KeyUse, check_key, fingerprint
from uploadpools.kit.netguard import DestinationRefused, resolve_and_check
from uploadpools.kit.pagination import clamp_limit
from uploadpools.kit.responses import commit_response
from uploadpools.media.service import delete_media
from uploadpools.media.storage import StoredObject
from uploadpools.media.upload import ReceivedUpload
from uploadpools.models import Media, Pool, QueueItem
from uploadpools.pools.service import PoolService
from uploadpools.queue.schemas import (
    ItemCreate,
    ItemFields,
    ItemRead,
    ItemUpdate,
    RequeueIn,
    RequeueRead,
)
from uploadpools.queue.service import NewVideo, QueueService
from uploadpools.queue.upload import enqueue_upload
from uploadpools.schemas import Page

router = APIRouter(prefix="/pools/{pool_id}/videos", tags=["queue"])

_ENQUEUE_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": ItemCreate.model_json_schema(ref_template="#/components/schemas/{model}")
            },
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {"type": "string", "format": "binary", "description": "the video"},
                        "title": {"type": "string"},
                        "caption": {"type": "string"},
                        "options": {"type": "string", "description": "JSON object, per platform"},
                    },
                }
            },
        },
    }
}


def _validation(exc: ValidationError, prefix: str = "") -> ValidationFailed:
    return ValidationFailed(
        [
            FieldError(prefix + ".".join(str(p) for p in e["loc"]) or "body", e["msg"])
            for e in exc.errors()
        ]
    )


@router.post("", status_code=201, response_model=ItemRead, openapi_extra=_ENQUEUE_BODY)
async def enqueue(
    pool_id: str,
    request: Request,
    ws: CurrentWorkspace,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    """Add a video at the back of the queue: a multipart upload (`file`) or `{video_url}`."""
    # The hot path of the API: its dependencies are resolved here rather than by FastAPI
    # (no session for a JSON body, whose write goes through the group commit).
    state: AppState = request.app.state.uploadpools
    now = state.clock.now()
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("multipart/form-data"):
        guard = IdempotencyGuard(state.maker, ws.workspace_id, idempotency_key, now)
        async with state.maker() as session, releasing(guard, session):
            return await _enqueue_multipart(pool_id, request, session, state, ws, now, guard)
    body = await request.body()
    # A JSON body's Idempotency-Key is judged before the body (a replay answers whatever
    # the body says); the group commit claims it with the work. Other multipart bodies
    # are fingerprinted by their fields once read, as a form's are.
    claim = None
    if idempotency_key is not None and not content_type.startswith("multipart/"):
        check_key(idempotency_key)
        fp = fingerprint(request.method, request.url.path, body)
        claim = KeyUse(ws.workspace_id, idempotency_key, fp, now)
    try:
        try:
            payload = json.loads(body or b"null")
        except ValueError:
            raise ValidationFailed.one("body", "is not valid JSON")
        if not isinstance(payload, dict):
            raise ValidationFailed.one("body", "must be a JSON object (or a multipart upload)")
        video, data = await _checked_video(pool_id, payload, state, ws)
    except ValidationFailed as exc:
        if claim is None:
            raise
        await state.enqueues.refuse(exc, claim)
    if claim is None and idempotency_key is not None:
        claim = _claim_of_fields(ws, idempotency_key, request.url.path, data, now)
    return await _queue(state, video, claim)


async def _enqueue_direct(request: Request) -> Response:
    """`enqueue` for requests, without FastAPI's routing and dependency solving.

    The API's hottest call: FastAPI's nested router matching and dependency solving cost
    about as much CPU as the enqueue itself. This route is matched first (see
    `DIRECT_ROUTES`) and calls `enqueue` with the same dependencies resolved by the same
    functions; `enqueue`, registered with FastAPI as usual, describes it in the OpenAPI
    document. Errors go through the app's exception handlers as from any route.
    """
    state: AppState = request.app.state.uploadpools
    principal = await get_principal(state, await bearer(request))
    return await enqueue(
        request.path_params["pool_id"], request, principal, request.headers.get("idempotency-key")
    )


DIRECT_ROUTES = [
    Route(
        "/api/v1" + router.prefix,
        _enqueue_direct,
        methods=["POST"],
        name="enqueue-direct",
        include_in_schema=False,
    )
]


async def _enqueue_multipart(
    pool_id: str,
    request: Request,
    session: AsyncSession,
    state: AppState,
    ws: Principal,
    now: datetime,
    idem: IdempotencyGuard,
) -> Response:
    settings = state.settings
    queue = QueueService(session, settings)
    form: dict[str, Any] = {}

    def fields_of(received: ReceivedUpload) -> ItemFields | None:
        form.update(
            (k, v)
            for k, v in received.fields.items()
            if k in ("title", "caption", "options", "video_url")
        )
        unknown = sorted(set(received.fields) - {"title", "caption", "options", "video_url"})
        if unknown:
            raise ValidationFailed([FieldError(u, "unknown field") for u in unknown])
        if "options" in form:
            try:
                form["options"] = json.loads(form["options"] or "{}")
            except ValueError:
                raise ValidationFailed.one("options", "must be a JSON object")
        if received.stored is None and "video_url" not in form:
            raise ValidationFailed.one("file", "send the video as the 'file' part, or a video_url")
        if received.stored is not None and "video_url" in form:
            raise ValidationFailed.one("video_url", "send either a file or a video_url, not both")
        if received.stored is None:
            return None  # a video_url sent as a form
        try:
            return ItemFields.model_validate(form)
        except ValidationError as exc:
            raise _validation(exc)

    async def claim(fields: ItemFields, stored: StoredObject) -> None:
        await idem.begin(
            fingerprint(
                "POST",
                request.url.path,
                {
                    **fields.model_dump(mode="json"),
                    "sha256": stored.sha256,
                    "size": stored.size,
                },
            )
        )

    async def finish(pool: Pool, item: QueueItem, media: Media) -> Response:
        body = (await queue.read(pool, [item], now, media={media.id: media}, fresh=True))[0]
        return await commit_response(session, idem, 201, body)

    result = await enqueue_upload(
        request,
        session,
        settings,
        state.storage,
        workspace_id=ws.workspace_id,
        pool_id=pool_id,
        user_id=ws.user_id,
        now=now,
        fields_of=fields_of,
        finish=finish,
        claim=claim,
    )
    if isinstance(result, Response):
        return result
    video, data = await _checked_video(pool_id, form, state, ws)
    key = idem.key
    claim = None if key is None else _claim_of_fields(ws, key, request.url.path, data, now)
    return await _queue(state, video, claim)


async def _checked_video(
    pool_id: str, payload: dict[str, Any], state: AppState, ws: Principal
) -> tuple[NewVideo, ItemCreate]:
    """What the request alone can tell: its fields, and that the URL may be fetched."""
    try:
        data = ItemCreate.model_validate(payload)
    except ValidationError as exc:
        raise _validation(exc)
    url = str(data.video_url)
    try:
        await resolve_and_check(url, state.settings.allowed_networks)
    except DestinationRefused as exc:
        raise ValidationFailed.one("video_url", str(exc))
    return NewVideo(ws.workspace_id, pool_id, ws.user_id, url, data), data


def _claim_of_fields(ws: Principal, key: str, path: str, data: ItemCreate, now: datetime) -> KeyUse:
    """A form's key, fingerprinted by its validated fields (its boundary changes on
    every retry)."""
    check_key(key)
    return KeyUse(
        ws.workspace_id, key, fingerprint("POST", path, data.model_dump(mode="json")), now
    )


async def _queue(state: AppState, video: NewVideo, claim: KeyUse | None) -> Response:
    body = await state.enqueues.enqueue(video, claim)
    return Response(body, status_code=201, media_type="application/json")


@router.get("", response_model=Page[ItemRead])
async def list_items(
    pool_id: str,
    session: SessionDep,
    state: StateDep,
    ws: CurrentWorkspace,
    now: NowDep,
    status: Literal["queued", "dispatching", "dispatched", "skipped"] | None = None,
    limit: Annotated[int | None, Query()] = None,
    cursor: str | None = None,
) -> Page[ItemRead]:
    """Queued items in queue order; any other status (or none) newest first."""
    pool = await PoolService(session, state.settings).get(ws.workspace_id, pool_id)
    queue = QueueService(session, state.settings)
    items, nxt = await queue.list(pool, status=status, limit=clamp_limit(limit), cursor=cursor)
    return Page(
        items=await queue.read(pool, items, now, contiguous=status == "queued"), next_cursor=nxt
    )


@router.post("/requeue", response_model=RequeueRead)
async def requeue_all(
    pool_id: str,
    body: RequeueIn,
    session: SessionDep,
    state: StateDep,
    ws: CurrentWorkspace,
    now: NowDep,
    idem: Idempotency,
) -> Response:
    pool = await PoolService(session, state.settings).get(ws.workspace_id, pool_id, for_update=True)
    ids = await QueueService(session, state.settings).requeue_all(
        pool, front=body.to == "front", now=now
    )
    state.wake()
    return await commit_response(session, idem, 200, RequeueRead(requeued=len(ids), item_ids=ids))


@router.get("/{item_id}", response_model=ItemRead)
async def get_item(
    pool_id: str,
    item_id: str,
    session: SessionDep,
    state: StateDep,
    ws: CurrentWorkspace,
    now: NowDep,
) -> ItemRead:
    pool = await PoolService(session, state.settings).get(ws.workspace_id, pool_id)
    queue = QueueService(session, state.settings)
    return (await queue.read(pool, [await queue.get(pool, item_id)], now))[0]


@router.patch("/{item_id}", response_model=ItemRead)
async def update_item(
    pool_id: str,
    item_id: str,
    body: ItemUpdate,
    session: SessionDep,
    state: StateDep,
    ws: CurrentWorkspace,
    now: NowDep,
) -> Response:
    pool = await PoolService(session, state.settings).get(ws.workspace_id, pool_id, for_update=True)
    queue = QueueService(session, state.settings)
    item = await queue.get(pool, item_id)
    await queue.update(pool, item, body, now)
    result = (await queue.read(pool, [item], now))[0]
    response = await commit_response(session, None, 200, result)
    state.wake()
    return response


@router.delete("/{item_id}", status_code=204)
async def delete_item(
    pool_id: str, item_id: str, session: SessionDep, state: StateDep, ws: CurrentWorkspace
) -> Response:
    pool = await PoolService(session, state.settings).get(ws.workspace_id, pool_id, for_update=True)
    queue = QueueService(session, state.settings)
    media_id = await queue.delete(await queue.get(pool, item_id))
    keys = await delete_media(session, state.storage, [media_id])
    await session.commit()
    for key in keys:
        await state.storage.delete(key)
    return Response(status_code=204)
