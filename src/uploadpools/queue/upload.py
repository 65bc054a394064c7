"""The one upload path: a multipart video into a pool's queue. Used by the API
(`POST /pools/{id}/videos`, Idempotency-Key at its edge) and by the web drop zone
(CSRF at its edge): receive → fields → probe → media row → pre-flight → enqueue.

The edge commits, through `finish`, inside this function: the stored file is deleted
on any failure up to and including that commit, and is the media row's after it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import TypeVar

from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import Request

from uploadpools.config import Settings
from uploadpools.exceptions import PayloadTooLarge, ValidationFailed
from uploadpools.media import preflight
from uploadpools.media.probe import NotAVideo
from uploadpools.media.service import new_media_id, ready_media, storage_key, store_probed
from uploadpools.media.storage import MediaTooLarge, Storage, StoredObject
from uploadpools.media.upload import ReceivedUpload, UploadError, receive_multipart
from uploadpools.models import Media, Pool, QueueItem
from uploadpools.pools.service import PoolService
from uploadpools.queue.schemas import ItemFields
from uploadpools.queue.service import QueueService

R = TypeVar("R")

FieldsOf = Callable[[ReceivedUpload], ItemFields | None]
Claim = Callable[[ItemFields, StoredObject], Awaitable[None]]
Finish = Callable[[Pool, QueueItem, Media], Awaitable[R]]


async def enqueue_upload(
    request: Request,
    session: AsyncSession,
    settings: Settings,
    storage: Storage,
    *,
    workspace_id: str,
    pool_id: str,
    user_id: str | None,
    now: datetime,
    fields_of: FieldsOf,
    finish: Finish[R],
    claim: Claim | None = None,
) -> R | ReceivedUpload:
    """Stream the body to storage and queue the video at the back of the pool.

    `fields_of` validates the form's fields (raise ValidationFailed) or answers None:
    not a file upload, and the received form comes back for the caller to handle.
    `claim` runs once the video is known to be playable (the API's Idempotency-Key);
    `finish` commits and builds the answer."""
    pools = PoolService(session, settings)
    # Refuse a foreign or unknown pool before reading a possibly huge body, and end that
    # read transaction: no lock is held while the upload streams.
    await pools.get(workspace_id, pool_id)
    await session.rollback()
    media_id = new_media_id()
    try:
        received = await receive_multipart(
            request,
            storage,
            storage_key(workspace_id, media_id),
            max_bytes=settings.max_upload_bytes,
        )
    except MediaTooLarge:
        raise PayloadTooLarge(
            f"the video is larger than this server's limit of {settings.max_upload_bytes} bytes"
        )
    except UploadError as exc:
        raise ValidationFailed.one(exc.field, str(exc))
    stored = received.stored
    try:
        fields = fields_of(received)
        if fields is None or stored is None:
            if stored is not None:
                raise ValidationFailed.one("file", "send the video as the 'file' part")
            return received
        try:
            probed = await store_probed(storage, stored)
        except NotAVideo as exc:
            stored = None  # already deleted
            raise ValidationFailed.one("file", f"is not a playable video: {exc}")
        if claim is not None:
            await claim(fields, stored)
        media = ready_media(media_id, workspace_id, stored, probed, now, filename=received.filename)
        # Before the pool lock: the slots' platforms must all accept this video.
        rules = await preflight.pool_rules(session, settings, pool_id)
        if rules:
            errors = preflight.check(rules, media, fields.title, fields.caption)
            if errors:
                raise ValidationFailed(errors)
        pool = await pools.get(workspace_id, pool_id, for_update=True)
        session.add(media)
        await session.flush()
        item = await QueueService(session, settings).enqueue(
            pool, media, fields, now, user_id=user_id
        )
        result = await finish(pool, item, media)
        stored = None  # now owned by the committed media row
        return result
    finally:
        if stored is not None:
            await storage.delete(stored.key)
