"""A fake Instagram (login host + graph host on one port) as a real HTTP server on 127.0.0.1.

It reproduces the documented protocol closely enough to catch mistakes:

* ``GET /oauth/authorize`` redirects to ``redirect_uri`` with a code and the state (or
  ``error=access_denied`` when ``consent`` is False); ``POST /oauth/access_token`` trades
  a code once for a short-lived token; ``GET /access_token`` (``ig_exchange_token``)
  gives a 60-day token; ``GET /refresh_access_token`` refuses tokens younger than 24 h.
* ``/{version}/me``, ``/{user}/content_publishing_limit``, ``POST /{user}/media``
  (REELS only; it DOWNLOADS ``video_url`` and fails the container with ERROR when the
  download fails or the bytes are not an MP4/MOV), ``GET /{container}?fields=status_code``
  (IN_PROGRESS for ``polls_before_finished`` polls, then FINISHED; EXPIRED after 24 h),
  ``POST /{user}/media_publish`` (refuses unfinished containers with 9007/2207027 and a
  second publish of one container; enforces ``quota_total`` with 9/2207042),
  ``GET /{media}?fields=permalink`` and ``GET /{user}/media``.
* Every token is checked (190 when unknown, revoked or expired, by the shared clock).
* ``fail(endpoint, status, body)`` queues an injected answer for one endpoint.
* ``posts`` records what was published, so tests can assert exactly one post.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
import secrets
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx

CLIENT_ID = "1234567890"
CLIENT_SECRET = "fake-instagram-app-secret"
VERSION = "v25.0"
LONG_LIVED = timedelta(days=60)


def graph_error(
    code: int, subcode: int | None = None, message: str = "error", **more: Any
) -> dict[str, Any]:
    err: dict[str, Any] = {
        "message": message,
        "type": "OAuthException",
        "code": code,
        "fbtrace_id": "AbCdEf123",
    }
    if subcode is not None:
        err["error_subcode"] = subcode
    err.update(more)
    return {"error": err}


PUBLISH_CAP = graph_error(
    9,
    2207042,
    "Application request limit reached",
    error_user_msg=(
        "You reached maximum number of posts that is allowed to be published by "
        "Content Publishing API."
    ),
)
TOKEN_EXPIRED = graph_error(
    190, 463, "Error validating access token: Session has expired.", is_transient=False
)


@dataclass
class Token:
    user_id: str
    kind: str  # short | long
    issued_at: datetime
    expires_at: datetime
    revoked: bool = False


@dataclass
class Container:
    id: str
    user_id: str
    params: dict[str, str]
    created_at: datetime
    download_error: str | None = None
    video_sha256: str | None = None
    polls: int = 0
    error_status: str | None = None
    published_media: str | None = None


@dataclass
class FakeInstagram:
    clock: Any
    port: int = 0
    quota_total: int = 50
    quota_used_before: int = 0
    polls_before_finished: int = 1
    consent: bool = True
    # Answer the code exchange in the flat shape instead of the documented {"data": [..]}.
    flat_code_answer: bool = False
    # Make every new container end in ERROR with this status text (bad media).
    container_error: str | None = None
    users: dict[str, str] = field(default_factory=lambda: {"17841400000000001": "sunrise.shop"})
    tokens: dict[str, Token] = field(default_factory=dict)
    codes: dict[str, tuple[str, str]] = field(default_factory=dict)
    containers: dict[str, Container] = field(default_factory=dict)
    posts: list[dict[str, Any]] = field(default_factory=list)
    requests: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)
    failures: dict[str, list[tuple[int, dict[str, Any]]]] = field(default_factory=dict)
    publish_attempts: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    _ids: Iterator[int] = field(default_factory=lambda: itertools.count(90000))

    # -- test helpers -----------------------------------------------------------------------

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def user_id(self) -> str:
        return next(iter(self.users))

    def issue_code(self, redirect_uri: str, user_id: str | None = None) -> str:
        code = secrets.token_urlsafe(12)
        self.codes[code] = (user_id or self.user_id, redirect_uri)
        return code

    def long_lived_token(
        self, user_id: str | None = None, *, issued_at: datetime | None = None
    ) -> Token:
        issued = issued_at or self.clock.now()
        token = Token(user_id or self.user_id, "long", issued, issued + LONG_LIVED)
        self.tokens["IGAA" + secrets.token_urlsafe(16)] = token
        return token

    def token_string(self, token: Token) -> str:
        return next(k for k, v in self.tokens.items() if v is token)

    def fail(self, endpoint: str, status: int, body: dict[str, Any], times: int = 1) -> None:
        """Answer the next ``times`` calls of ``endpoint`` with ``status`` and ``body``.

        Endpoints: code, exchange, refresh, me, limit, create, status, publish, permalink, list.
        """
        self.failures.setdefault(endpoint, []).extend([(status, body)] * times)

    def containers_created(self) -> int:
        return len(self.containers)

    # -- protocol ---------------------------------------------------------------------------

    def _new_id(self) -> str:
        return str(next(self._ids))

    def _token(self, params: dict[str, str]) -> tuple[Token | None, dict[str, Any] | None]:
        raw = params.get("access_token", "")
        token = self.tokens.get(raw)
        if token is None:
            return None, graph_error(
                190, None, "Invalid OAuth access token - Cannot parse access token"
            )
        if token.revoked:
            return None, graph_error(190, 460, "Error validating access token: password changed")
        if token.expires_at <= self.clock.now():
            return None, TOKEN_EXPIRED
        return token, None

    def handle(
        self, method: str, path: str, params: dict[str, str]
    ) -> tuple[int, Any, dict[str, str]]:
        with self.lock:
            self.requests.append((method, path, dict(params)))
        parts = [p for p in path.split("/") if p]
        if parts and re.fullmatch(r"v\d+\.\d+", parts[0]):
            if parts[0] != VERSION:
                return 400, graph_error(2635, None, f"unknown version {parts[0]}"), {}
            parts = parts[1:]
        endpoint, args = self._route(method, parts)
        if endpoint is None:
            return 404, graph_error(100, 33, "Unsupported request - object does not exist"), {}
        with self.lock:
            queued = self.failures.get(endpoint)
            if queued:
                status, body = queued.pop(0)
                return status, body, {}
        return getattr(self, f"_{endpoint}")(params, *args)

    def _route(self, method: str, parts: list[str]) -> tuple[str | None, tuple[str, ...]]:
        if method == "GET" and parts == ["oauth", "authorize"]:
            return "authorize", ()
        if method == "POST" and parts == ["oauth", "access_token"]:
            return "code", ()
        if method == "GET" and parts == ["access_token"]:
            return "exchange", ()
        if method == "GET" and parts == ["refresh_access_token"]:
            return "refresh", ()
        if method == "GET" and parts == ["me"]:
            return "me", ()
        if len(parts) == 2 and parts[0] in self.users:
            edge = {
                ("GET", "content_publishing_limit"): "limit",
                ("POST", "media"): "create",
                ("GET", "media"): "list",
                ("POST", "media_publish"): "publish",
            }.get((method, parts[1]))
            return edge, (parts[0],)
        if method == "GET" and len(parts) == 1:
            if parts[0] in self.containers:
                return "status", (parts[0],)
            if any(p["id"] == parts[0] for p in self.posts):
                return "permalink", (parts[0],)
        return None, ()

    def _authorize(self, params: dict[str, str]) -> tuple[int, Any, dict[str, str]]:
        if params.get("client_id") != CLIENT_ID or params.get("response_type") != "code":
            return 400, {"error_message": "Invalid client_id or response_type"}, {}
        redirect = params.get("redirect_uri", "")
        if not self.consent:
            query = {
                "error": "access_denied",
                "error_reason": "user_denied",
                "error_description": "The user denied your request.",
                "state": params.get("state", ""),
            }
        else:
            query = {"code": self.issue_code(redirect), "state": params.get("state", "")}
        # Instagram appends "#_" to the redirect (a fragment: browsers do not send it).
        return 302, {}, {"location": f"{redirect}?{urlencode(query)}#_"}

    def _code(self, params: dict[str, str]) -> tuple[int, Any, dict[str, str]]:
        if params.get("client_id") != CLIENT_ID or params.get("client_secret") != CLIENT_SECRET:
            return (
                400,
                {
                    "error_type": "OAuthException",
                    "code": 400,
                    "error_message": "Invalid client secret",
                },
                {},
            )
        if params.get("grant_type") != "authorization_code":
            return (
                400,
                {
                    "error_type": "OAuthException",
                    "code": 400,
                    "error_message": "Invalid grant_type",
                },
                {},
            )
        with self.lock:
            found = self.codes.pop(params.get("code", ""), None)
        if found is None or found[1] != params.get("redirect_uri"):
            return (
                400,
                {
                    "error_type": "OAuthException",
                    "code": 400,
                    "error_message": "Invalid authorization code",
                },
                {},
            )
        now = self.clock.now()
        token = Token(found[0], "short", now, now + timedelta(hours=1))
        raw = "IGQ" + secrets.token_urlsafe(16)
        self.tokens[raw] = token
        entry = {
            "access_token": raw,
            "user_id": int("1" + found[0][-8:]),  # the login's own id, not the account id
            "permissions": "instagram_business_basic,instagram_business_content_publish",
        }
        return 200, (entry if self.flat_code_answer else {"data": [entry]}), {}

    def _exchange(self, params: dict[str, str]) -> tuple[int, Any, dict[str, str]]:
        if (
            params.get("grant_type") != "ig_exchange_token"
            or params.get("client_secret") != CLIENT_SECRET
        ):
            return 400, graph_error(100, None, "Invalid parameter"), {}
        token, err = self._token(params)
        if err is not None or token is None:
            return 400, err, {}
        if token.kind != "short":
            return 400, graph_error(100, None, "a long-lived token cannot be exchanged"), {}
        new = self.long_lived_token(token.user_id)
        return (
            200,
            {"access_token": self.token_string(new), "token_type": "bearer", "expires_in": 5184000},
            {},
        )

    def _refresh(self, params: dict[str, str]) -> tuple[int, Any, dict[str, str]]:
        if params.get("grant_type") != "ig_refresh_token":
            return 400, graph_error(100, None, "Invalid parameter"), {}
        token, err = self._token(params)
        if err is not None or token is None:
            return 400, err, {}
        if token.kind != "long" or self.clock.now() - token.issued_at < timedelta(hours=24):
            return (
                400,
                graph_error(100, None, "the token must be long-lived and at least 24 hours old"),
                {},
            )
        new = self.long_lived_token(token.user_id)
        return (
            200,
            {"access_token": self.token_string(new), "token_type": "bearer", "expires_in": 5184000},
            {},
        )

    def _me(self, params: dict[str, str]) -> tuple[int, Any, dict[str, str]]:
        token, err = self._token(params)
        if err is not None or token is None:
            return 400, err, {}
        return (
            200,
            {
                "id": "app-scoped-" + token.user_id[-4:],
                "user_id": token.user_id,
                "username": self.users[token.user_id],
                "account_type": "BUSINESS",
            },
            {},
        )

    def _owner(self, params: dict[str, str], user: str) -> dict[str, Any] | None:
        token, err = self._token(params)
        if err is not None:
            return err
        if token is None or token.user_id != user:
            return graph_error(10, None, "Application does not have permission for this action")
        return None

    def _used(self) -> int:
        since = self.clock.now() - timedelta(hours=24)
        return self.quota_used_before + sum(1 for p in self.posts if p["published_at"] > since)

    def _limit(self, params: dict[str, str], user: str) -> tuple[int, Any, dict[str, str]]:
        if (err := self._owner(params, user)) is not None:
            return 400, err, {}
        return (
            200,
            {
                "data": [
                    {
                        "quota_usage": self._used(),
                        "config": {"quota_total": self.quota_total, "quota_duration": 86400},
                    }
                ]
            },
            {},
        )

    def _create(self, params: dict[str, str], user: str) -> tuple[int, Any, dict[str, str]]:
        if (err := self._owner(params, user)) is not None:
            return 400, err, {}
        if params.get("media_type") != "REELS":
            return 400, graph_error(100, 2207023, "The media type is unknown"), {}
        if not params.get("video_url"):
            return 400, graph_error(100, None, "The parameter video_url is required"), {}
        if len(params.get("caption", "")) > 2200:
            return 400, graph_error(36004, 2207010, "The caption is too long"), {}
        container = Container(self._new_id(), user, dict(params), self.clock.now())
        container.download_error, container.video_sha256 = _download(params["video_url"])
        container.error_status = self.container_error
        with self.lock:
            self.containers[container.id] = container
        return 200, {"id": container.id}, {}

    def _status_code(self, c: Container) -> tuple[str, str]:
        if c.published_media is not None:
            return "PUBLISHED", "Published"
        if c.download_error is not None:
            return "ERROR", f"Error: {c.download_error}"
        if c.error_status is not None:
            return "ERROR", c.error_status
        if self.clock.now() - c.created_at >= timedelta(hours=24):
            return "EXPIRED", "Expired"
        if c.polls < self.polls_before_finished:
            return "IN_PROGRESS", "In Progress"
        return "FINISHED", "Finished"

    def _status(self, params: dict[str, str], cid: str) -> tuple[int, Any, dict[str, str]]:
        c = self.containers[cid]
        if (err := self._owner(params, c.user_id)) is not None:
            return 400, err, {}
        code, text = self._status_code(c)
        c.polls += 1
        return 200, {"status_code": code, "status": text, "id": cid}, {}

    def _publish(self, params: dict[str, str], user: str) -> tuple[int, Any, dict[str, str]]:
        if (err := self._owner(params, user)) is not None:
            return 400, err, {}
        with self.lock:
            self.publish_attempts += 1
            c = self.containers.get(params.get("creation_id", ""))
            if c is None or c.user_id != user:
                return 400, graph_error(24, 2207006, "The media with id cannot be found"), {}
            code, _ = self._status_code(c)
            if code == "PUBLISHED":
                return (
                    400,
                    graph_error(9007, 2207008, "The media builder has already been published"),
                    {},
                )
            if code != "FINISHED":
                return (
                    400,
                    graph_error(
                        9007,
                        2207027,
                        "The media is not ready for publishing, please wait for a moment",
                    ),
                    {},
                )
            if self._used() >= self.quota_total:
                return 400, PUBLISH_CAP, {}
            media_id = self._new_id()
            c.published_media = media_id
            self.posts.append(
                {
                    "id": media_id,
                    "container_id": c.id,
                    "user_id": user,
                    "caption": c.params.get("caption", ""),
                    "share_to_feed": c.params.get("share_to_feed"),
                    "thumb_offset": c.params.get("thumb_offset"),
                    "video_sha256": c.video_sha256,
                    "published_at": self.clock.now(),
                    "shortcode": "C" + secrets.token_hex(5),
                }
            )
        return 200, {"id": media_id}, {}

    def _post(self, media_id: str) -> dict[str, Any]:
        return next(p for p in self.posts if p["id"] == media_id)

    def _permalink(self, params: dict[str, str], media_id: str) -> tuple[int, Any, dict[str, str]]:
        post = self._post(media_id)
        if (err := self._owner(params, post["user_id"])) is not None:
            return 400, err, {}
        return (
            200,
            {"id": media_id, "permalink": f"https://www.instagram.com/reel/{post['shortcode']}/"},
            {},
        )

    def _list(self, params: dict[str, str], user: str) -> tuple[int, Any, dict[str, str]]:
        if (err := self._owner(params, user)) is not None:
            return 400, err, {}
        mine = [p for p in reversed(self.posts) if p["user_id"] == user]
        return (
            200,
            {
                "data": [
                    {
                        "id": p["id"],
                        "caption": p["caption"],
                        "media_product_type": "REELS",
                        "permalink": f"https://www.instagram.com/reel/{p['shortcode']}/",
                        "timestamp": p["published_at"].strftime("%Y-%m-%dT%H:%M:%S+0000"),
                    }
                    for p in mine
                ]
            },
            {},
        )


def _download(url: str) -> tuple[str | None, str | None]:
    """Fetch the video as Meta would; (error, sha256)."""
    try:
        with httpx.Client(timeout=10.0, follow_redirects=False) as client:
            r = client.get(url)
    except httpx.HTTPError as exc:
        return f"Media download has failed ({type(exc).__name__})", None
    if r.status_code != 200:
        return (
            f"Media download has failed. The media URI doesn't meet our requirements (HTTP {r.status_code})",
            None,
        )
    body = r.content
    # MP4 and MOV start with a box whose type is at bytes 4..8.
    if body[4:8] not in (b"ftyp", b"moov", b"mdat", b"wide", b"free"):
        return "The video format is not supported. Please check spec for supported format", None
    return None, hashlib.sha256(body).hexdigest()


@contextmanager
def running(fake: FakeInstagram) -> Iterator[FakeInstagram]:
    """Serve ``fake`` on 127.0.0.1 for the duration of the block."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def _serve(self, method: str) -> None:
            split = urlsplit(self.path)
            params = {k: v[-1] for k, v in parse_qs(split.query, keep_blank_values=True).items()}
            length = int(self.headers.get("content-length", "0") or 0)
            if length:
                raw = self.rfile.read(length).decode()
                params.update({k: v[-1] for k, v in parse_qs(raw, keep_blank_values=True).items()})
            auth = self.headers.get("authorization", "")
            if auth.lower().startswith("bearer ") and "access_token" not in params:
                params["access_token"] = auth[7:]
            status, body, headers = fake.handle(method, split.path, params)
            out = json.dumps(body).encode()
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("content-type", "application/json; charset=UTF-8")
            self.send_header("content-length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)

        def do_GET(self) -> None:
            self._serve("GET")

        def do_POST(self) -> None:
            self._serve("POST")

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    fake.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()
