"""The Instagram Reels connector (Instagram API with Instagram Login, graph.instagram.com).

Publishing, with what is saved (``jobs.save``) before each irreversible step::

    read /{user}/content_publishing_limit  quota_usage >= quota_total → DailyLimitReached,
                                           nothing created
    POST /{user}/media  media_type=REELS, video_url=<signed media URL>, caption, …
      save {container_id, container_created_at}      before anything else
    GET /{container}?fields=status_code,status       until FINISHED (ERROR → media_rejected,
                                                     EXPIRED → a new container)
      save {…, publish_sent_at}                      the marker: media_publish may go out
    POST /{user}/media_publish  creation_id=<container>
      save {…, media_id}
    GET /{media}?fields=permalink                    → PublishResult(media id, permalink)

Instagram fetches the video itself from ``video_url``, so ``UPLOADPOOLS_PUBLIC_URL``
must be reachable from the internet.

A retry (``Transient``) or a crash resumes from the saved job: the same container is
polled and published, never a second one while the first can still be published, so
"post again" is always "publish this container", and a container is published at most
once (its status becomes PUBLISHED). Errors are read from the body (graph.py).
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any, ClassVar

from pydantic import BaseModel, ValidationError

from uploadpools.connectors.base import (
    UNKNOWN,
    AuthExpired,
    ConnectorContext,
    ConnectorError,
    DailyLimitReached,
    JobStore,
    MediaConstraints,
    Permanent,
    PublishRequest,
    PublishResult,
    Reconciled,
    Transient,
)
from uploadpools.connectors.instagram import (
    MAX_HASHTAGS,
    MAX_MENTIONS,
    InstagramConfig,
    InstagramOptions,
    count_tags,
)
from uploadpools.connectors.instagram.graph import NotReady, graph_request
from uploadpools.connectors.instagram.oauth import InstagramOAuth

__all__ = ["InstagramConnector"]

MAX_WIDTH = 1920


def _iso(dt: datetime) -> str:
    return dt.isoformat()


def _field_errors(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or 'options'}: {e['msg']}" for e in exc.errors()
    )


class InstagramConnector:
    platform: ClassVar[str] = "instagram"
    config_model: ClassVar[type[BaseModel]] = InstagramConfig
    options_model: ClassVar[type[BaseModel]] = InstagramOptions
    # Reels through the API (reference/platform_apis.md, Instagram "Media"). Size: one
    # copy of the reference says 1 GB, another 300 MB (UNCONFIRMED): the safe 300 MB.
    constraints: ClassVar[MediaConstraints | None] = MediaConstraints(
        containers=frozenset({"mp4", "mov"}),
        video_codecs=frozenset({"h264", "hevc"}),
        audio_codecs=frozenset({"aac"}),
        min_duration_s=3.0,
        max_duration_s=15 * 60.0,
        max_size=300 * 1024 * 1024,
        min_aspect=0.01,
        max_aspect=10.0,
        max_caption_chars=2200,
    )

    def __init__(self, ctx: ConnectorContext) -> None:
        self._ctx = ctx
        self._settings = ctx.settings
        self._oauth = InstagramOAuth(ctx.settings, clock=ctx.clock)

    # -- plumbing ----------------------------------------------------------------------------

    def _url(self, node: str) -> str:
        base = self._settings.instagram_graph_base.rstrip("/")
        return f"{base}/{self._settings.instagram_graph_version}/{node}"

    async def _get(self, node: str, token: str, what: str, **params: Any) -> dict[str, Any]:
        return await graph_request(
            self._ctx.http,
            "GET",
            self._url(node),
            what=what,
            params={**params, "access_token": token},
        )

    async def _post(self, node: str, token: str, what: str, **data: Any) -> dict[str, Any]:
        return await graph_request(
            self._ctx.http, "POST", self._url(node), what=what, data={**data, "access_token": token}
        )

    def _config(self, request: PublishRequest) -> InstagramConfig:
        try:
            return InstagramConfig.model_validate(request.config)
        except ValidationError:
            raise AuthExpired(
                "the Instagram account's stored credentials are incomplete; reconnect it"
            ) from None

    async def _fresh_config(self, request: PublishRequest, jobs: JobStore) -> InstagramConfig:
        """The config with a usable token, refreshed (and saved) when it nears expiry."""
        config = self._config(request)
        now = self._ctx.clock.now()
        if config.expires_at <= now:
            raise AuthExpired(
                f"the Instagram token expired on {config.expires_at:%Y-%m-%d}; reconnect the account"
            )
        window = timedelta(days=self._settings.instagram_refresh_within_days)
        old_enough = now - config.issued_at >= timedelta(hours=24)
        if config.expires_at - now > window or not old_enough:
            return config
        try:
            tokens = await self._oauth.refresh(self._ctx.http, config.token_set())
        except Transient:
            # The token still works; refreshing can wait for the next post.
            return config
        fresh = config.with_tokens(tokens)
        await jobs.save_config(fresh.model_dump(mode="json"))
        return fresh

    def _options(self, request: PublishRequest) -> InstagramOptions:
        try:
            return InstagramOptions.model_validate(request.options)
        except ValidationError as exc:
            raise Permanent(
                f'the item\'s options["instagram"] are invalid: {_field_errors(exc)}',
                reason="media_rejected",
            ) from None

    def _precheck(self, request: PublishRequest) -> None:
        hashtags, mentions = count_tags(request.caption)
        if hashtags > MAX_HASHTAGS:
            raise Permanent(
                f"the caption has {hashtags} hashtags; Instagram allows {MAX_HASHTAGS}",
                reason="media_rejected",
            )
        if mentions > MAX_MENTIONS:
            raise Permanent(
                f"the caption has {mentions} @-mentions; Instagram allows {MAX_MENTIONS}",
                reason="media_rejected",
            )
        if request.media.width > MAX_WIDTH:
            raise Permanent(
                f"the video is {request.media.width} px wide; Instagram accepts at most "
                f"{MAX_WIDTH} columns",
                reason="media_rejected",
            )

    # -- publishing --------------------------------------------------------------------------

    async def publish(self, request: PublishRequest, jobs: JobStore) -> PublishResult:
        job = dict(request.job)
        if job.get("media_id"):
            # Already posted by an earlier attempt: report it, whatever else changed.
            return await self._posted(request, str(job["media_id"]))
        options = self._options(request)
        self._precheck(request)
        config = await self._fresh_config(request, jobs)
        token, user = config.access_token, config.user_id

        if job.get("container_id"):
            status, text = await self._status(token, str(job["container_id"]))
            if status == "PUBLISHED":
                # An earlier attempt's media_publish went out (its answer was lost).
                return await self._found(token, user, job, request)
            if status == "ERROR":
                raise self._rejected(text)
            if status == "EXPIRED":
                # Never published and now never publishable: a new container is safe.
                job = {}

        if not job.get("container_id"):
            await self._check_quota(token, user)
            job = await self._create(request, options, token, user, jobs)

        container = str(job["container_id"])
        await self._wait_finished(token, container)

        job["publish_sent_at"] = _iso(self._ctx.clock.now())
        await jobs.save(job)
        try:
            published = await self._post(
                f"{user}/media_publish", token, "publishing the reel", creation_id=container
            )
        except NotReady as exc:
            raise Transient(exc.detail, retry_after=self._settings.instagram_poll_interval_s)
        media_id = published.get("id")
        if not media_id:
            # Published or not, we cannot tell from this answer: the retry asks the container.
            raise Transient("Instagram's answer to media_publish had no media id")
        job["media_id"] = str(media_id)
        await jobs.save(job)
        return await self._result(token, str(media_id))

    async def _check_quota(self, token: str, user: str) -> None:
        answer = await self._get(
            f"{user}/content_publishing_limit",
            token,
            "reading the publishing limit",
            fields="quota_usage,config",
        )
        data = answer.get("data")
        entry = data[0] if isinstance(data, list) and data and isinstance(data[0], dict) else {}
        used = entry.get("quota_usage")
        config = entry.get("config") if isinstance(entry.get("config"), dict) else {}
        total = config.get("quota_total")
        if isinstance(used, int) and isinstance(total, int) and used >= total:
            hours = (config.get("quota_duration") or 86400) / 3600
            raise DailyLimitReached(
                f"Instagram's publishing limit for this account is used up: {used} of {total} "
                f"posts in the last {hours:g} h"
            )

    async def _create(
        self,
        request: PublishRequest,
        options: InstagramOptions,
        token: str,
        user: str,
        jobs: JobStore,
    ) -> dict[str, Any]:
        fields: dict[str, Any] = {
            "media_type": "REELS",
            "video_url": request.media.url,
            "caption": request.caption,
            "share_to_feed": "true" if options.share_to_feed else "false",
        }
        if options.cover_url is not None:
            fields["cover_url"] = str(options.cover_url)
        if options.thumb_offset is not None:
            fields["thumb_offset"] = str(options.thumb_offset)
        if options.collaborators:
            fields["collaborators"] = ",".join(options.collaborators)
        if options.audio_name:
            fields["audio_name"] = options.audio_name
        if options.location_id:
            fields["location_id"] = options.location_id
        created = await self._post(f"{user}/media", token, "creating the reel container", **fields)
        container = created.get("id")
        if not container:
            raise Transient("Instagram's answer to creating the container had no id")
        job = {"container_id": str(container), "container_created_at": _iso(self._ctx.clock.now())}
        await jobs.save(job)
        return job

    async def _status(self, token: str, container: str) -> tuple[str, str]:
        answer = await self._get(
            container, token, "reading the container status", fields="status_code,status"
        )
        return str(answer.get("status_code") or ""), str(answer.get("status") or "")

    def _rejected(self, text: str) -> Permanent:
        detail = f"Instagram could not process the video: {text or 'status ERROR'}"
        if "download" in text.lower() or "uri" in text.lower():
            detail += (
                ". Instagram fetches the video from this server: UPLOADPOOLS_PUBLIC_URL must "
                "be reachable from the internet"
            )
        return Permanent(detail, reason="media_rejected")

    async def _wait_finished(self, token: str, container: str) -> None:
        interval = self._settings.instagram_poll_interval_s
        deadline = self._ctx.clock.now() + timedelta(
            seconds=self._settings.instagram_processing_timeout_s
        )
        while True:
            status, text = await self._status(token, container)
            if status == "FINISHED":
                return
            if status == "ERROR":
                raise self._rejected(text)
            if status == "EXPIRED":
                # Only after 24 h; the next attempt starts a new container.
                raise Transient("the Instagram container expired before it was published")
            if status == "PUBLISHED":
                raise Permanent("the Instagram container was already published by someone else")
            if self._ctx.clock.now() >= deadline:
                # Not a failure: the retry polls the same container again.
                raise Transient(
                    "Instagram is still processing the video after "
                    f"{self._settings.instagram_processing_timeout_s:g} s",
                    retry_after=interval or None,
                )
            await asyncio.sleep(interval)

    async def _result(self, token: str, media_id: str) -> PublishResult:
        # Posted: nothing after this point may turn into an error.
        try:
            answer = await self._get(media_id, token, "reading the permalink", fields="permalink")
        except ConnectorError:
            return PublishResult(remote_id=media_id)
        link = answer.get("permalink")
        return PublishResult(remote_id=media_id, remote_url=link if isinstance(link, str) else None)

    async def _posted(self, request: PublishRequest, media_id: str) -> PublishResult:
        try:
            token = self._config(request).access_token
        except AuthExpired:
            return PublishResult(remote_id=media_id)
        return await self._result(token, media_id)

    async def _found(
        self, token: str, user: str, job: dict[str, Any], request: PublishRequest
    ) -> PublishResult:
        """The post of a container known to be PUBLISHED whose media id was not saved.

        The container does not name its media, so the account's recent media are read
        (``GET /{user}/media``) and the one reel with this caption, published after the
        container was created, is taken. Posted either way; without a single match the
        post's id and link are simply unknown.
        """
        try:
            answer = await self._get(
                f"{user}/media",
                token,
                "listing recent media",
                fields="id,caption,media_product_type,permalink,timestamp",
                limit=25,
            )
        except ConnectorError:
            return PublishResult()
        since = job.get("container_created_at")
        start = datetime.fromisoformat(since) if isinstance(since, str) else None
        matches = []
        for m in answer.get("data") or []:
            if not isinstance(m, dict) or m.get("caption", "") != request.caption:
                continue
            if m.get("media_product_type") not in (None, "REELS"):
                continue
            stamp = m.get("timestamp")
            if start is not None and isinstance(stamp, str):
                try:
                    if datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S%z") < start - timedelta(
                        minutes=5
                    ):
                        continue
                except ValueError:
                    pass
            matches.append(m)
        if len(matches) != 1:
            return PublishResult()
        m = matches[0]
        link = m.get("permalink")
        return PublishResult(
            remote_id=str(m.get("id")), remote_url=link if isinstance(link, str) else None
        )

    # -- after a crash -----------------------------------------------------------------------

    async def reconcile(self, request: PublishRequest) -> Reconciled:
        job = request.job
        if job.get("media_id"):
            return await self._posted(request, str(job["media_id"]))
        if not job.get("container_id"):
            # Nothing saved: at most an unpublished container exists, which expires unseen.
            return None
        if not job.get("publish_sent_at"):
            # The marker is saved before media_publish, so media_publish never went out.
            # None lets the engine call publish(), which resumes with this same container.
            return None
        # media_publish may or may not have reached Instagram. The container tells:
        # publishing turns it PUBLISHED. FINISHED means it was not published, and
        # publishing again is safe because publish() re-sends media_publish for this same
        # container, and one container is published at most once: even if the first call
        # were still under way on Instagram's side, the second cannot make a second post.
        try:
            config = self._config(request)
            status, _ = await self._status(config.access_token, str(job["container_id"]))
        except (AuthExpired, Permanent):
            return UNKNOWN
        if status == "PUBLISHED":
            return await self._found(config.access_token, config.user_id, job, request)
        if status in ("FINISHED", "ERROR", "EXPIRED"):
            return None
        return UNKNOWN
