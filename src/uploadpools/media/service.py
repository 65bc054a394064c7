"""Media records: uploads probed on arrival, `video_url`s fetched in the background."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from datetime import datetime, timedelta

import anyio
import httpx
from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from uploadpools.config import Settings
from uploadpools.exceptions import UploadPoolsError
from uploadpools.kit import memory
from uploadpools.kit.clock import Clock
from uploadpools.kit.ids import new_id
from uploadpools.media import preflight
from uploadpools.media.fetch import FetchFailed, fetch_to_storage
from uploadpools.media.probe import NotAVideo, ProbeResult, ProbeUnavailable, probe
from uploadpools.media.storage import LocalStorage, Storage, StoredObject
from uploadpools.models import Media, Pool, QueueItem
from uploadpools.models.item import waiting
from uploadpools.notifications.service import notify
from uploadpools.store.engine import session_scope
from uploadpools.webhooks import events

log = logging.getLogger(__name__)


# A fetch whose video could not be checked (the probe could not run) is fetched again
# this long after its n-th attempt: 5, 10, 20, 40 minutes, then every hour, until
# `fetch_max_attempts` is reached.
CHECK_RETRY_BASE_S = 300.0
CHECK_RETRY_MAX_S = 3600.0


def check_retry_delay(attempts: int) -> timedelta:
    """How long a fetch waits, after `attempts` attempts, before the next one."""
    seconds = CHECK_RETRY_BASE_S * 2 ** max(attempts - 1, 0)
    return timedelta(seconds=min(seconds, CHECK_RETRY_MAX_S))


class VideoCheckUnavailable(UploadPoolsError):
    """The video could not be checked at all, for reasons that are not the file's."""

    status_code = 503
    title = "The video cannot be checked right now"
    type_slug = "unavailable"


def storage_for(settings: Settings) -> Storage:
    if settings.storage == "s3":
        from uploadpools.media.s3 import S3Storage  # only S3 deployments load it

        assert settings.s3_bucket and settings.s3_access_key_id and settings.s3_secret_access_key
        return S3Storage(
            bucket=settings.s3_bucket,
            access_key_id=settings.s3_access_key_id,
            secret_access_key=settings.s3_secret_access_key.get_secret_value(),
            region=settings.s3_region,
            endpoint_url=settings.s3_endpoint_url,
            prefix=settings.s3_prefix,
        )
    return LocalStorage(settings.media_dir)


def storage_key(workspace_id: str, media_id: str) -> str:
    return f"{workspace_id}/{media_id[-2:]}/{media_id}"


def new_media_id() -> str:
    return new_id()


def ready_media(
    media_id: str,
    workspace_id: str,
    stored: StoredObject,
    probed: ProbeResult,
    now: datetime,
    *,
    filename: str | None = None,
) -> Media:
    m = Media(id=media_id, workspace_id=workspace_id, state="pending", created_at=now)
    mark_ready(m, stored, probed, filename=filename)
    return m


def mark_ready(
    m: Media, stored: StoredObject, probed: ProbeResult, *, filename: str | None = None
) -> None:
    m.state = "ready"
    m.storage_key = stored.key
    m.size = stored.size
    m.sha256 = stored.sha256
    m.content_type = probed.content_type
    m.container = probed.container
    m.video_codec = probed.video_codec
    m.audio_codec = probed.audio_codec
    m.duration_s = probed.duration_s
    m.width = probed.width
    m.height = probed.height
    m.original_filename = filename
    m.error = None
    m.lease_until = None


# A video at least this large went through enough buffers to be worth a malloc_trim.
GIVE_BACK_AFTER_BYTES = 64 << 20


async def store_probed(storage: Storage, stored: StoredObject) -> ProbeResult:
    """Probe a stored object; a file that is not a playable video is deleted and refused.

    ``VideoCheckUnavailable`` when the probe cannot run at all (the file is kept: it is
    the caller's to delete or to probe again)."""
    if stored.size >= GIVE_BACK_AFTER_BYTES:
        # The transfer's buffers are free now; hand them back before the probe child
        # reaches its own peak (for a large file), so that the two do not add up.
        await anyio.to_thread.run_sync(memory.give_back_freed_heap)
    try:
        async with storage.local_copy(stored.key) as path:
            return await probe(path)
    except NotAVideo:
        await storage.delete(stored.key)
        raise
    except ProbeUnavailable as exc:
        log.error("video probe unavailable: %s", exc)
        raise VideoCheckUnavailable(
            f"the server could not check the video ({exc}); try again later"
        ) from exc


async def delete_media(session: AsyncSession, storage: Storage, media_ids: list[str]) -> list[str]:
    """Forget media rows no queue item uses any more; returns storage keys to delete after commit."""
    keys = []
    for media_id in media_ids:
        in_use = await session.scalar(
            select(QueueItem.id).where(QueueItem.media_id == media_id).limit(1)
        )
        if in_use:
            continue
        m = await session.get(Media, media_id)
        if m is not None:
            if m.storage_key:
                keys.append(m.storage_key)
            await session.delete(m)
    return keys


class MediaFetcher:
    """Fetches pending `video_url` media into storage.

    The database is the queue: a fetch is claimed with a lease, so any process can take
    it, and one whose fetcher died is taken again when the lease runs out.
    """

    def __init__(
        self,
        maker: async_sessionmaker[AsyncSession],
        settings: Settings,
        clock: Clock,
        storage: Storage,
        client: httpx.AsyncClient,
        *,
        concurrency: int = 4,
        poll_interval_s: float = 5.0,
        yield_to: Callable[[], bool] | None = None,
        rest_ratio: float = 9.0,
        rest_min_s: float = 1.0,
    ) -> None:
        self.maker = maker
        self.settings = settings
        self.clock = clock
        self.storage = storage
        self.client = client
        self.concurrency = concurrency
        self.poll_interval_s = poll_interval_s
        # "This process is busy serving requests" (set by the API's process): then the
        # fetcher takes one video at a time and rests `rest_ratio` times as long as it
        # took, and at least `rest_min_s` (at most one a second, ~10 % of the time at
        # most), leaving the CPU to the requests. Fetching is CPU-bound either way, so
        # the backlog is not drained later for it: it drains at full concurrency once the
        # burst is over, and the burst's requests were not slowed by it.
        self.yield_to = yield_to
        self.rest_ratio = rest_ratio
        self.rest_min_s = rest_min_s
        self._wake = asyncio.Event()

    def wake(self) -> None:
        self._wake.set()

    def yielding(self) -> bool:
        return self.yield_to is not None and self.yield_to()

    async def run(self) -> None:
        while True:
            self._wake.clear()
            polite = self.yielding()
            started = time.monotonic()
            try:
                done = await self.run_once(1 if polite else self.concurrency)
            except Exception:  # keep fetching after a database hiccup
                log.exception("media fetcher iteration failed")
                done = 0
            if done:
                if polite:
                    took = time.monotonic() - started
                    rest = max(self.rest_min_s, self.rest_ratio * took)
                    await asyncio.sleep(min(self.poll_interval_s, rest))
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.poll_interval_s)

    async def _claim(self, limit: int) -> list[tuple[str, str, str, datetime]]:
        now = self.clock.now()
        lease = now + timedelta(seconds=self.settings.fetch_timeout_s + 60)
        async with session_scope(self.maker) as session:
            q = (
                select(Media)
                .where(
                    Media.state == "pending",
                    Media.source_url.is_not(None),
                    or_(Media.lease_until.is_(None), Media.lease_until < now),
                )
                .order_by(Media.id)
                .limit(limit)
                .with_for_update(skip_locked=True)
            )
            claimed = []
            for m in (await session.scalars(q)).all():
                if m.fetch_attempts >= self.settings.fetch_max_attempts:
                    # Its attempts are used up and the last one never finished (its lease
                    # ran out: the process fetching it stopped, e.g. killed by the OOM
                    # killer): trying again would repeat that without end.
                    log.warning(
                        "media %s failed: %d attempts, the last one interrupted",
                        m.id,
                        m.fetch_attempts,
                    )
                    await self._fail_leased(
                        session,
                        m,
                        f"{m.fetch_attempts} attempts were made and the last one did not "
                        "finish (the process fetching it stopped); requeue it to try again",
                        "the video could not be fetched",
                        now=now,
                    )
                    continue
                m.lease_until = lease
                m.fetch_attempts += 1
                claimed.append((m.id, m.workspace_id, m.source_url or "", lease))
            return claimed

    async def run_once(self, limit: int | None = None) -> int:
        claimed = await self._claim(limit or self.concurrency)
        if claimed:
            await asyncio.gather(*(self._fetch(*c) for c in claimed))
        return len(claimed)

    async def _fetch(self, media_id: str, workspace_id: str, url: str, lease: datetime) -> None:
        key = storage_key(workspace_id, media_id)
        try:
            stored = await fetch_to_storage(
                self.client,
                url,
                self.storage,
                key,
                max_bytes=self.settings.max_upload_bytes,
                timeout_s=self.settings.fetch_timeout_s,
                allowed_networks=self.settings.allowed_networks,
            )
            probed = await store_probed(self.storage, stored)
        except (FetchFailed, NotAVideo) as exc:
            # The URL's or the file's fault: the item is told at once, whatever the attempt.
            await self._fail(media_id, lease, str(exc))
            return
        except VideoCheckUnavailable:
            # The server's problem, not the video's: nothing is kept and it is fetched
            # again later, until `fetch_max_attempts`.
            await self.storage.delete(key)
            await self._check_unavailable(media_id, lease)
            return
        async with session_scope(self.maker) as session:
            m = await _leased(session, media_id, lease)
            if m is None:
                # Lost the lease (or the item was deleted meanwhile): drop what we fetched.
                await self.storage.delete(key)
                return
            mark_ready(m, stored, probed)
            # The pre-flight an upload gets at once, now that the video is known.
            for item in await _queued_items(session, media_id):
                rules = await preflight.pool_rules(session, self.settings, item.pool_id)
                errors = preflight.check(rules, m, item.title, item.caption)
                if errors:
                    why = "; ".join(e.message for e in errors)
                    await _skip(
                        session,
                        item,
                        why,
                        f"the video cannot be posted: {why}",
                        now=self.clock.now(),
                    )

    async def _check_unavailable(self, media_id: str, lease: datetime) -> None:
        """The video probe could not run: try again later (the lease, pushed back, is
        when), or fail the media once `fetch_max_attempts` attempts were made."""
        now = self.clock.now()
        limit = self.settings.fetch_max_attempts
        async with session_scope(self.maker) as session:
            m = await _leased(session, media_id, lease)
            if m is None:
                return
            attempts = m.fetch_attempts
            if attempts < limit:
                delay = check_retry_delay(attempts)
                m.lease_until = now + delay
                log.warning(
                    "media %s stays pending: the video probe could not run "
                    "(attempt %d of %d); fetching it again in %d s",
                    media_id,
                    attempts,
                    limit,
                    delay.total_seconds(),
                )
                return
            log.warning(
                "media %s failed: the video probe could not run (attempt %d of %d)",
                media_id,
                attempts,
                limit,
            )
            await self._fail_leased(
                session,
                m,
                f"the server's video probe could not run in {attempts} "
                f"attempt{'' if attempts == 1 else 's'}; "
                "this is not the video's fault, requeue it once the server is fixed",
                "the video could not be checked",
                now=now,
            )

    async def _fail(self, media_id: str, lease: datetime, reason: str) -> None:
        now = self.clock.now()
        async with session_scope(self.maker) as session:
            m = await _leased(session, media_id, lease)
            if m is not None:
                await self._fail_leased(
                    session, m, reason, "the video could not be fetched", now=now
                )

    async def _fail_leased(
        self, session: AsyncSession, m: Media, reason: str, what: str, *, now: datetime
    ) -> None:
        m.state = "failed"
        m.error = reason
        m.lease_until = None
        for item in await _queued_items(session, m.id):
            await _skip(session, item, reason, f"{what}: {reason}", now=now)


async def _leased(session: AsyncSession, media_id: str, lease: datetime) -> Media | None:
    """The media row, locked, while this fetch still holds its lease; else None (the lease
    ran out and another fetch took it, or the item was deleted or requeued meanwhile)."""
    m = await session.get(Media, media_id, with_for_update=True)
    if m is None or m.lease_until != lease or m.state != "pending":
        return None
    return m


async def _queued_items(session: AsyncSession, media_id: str) -> list[QueueItem]:
    return list(
        (
            await session.scalars(
                select(QueueItem).where(QueueItem.media_id == media_id, waiting(QueueItem))
            )
        ).all()
    )


async def _skip(
    session: AsyncSession, item: QueueItem, reason: str, detail: str, *, now: datetime
) -> None:
    """A fetched video that cannot be used: the item is skipped `media_rejected`, and said so."""
    item.status = "skipped"
    item.skip_reason = "media_rejected"
    item.skip_detail = detail
    item.finished_at = now
    label = f"“{item.title}”" if item.title else "A video"
    await notify(
        session,
        workspace_id=item.workspace_id,
        level="warning",
        kind="item.skipped",
        message=f"{label} was skipped: its video_url could not be used ({reason}).",
        now=now,
        pool_id=item.pool_id,
        item_id=item.id,
    )
    pool = await session.get(Pool, item.pool_id)
    if pool is not None:
        await events.emit(
            session,
            item.workspace_id,
            "item.skipped",
            {"pool": events.pool_data(pool), "item": events.item_data(item)},
            now,
        )
