"""Publishing to YouTube with the resumable upload protocol.

1. ``POST {upload_base}/videos?uploadType=resumable&part=snippet,status`` with the video
   resource (title, description, tags, categoryId, privacyStatus, selfDeclaredMadeForKids)
   → 200 and ``Location``: the session URI. It is saved with ``jobs.save`` before any byte
   is sent.
2. ``PUT <session>`` chunk by chunk (``youtube_chunk_bytes``, a multiple of 256 KiB),
   ``Content-Range: bytes first-last/total``. A 308 answers a chunk and its ``Range:
   bytes=0-N`` says what Google holds (none: nothing); the next chunk starts at N+1.
   The last chunk answers 200/201 with the video resource: its ``id`` is the post.
3. After a crash or a timeout, ``PUT <session>`` with ``Content-Range: bytes */total``
   asks for the status: 200/201 means the video exists (its id is in the body), 308
   means it does not yet (no video exists until the last byte is in) and says where to
   resume, 404/410 means the session expired and no video was created.

Only the last byte creates a video, so every answer is provable: ``reconcile`` never
needs to return ``UNKNOWN``.

``options`` (``options.youtube`` of the item): ``privacy`` (or ``privacyStatus``:
public, unlisted, private; default public), ``tags`` (list), ``categoryId`` (default
22), ``madeForKids`` (or ``selfDeclaredMadeForKids``; default false),
``notifySubscribers`` (default true).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, ClassVar

import httpx

from uploadpools.connectors.base import (
    ConnectorContext,
    JobStore,
    MediaConstraints,
    Permanent,
    PublishRequest,
    PublishResult,
    Reconciled,
    Transient,
)
from uploadpools.connectors.oauth_session import OAuthConfig, OAuthSession
from uploadpools.connectors.youtube.errors import google_error
from uploadpools.connectors.youtube.oauth import YouTubeOAuth

TITLE_MAX = 100
DESCRIPTION_MAX = 5000
TAGS_MAX = 500
PRIVACY = ("public", "unlisted", "private")


class _Expired(Exception):
    """The upload session is gone (404/410): no video was created."""


def shorts_url(video_id: str) -> str:
    return f"https://www.youtube.com/shorts/{video_id}"


def _clean(text: str) -> str:
    # YouTube refuses '<' and '>' in titles and descriptions.
    return text.replace("<", "\u2039").replace(">", "\u203a")


def video_resource(request: PublishRequest) -> dict[str, Any]:
    """The ``video`` resource sent when the upload session starts."""
    opts = request.options
    title = request.title.strip() or request.caption.strip().split("\n", 1)[0]
    title = _clean(title or request.pool_name)[:TITLE_MAX]
    description = _clean(request.caption)
    # The description limit is in bytes: cut on a character boundary.
    description = description.encode()[:DESCRIPTION_MAX].decode(errors="ignore")
    snippet: dict[str, Any] = {
        "title": title,
        "description": description,
        "categoryId": str(opts.get("categoryId", opts.get("category_id", "22"))),
    }
    tags = opts.get("tags")
    if isinstance(tags, list) and tags:
        kept: list[str] = []
        used = 0
        for tag in (str(t).strip() for t in tags):
            cost = len(tag) + (2 if " " in tag else 0) + (1 if kept else 0)
            if not tag or used + cost > TAGS_MAX:
                continue
            kept.append(_clean(tag))
            used += cost
        snippet["tags"] = kept
    privacy = str(opts.get("privacy", opts.get("privacyStatus", "public"))).lower()
    if privacy not in PRIVACY:
        raise Permanent(
            f"options.youtube.privacy must be one of {', '.join(PRIVACY)}, not {privacy!r}"
        )
    kids = opts.get("madeForKids", opts.get("selfDeclaredMadeForKids", False))
    status = {"privacyStatus": privacy, "selfDeclaredMadeForKids": bool(kids)}
    return {"snippet": snippet, "status": status}


class YouTubeConnector:
    platform: ClassVar[str] = "youtube"
    config_model: ClassVar[type[OAuthConfig]] = OAuthConfig
    # Shorts: square or vertical, up to three minutes (support.google.com/youtube/answer/15424877).
    # Adjust with UPLOADPOOLS_MEDIA_CONSTRAINTS='{"youtube": {...}}'.
    constraints: ClassVar[MediaConstraints | None] = MediaConstraints(
        max_duration_s=180.0,
        max_size=256 * 1024**3,
        max_aspect=1.0,
        max_title_chars=TITLE_MAX,
        max_caption_chars=DESCRIPTION_MAX,
    )

    def __init__(self, ctx: ConnectorContext) -> None:
        self.ctx = ctx
        self.http = ctx.http
        self.settings = ctx.settings
        self.provider = YouTubeOAuth(ctx.settings, ctx.clock)

    def _session(self, request: PublishRequest, jobs: JobStore | None) -> OAuthSession:
        return OAuthSession(
            self.provider,
            self.http,
            request.config,
            now=self.ctx.clock.now,
            margin_s=self.settings.oauth_refresh_margin_s,
            jobs=jobs,
        )

    # -- the protocol --------------------------------------------------------------------------

    async def publish(self, request: PublishRequest, jobs: JobStore) -> PublishResult:
        auth = self._session(request, jobs)
        total = request.media.size
        session_uri = request.job.get("upload_url")
        offset = 0
        if session_uri:
            # An earlier attempt started a session: ask where it stands before sending more.
            try:
                done, offset = await self._status(auth, session_uri, total)
                if done is not None:
                    return done
            except _Expired:
                session_uri = None
        for _ in range(2):
            if not session_uri:
                session_uri = await auth.call(lambda token: self._start(token, request))
                await jobs.save({"upload_url": session_uri, "total": total})
                offset = 0
            try:
                return await self._send(auth, request, session_uri, offset)
            except _Expired:
                session_uri = None  # expired mid-way: nothing was created, start again once
        raise Transient("YouTube upload session expired twice; trying again later")

    async def reconcile(self, request: PublishRequest) -> Reconciled:
        session_uri = request.job.get("upload_url")
        if not session_uri:
            return None
        try:
            done, _ = await self._status(
                self._session(request, None), session_uri, request.media.size
            )
        except _Expired:
            return None
        # 308: the last byte never arrived, so no video exists; publish resumes the session.
        return done

    # -- steps ---------------------------------------------------------------------------------

    async def _request(
        self, doing: str, send: Callable[[], Awaitable[httpx.Response]]
    ) -> httpx.Response:
        try:
            return await send()
        except httpx.TimeoutException:
            raise Transient(f"YouTube {doing}: timed out; the upload resumes from its session")
        except httpx.HTTPError as exc:
            raise Transient(f"YouTube {doing}: {type(exc).__name__}; the upload resumes later")

    async def _start(self, token: str, request: PublishRequest) -> str:
        resource = video_resource(request)
        notify = request.options.get("notifySubscribers")
        params = {"uploadType": "resumable", "part": "snippet,status"}
        if notify is not None:
            params["notifySubscribers"] = "true" if notify else "false"
        r = await self._request(
            "upload start",
            lambda: self.http.post(
                f"{self.settings.youtube_upload_base}/videos",
                params=params,
                json=resource,
                headers={
                    "Authorization": f"Bearer {token}",
                    "X-Upload-Content-Length": str(request.media.size),
                    "X-Upload-Content-Type": request.media.content_type or "video/*",
                },
            ),
        )
        if r.status_code != 200:
            raise google_error(r, "upload start")
        location = r.headers.get("location")
        if not location:
            raise Transient("YouTube upload start: no session URI (Location) in the answer")
        return location

    async def _status(
        self, auth: OAuthSession, session_uri: str, total: int
    ) -> tuple[PublishResult | None, int]:
        """(the post, -) when the upload completed, else (None, the offset to resume at)."""

        async def query(token: str) -> httpx.Response:
            return await self._request(
                "upload status",
                lambda: self.http.put(
                    session_uri,
                    content=b"",
                    headers={
                        "Authorization": f"Bearer {token}",
                        "Content-Range": f"bytes */{total}",
                    },
                ),
            )

        r = await auth.call(lambda token: self._checked(query(token), "upload status"))
        return self._outcome(r, "upload status")

    async def _checked(self, pending: Awaitable[httpx.Response], doing: str) -> httpx.Response:
        """Raise for answers that are errors of the call itself (auth, quota, 5xx)."""
        r = await pending
        if r.status_code in (200, 201, 308, 404, 410):
            return r
        raise google_error(r, doing)

    def _outcome(self, r: httpx.Response, doing: str) -> tuple[PublishResult | None, int]:
        if r.status_code in (404, 410):
            raise _Expired
        if r.status_code == 308:
            return None, _next_offset(r.headers.get("range"))
        try:
            body = r.json()
            video_id = str(body["id"])
        except (ValueError, KeyError, TypeError):
            raise Transient(f"YouTube {doing}: the upload completed without a video id")
        status = body.get("status") or {}
        if status.get("uploadStatus") in ("failed", "rejected"):
            why = status.get("failureReason") or status.get("rejectionReason") or "unknown"
            raise Permanent(
                f"YouTube {status['uploadStatus']} the video ({why})", reason="media_rejected"
            )
        return PublishResult(video_id, shorts_url(video_id)), 0

    async def _send(
        self, auth: OAuthSession, request: PublishRequest, session_uri: str, offset: int
    ) -> PublishResult:
        total = request.media.size
        chunk = self.settings.youtube_chunk_bytes
        while True:
            end = min(offset + chunk, total)
            data = b"".join([part async for part in request.media.open(start=offset, end=end)])
            if len(data) != end - offset:
                raise Permanent(f"the stored video is shorter than its recorded size {total}")

            async def put(token: str, data: bytes = data, first: int = offset) -> httpx.Response:
                return await self._checked(
                    self._request(
                        "upload",
                        lambda: self.http.put(
                            session_uri,
                            content=data,
                            headers={
                                "Authorization": f"Bearer {token}",
                                "Content-Type": request.media.content_type or "video/*",
                                "Content-Range": f"bytes {first}-{first + len(data) - 1}/{total}",
                            },
                        ),
                    ),
                    "upload",
                )

            r = await auth.call(put)
            done, next_offset = self._outcome(r, "upload")
            if done is not None:
                return done
            if next_offset >= total:
                raise Transient("YouTube holds every byte but did not finish the upload")
            offset = next_offset


def _next_offset(range_header: str | None) -> int:
    """``Range: bytes=0-N`` → N+1; absent → 0 (Google holds nothing yet)."""
    if not range_header:
        return 0
    try:
        _, _, span = range_header.partition("=")
        return int(span.split("-", 1)[1]) + 1
    except (IndexError, ValueError):
        return 0
