from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from pydantic import ValidationError
from starlette.responses import Response

from uploadpools.deps import CurrentWorkspace, Idempotency, NowDep, SessionDep, StateDep
from uploadpools.engine.wakeup import notify_change
from uploadpools.exceptions import FieldError, ValidationFailed
from uploadpools.idempotency import fingerprint
from uploadpools.kit.netguard import DestinationRefused, resolve_and_check
from uploadpools.kit.pagination import clamp_limit
from uploadpools.kit.responses import commit_response
from uploadpools.media import preflight
from uploadpools.media.service import delete_media, new_media_id
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
from uploadpools.queue.service import QueueService
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
    session: SessionDep,
    state: StateDep,
    ws: CurrentWorkspace,
    now: NowDep,
    idem: Idempotency,
) -> Response:
    """Add a video at the back of the queue: a multipart upload (`file`) or `{video_url}`."""
    settings = state.settings
    queue = QueueService(session, settings)
    content_type = request.headers.get("content-type", "")
    media_id = new_media_id()

    if content_type.startswith("multipart/form-data"):
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
                raise ValidationFailed.one(
                    "file", "send the video as the 'file' part, or a video_url"
                )
            if received.stored is not None and "video_url" in form:
                raise ValidationFailed.one(
                    "video_url", "send either a file or a video_url, not both"
                )
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
        return await _enqueue_url(pool_id, form, request, session, state, ws, now, idem, media_id)

    try:
        payload = json.loads(await request.body() or b"null")
    except ValueError:
        raise ValidationFailed.one("body", "is not valid JSON")
    if not isinstance(payload, dict):
        raise ValidationFailed.one("body", "must be a JSON object (or a multipart upload)")
    return await _enqueue_url(pool_id, payload, request, session, state, ws, now, idem, media_id)


async def _enqueue_url(
    pool_id: str,
    payload: dict[str, Any],
    request: Request,
    session: Any,
    state: Any,
    ws: Any,
    now: Any,
    idem: Any,
    media_id: str,
) -> Response:
    try:
        data = ItemCreate.model_validate(payload)
    except ValidationError as exc:
        raise _validation(exc)
    url = str(data.video_url)
    try:
        await resolve_and_check(url, state.settings.allowed_networks)
    except DestinationRefused as exc:
        raise ValidationFailed.one("video_url", str(exc))
    if request.headers.get("content-type", "").startswith("multipart/"):
        await idem.begin(fingerprint("POST", request.url.path, data.model_dump(mode="json")))
    pools = PoolService(session, state.settings)
    queue = QueueService(session, state.settings)
    pool = await pools.get(ws.workspace_id, pool_id, for_update=True)
    # The text can be checked now; the video itself once it is fetched (media.service).
    rules = await preflight.pool_rules(session, state.settings, pool.id)
    if rules:
        errors = preflight.check(rules, None, data.title, data.caption)
        if errors:
            raise ValidationFailed(errors)
    media = Media(
        id=media_id, workspace_id=ws.workspace_id, state="pending", source_url=url, created_at=now
    )
    session.add(media)
    await session.flush()
    fields = ItemFields(title=data.title, caption=data.caption, options=data.options)
    item = await queue.enqueue(pool, media, fields, now, user_id=ws.user_id)
    body = (await queue.read(pool, [item], now, media={media.id: media}, fresh=True))[0]
    await notify_change(session)
    response = await commit_response(session, idem, 201, body)
    state.wake()
    return response


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
