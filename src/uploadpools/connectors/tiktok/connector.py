"""The `tiktok` connector: Content Posting API, direct post, FILE_UPLOAD in chunks.

Publish: ``creator_info/query`` (privacy levels the creator offers, longest video, the
creator's interaction settings) → ``video/init`` with ``source_info: FILE_UPLOAD`` and a
chunk plan inside TikTok's rules → ``jobs.save({"publish_id"})`` → ``PUT`` every chunk
to ``upload_url`` in order → ``status/fetch`` until ``PUBLISH_COMPLETE`` or ``FAILED``.

No double posts: once the last chunk is in, TikTok publishes whatever we do next. So a
saved ``publish_id`` is always asked about first — by ``reconcile`` after a crash, and
by ``publish`` itself on any later attempt — and a new post is only started when TikTok
says the old one failed or never received all its bytes (it cannot be published then).

Tokens: refreshed when they expire within ``REFRESH_MARGIN`` and once on
``access_token_invalid``; rotated tokens are saved with ``jobs.save_config`` at once
(TikTok's old refresh token stops working). A refused refresh is ``AuthExpired``.
``reconcile`` has nowhere to save rotated tokens, so it does not refresh: when it would
have to, it leaves the question to ``publish``, which resumes from the same publish_id.
"""

from __future__ import annotations

import json
import math
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any, ClassVar, Literal

import anyio
import httpx
from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationError, model_validator

from uploadpools.connectors.base import (
    UNKNOWN,
    ConnectorContext,
    JobStore,
    MediaConstraints,
    MediaRef,
    Permanent,
    PublishRequest,
    PublishResult,
    Reconciled,
    Transient,
)
from uploadpools.connectors.tiktok import TikTokConfig
from uploadpools.connectors.tiktok.api import (
    CONTENT_TYPES,
    MAX_VIDEO_SIZE,
    ChunkPlan,
    TokenInvalid,
    envelope,
    network_error,
    plan_chunks,
    raise_for_code,
)
from uploadpools.connectors.tiktok.oauth import TikTokOAuth

__all__ = ["TikTokConnector", "TikTokOptions"]

PrivacyLevel = Literal[
    "PUBLIC_TO_EVERYONE", "MUTUAL_FOLLOW_FRIENDS", "FOLLOWER_OF_CREATOR", "SELF_ONLY"
]
# API.md's short form (`{"tiktok": {"privacy": "public"}}`) and TikTok's names for it.
PRIVACY_WORDS: dict[str, PrivacyLevel] = {
    "public": "PUBLIC_TO_EVERYONE",
    "friends": "MUTUAL_FOLLOW_FRIENDS",
    "followers": "FOLLOWER_OF_CREATOR",
    "private": "SELF_ONLY",
}
MAX_CAPTION_UTF16 = 2200
REFRESH_MARGIN = timedelta(minutes=5)
CHUNK_TRIES = 3
# fail_reason values after which a fresh post may go out (nothing was published).
RETRYABLE_FAILURES = frozenset({"internal", "internal_error", "video_pull_failed"})
POST_URL = "https://www.tiktok.com/@{user}/video/{id}"
PROFILE_URL = "https://www.tiktok.com/@{user}"


class TikTokOptions(BaseModel):
    """``options.tiktok`` of an item (docs/platforms/tiktok.md)."""

    model_config = ConfigDict(extra="forbid")

    privacy_level: PrivacyLevel | None = None
    privacy: Literal["public", "friends", "followers", "private"] | None = None
    disable_comment: StrictBool = False
    disable_duet: StrictBool = False
    disable_stitch: StrictBool = False
    # Paid partnership ("Branded content") and promoting one's own business ("Your brand").
    brand_content_toggle: StrictBool = False
    brand_organic_toggle: StrictBool = False
    is_aigc: StrictBool = False
    video_cover_timestamp_ms: int | None = Field(default=None, ge=0, strict=True)

    @model_validator(mode="after")
    def _one_privacy(self) -> TikTokOptions:
        if (
            self.privacy is not None
            and self.privacy_level is not None
            and PRIVACY_WORDS[self.privacy] != self.privacy_level
        ):
            raise ValueError("privacy and privacy_level disagree; give one of them")
        return self

    def chosen_privacy(self) -> PrivacyLevel | None:
        if self.privacy_level is not None:
            return self.privacy_level
        return PRIVACY_WORDS[self.privacy] if self.privacy is not None else None


def parse_options(options: dict[str, Any]) -> TikTokOptions:
    """The item's TikTok options, or ``Permanent`` naming each bad field."""
    try:
        return TikTokOptions.model_validate(options)
    except ValidationError as exc:
        problems = "; ".join(
            f"options.tiktok.{'.'.join(str(p) for p in e['loc']) or '(options)'}: {e['msg']}"
            for e in exc.errors()
        )
        raise Permanent(f"the item's TikTok options are invalid: {problems}") from None


def utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


class _Session:
    """One attempt's calls to the v2 API with the account's tokens, refreshing as needed."""

    def __init__(
        self, connector: TikTokConnector, request: PublishRequest, jobs: JobStore | None
    ) -> None:
        self.c = connector
        self.stored = dict(request.config)
        try:
            self.config = TikTokConfig.model_validate(request.config)
        except ValidationError:
            raise TokenInvalid("the TikTok account's stored tokens are unreadable") from None
        self.jobs = jobs
        self.refreshed = False

    @property
    def can_refresh(self) -> bool:
        return self.jobs is not None and not self.refreshed

    async def refresh(self) -> None:
        assert self.jobs is not None
        fresh = await self.c.oauth.refresh(self.c.ctx.http, self.config.tokens())
        config = TikTokConfig.from_tokens(fresh)
        if config.open_id is None:
            config.open_id = self.config.open_id
        self.config = config
        self.stored = {**self.stored, **config.stored()}
        self.refreshed = True
        await self.jobs.save_config(self.stored)

    async def call(self, path: str, body: dict[str, Any] | None) -> dict[str, Any]:
        expires = self.config.expires_at
        if expires is not None and expires - self.c.ctx.clock.now() < REFRESH_MARGIN:
            if self.jobs is None:
                raise TokenInvalid("the TikTok access token is about to expire")
            if not self.refreshed:
                await self.refresh()
        try:
            return await self._once(path, body)
        except TokenInvalid:
            if not self.can_refresh:
                raise
            await self.refresh()
            return await self._once(path, body)

    async def _once(self, path: str, body: dict[str, Any] | None) -> dict[str, Any]:
        try:
            response = await self.c.ctx.http.post(
                f"{self.c.ctx.settings.tiktok_api_base.rstrip('/')}{path}",
                content=b"" if body is None else json.dumps(body).encode(),
                headers={
                    "Authorization": f"Bearer {self.config.access_token}",
                    "Content-Type": "application/json; charset=UTF-8",
                },
            )
        except httpx.HTTPError as exc:
            raise network_error(path.rstrip("/").rsplit("/", 2)[-2], exc) from None
        return envelope(response)


class TikTokConnector:
    platform: ClassVar[str] = "tiktok"
    config_model: ClassVar[type[BaseModel]] = TikTokConfig
    constraints: ClassVar[MediaConstraints | None] = MediaConstraints(
        containers=frozenset({"mp4", "mov", "webm"}),
        video_codecs=frozenset({"h264", "hevc", "vp8", "vp9"}),
        max_duration_s=600.0,
        max_size=MAX_VIDEO_SIZE,
        min_width=360,
        min_height=360,
        max_caption_chars=MAX_CAPTION_UTF16,
    )

    def __init__(
        self,
        ctx: ConnectorContext,
        *,
        sleep: Callable[[float], Awaitable[Any]] | None = None,
    ) -> None:
        self.ctx = ctx
        self.settings = ctx.settings
        self.oauth = TikTokOAuth(ctx.settings, clock=ctx.clock)
        self._sleep = sleep or anyio.sleep

    # -- publish -----------------------------------------------------------------------------

    async def publish(self, request: PublishRequest, jobs: JobStore) -> PublishResult:
        options = parse_options(request.options)
        media = request.media
        caption = request.caption or request.title
        if utf16_len(caption) > MAX_CAPTION_UTF16:
            raise Permanent(
                f"the caption is {utf16_len(caption)} characters (UTF-16 units); "
                f"TikTok takes at most {MAX_CAPTION_UTF16}"
            )
        if media.content_type not in CONTENT_TYPES:
            raise Permanent(
                f"TikTok takes MP4, MOV or WebM videos, not {media.content_type}",
                reason="media_rejected",
            )
        session = _Session(self, request, jobs)

        if request.job.get("publish_id"):
            found = await self._resume(session, request.job, media.size)
            if isinstance(found, PublishResult):
                return found
            if found == UNKNOWN:
                raise Permanent(
                    f"TikTok cannot say what became of publish {request.job['publish_id']}; "
                    "it may have been posted, so it was not sent again"
                )

        info = await session.call("/v2/post/publish/creator_info/query/", None)
        post_info = self._post_info(options, info, caption, media)
        try:
            plan = plan_chunks(media.size, self.settings.tiktok_chunk_size)
        except ValueError as exc:
            raise Permanent(str(exc), reason="media_rejected") from None
        data = await session.call(
            "/v2/post/publish/video/init/",
            {"post_info": post_info, "source_info": plan.source_info()},
        )
        publish_id, upload_url = data.get("publish_id"), data.get("upload_url")
        if not isinstance(publish_id, str) or not isinstance(upload_url, str):
            raise Transient("TikTok's init answer had no publish_id or upload_url")
        job = {"publish_id": publish_id, "username": info.get("creator_username") or None}
        await jobs.save(job)
        await self._upload(session, publish_id, upload_url, plan, media)
        return await self._until_published(session, job)

    def _post_info(
        self, options: TikTokOptions, info: dict[str, Any], caption: str, media: MediaRef
    ) -> dict[str, Any]:
        offered = [p for p in info.get("privacy_level_options") or [] if isinstance(p, str)]
        privacy = options.chosen_privacy() or self.settings.tiktok_default_privacy_level
        if privacy is None and len(offered) == 1:
            privacy = offered[0]
        if privacy is None:
            raise Permanent(
                "choose who can see the video: set options.tiktok.privacy_level to one of "
                f"{', '.join(offered)} (TikTok asks creators to choose; no default is assumed)"
            )
        if privacy not in offered:
            raise Permanent(
                f"this TikTok account does not offer privacy {privacy}; it offers "
                f"{', '.join(offered) or 'none'}"
            )
        if options.brand_content_toggle and privacy == "SELF_ONLY":
            raise Permanent("TikTok does not allow branded content to be private (SELF_ONLY)")
        longest = info.get("max_video_post_duration_sec")
        if isinstance(longest, int | float) and media.duration_s > longest:
            raise Permanent(
                f"the video is {media.duration_s:g} s long; this TikTok account can post "
                f"videos up to {longest:g} s",
                reason="media_rejected",
            )
        cover = options.video_cover_timestamp_ms
        if cover is not None and media.duration_s and cover > media.duration_s * 1000:
            raise Permanent(
                f"options.tiktok.video_cover_timestamp_ms ({cover}) is past the end of the "
                f"video ({media.duration_s * 1000:.0f} ms)"
            )
        post: dict[str, Any] = {
            "title": caption,
            "privacy_level": privacy,
            # A creator who turned comments, duets or stitches off keeps them off.
            "disable_comment": options.disable_comment or bool(info.get("comment_disabled")),
            "disable_duet": options.disable_duet or bool(info.get("duet_disabled")),
            "disable_stitch": options.disable_stitch or bool(info.get("stitch_disabled")),
            "brand_content_toggle": options.brand_content_toggle,
            "brand_organic_toggle": options.brand_organic_toggle,
            "is_aigc": options.is_aigc,
        }
        if cover is not None:
            post["video_cover_timestamp_ms"] = cover
        return post

    async def _upload(
        self,
        session: _Session,
        publish_id: str,
        upload_url: str,
        plan: ChunkPlan,
        media: MediaRef,
    ) -> None:
        ranges = plan.ranges()
        for index, (first, last) in enumerate(ranges):
            where = f"chunk {index + 1} of {len(ranges)}"
            for attempt in range(1, CHUNK_TRIES + 1):
                try:
                    response = await self._put(upload_url, media, first, last, plan.video_size)
                except httpx.HTTPError as exc:
                    error = network_error(f"the upload of {where}", exc)
                else:
                    status = response.status_code
                    if status in (200, 201, 206):
                        break
                    if status < 500:
                        # A chunk sent again after a lost answer finds the upload done.
                        if attempt > 1 and await self._all_in(session, publish_id, plan):
                            return
                        # 403: the upload URL expired (an hour); 404/416: TikTok lost track.
                        # Nothing can be published from a partial upload, so a later
                        # attempt starts over; anything else is a request TikTok refuses.
                        if status in (403, 404, 416):
                            raise Transient(f"TikTok answered {status} to {where}; starting over")
                        raise Permanent(f"TikTok refused {where}: {status} {response.text[:200]}")
                    error = Transient(f"TikTok answered {status} to {where}")
                if attempt < CHUNK_TRIES:
                    await self._sleep(self.settings.tiktok_poll_interval_s)
            else:
                raise error

    async def _all_in(self, session: _Session, publish_id: str, plan: ChunkPlan) -> bool:
        data = await session.call("/v2/post/publish/status/fetch/", {"publish_id": publish_id})
        return data.get("uploaded_bytes") == plan.video_size

    async def _put(
        self, upload_url: str, media: MediaRef, first: int, last: int, total: int
    ) -> httpx.Response:
        body = media.open(start=first, end=last + 1)
        try:
            return await self.ctx.http.put(
                upload_url,
                content=body,
                headers={
                    "Content-Type": media.content_type,
                    "Content-Length": str(last - first + 1),
                    "Content-Range": f"bytes {first}-{last}/{total}",
                },
            )
        finally:
            # Close the file even when the request broke off mid-chunk.
            close = getattr(body, "aclose", None)
            if close is not None:
                with anyio.CancelScope(shield=True):
                    await close()

    async def _until_published(self, session: _Session, job: dict[str, Any]) -> PublishResult:
        interval = self.settings.tiktok_poll_interval_s
        timeout = self.settings.tiktok_publish_timeout_s
        deadline = self.ctx.clock.now() + timedelta(seconds=timeout)
        polls = math.ceil(timeout / interval) + 1 if interval > 0 else 1000
        for _ in range(polls):
            data = await session.call(
                "/v2/post/publish/status/fetch/", {"publish_id": job["publish_id"]}
            )
            status = data.get("status")
            if status == "FAILED":
                reason = data.get("fail_reason")
                raise_for_code(reason if isinstance(reason, str) and reason else "unknown_failure")
            if status in ("PUBLISH_COMPLETE", "SEND_TO_USER_INBOX"):
                return _result(data, job)
            if self.ctx.clock.now() >= deadline:
                break
            await self._sleep(interval)
        raise Transient(
            f"TikTok is still processing publish {job['publish_id']}; it is checked again "
            "at the next attempt (the video is not uploaded twice)"
        )

    async def _resume(self, session: _Session, job: dict[str, Any], size: int) -> Reconciled:
        """What became of a saved publish: the post, None (nothing went out and nothing
        will), UNKNOWN, or the wait for TikTok to finish processing."""
        try:
            data = await session.call(
                "/v2/post/publish/status/fetch/", {"publish_id": job["publish_id"]}
            )
        except Permanent:
            return UNKNOWN
        status = data.get("status")
        if status in ("PUBLISH_COMPLETE", "SEND_TO_USER_INBOX"):
            return _result(data, job)
        if status == "FAILED":
            reason = data.get("fail_reason")
            if reason in RETRYABLE_FAILURES:
                return None
            raise_for_code(reason if isinstance(reason, str) and reason else "unknown_failure")
        if status in ("PROCESSING_UPLOAD", "PROCESSING_DOWNLOAD"):
            uploaded = data.get("uploaded_bytes")
            if isinstance(uploaded, int) and not isinstance(uploaded, bool) and uploaded < size:
                return None  # TikTok never got every byte: it cannot publish this one
            if uploaded == size:
                return await self._until_published(session, job)
        return UNKNOWN

    # -- reconcile ---------------------------------------------------------------------------

    async def reconcile(self, request: PublishRequest) -> Reconciled:
        # jobs.save comes right after init, before any byte: nothing saved, nothing posted.
        if not request.job.get("publish_id"):
            return None
        try:
            session = _Session(self, request, None)
            return await self._resume(session, request.job, request.media.size)
        except TokenInvalid:
            # Needs a refresh, which must be saved: publish() asks about the same publish_id
            # first thing, with a JobStore to save the rotated tokens in.
            return None


def _result(data: dict[str, Any], job: dict[str, Any]) -> PublishResult:
    ids = data.get("publicaly_available_post_id") or data.get("publicly_available_post_id")
    post_id = str(ids[0]) if isinstance(ids, list) and ids else None
    user = job.get("username")
    if user and post_id:
        return PublishResult(post_id, POST_URL.format(user=user, id=post_id))
    return PublishResult(post_id, PROFILE_URL.format(user=user) if user else None)
