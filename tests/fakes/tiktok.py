"""A fake TikTok (Login Kit + Content Posting API) as a real HTTP server on 127.0.0.1.

It follows the documented protocol strictly, so a connector that deviates fails:

* ``GET /v2/auth/authorize/`` checks ``client_key``, ``response_type``, the scopes and the
  PKCE challenge, then redirects to ``redirect_uri`` with ``code``, ``scopes`` and
  ``state`` (or ``error=access_denied`` when ``consent`` is False).
* ``POST /v2/oauth/token/`` (form-encoded only) trades a code once, checking the client
  secret, the redirect URI and the PKCE verifier; refreshes rotate the refresh token
  (the old one stops working) and refuse unknown ones with ``invalid_grant``.
* ``GET /v2/user/info/``, ``POST /v2/post/publish/creator_info/query/``,
  ``POST /v2/post/publish/video/init/`` (FILE_UPLOAD; validates the chunk arithmetic
  with ``check_source_info``, the privacy level against the creator's options, the
  caption length, the audit rule), ``PUT /upload/?upload_id=&upload_token=`` (sequential
  chunks of exactly the announced size, ``Content-Range``/``Content-Type``/
  ``Content-Length`` checked; 206 then 201; 416 when the range is not the progress) and
  ``POST /v2/post/publish/status/fetch/`` (PROCESSING_UPLOAD for ``processing_polls``
  polls after the upload, then PUBLISH_COMPLETE or FAILED with ``fail_reason``).
* Bearer tokens are checked on every call (``access_token_invalid``, ``scope_not_authorized``).
* ``fail(endpoint, status, code)`` queues an injected answer; ``posts`` records what
  TikTok would publish (a post counts once its last chunk is in), so tests can assert
  exactly one post.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import re
import secrets
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

CLIENT_KEY = "fake-tiktok-client-key"
CLIENT_SECRET = "fake-tiktok-client-secret"

PRIVACY_LEVELS = ("PUBLIC_TO_EVERYONE", "MUTUAL_FOLLOW_FRIENDS", "FOLLOWER_OF_CREATOR", "SELF_ONLY")
CONTENT_TYPES = ("video/mp4", "video/quicktime", "video/webm")

# The chunk rules, read strictly (MB as 2^20 for minimums and 10^6 for maximums).
STRICT_MIN_CHUNK = 5 * 1024 * 1024
STRICT_MAX_CHUNK = 64_000_000
STRICT_MAX_FINAL = 128_000_000
MAX_VIDEO = 4 * 1024**3


def check_source_info(video_size: int, chunk_size: int, total_chunk_count: int) -> str | None:
    """Why TikTok would refuse this FILE_UPLOAD plan, or None when it is valid."""
    for name, value in (
        ("video_size", video_size),
        ("chunk_size", chunk_size),
        ("total_chunk_count", total_chunk_count),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            return f"{name} must be a positive integer"
    if video_size > MAX_VIDEO:
        return "video_size is over 4 GB"
    if not 1 <= total_chunk_count <= 1000:
        return "total_chunk_count must be 1 to 1000"
    if total_chunk_count != video_size // chunk_size:
        return "total_chunk_count must be floor(video_size / chunk_size)"
    if video_size < STRICT_MIN_CHUNK and (chunk_size, total_chunk_count) != (video_size, 1):
        return "a file under 5 MB must be uploaded whole"
    if total_chunk_count == 1:
        if video_size > STRICT_MAX_CHUNK:
            return "a file over 64 MB must be chunked"
        return None
    if not STRICT_MIN_CHUNK <= chunk_size <= STRICT_MAX_CHUNK:
        return "chunk_size must be 5 MB to 64 MB"
    if video_size - (total_chunk_count - 1) * chunk_size > STRICT_MAX_FINAL:
        return "the final chunk is over 128 MB"
    return None


def pkce_challenge(verifier: str, encoding: str) -> str:
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    if encoding == "hex":
        return digest.hex()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


@dataclass
class Creator:
    open_id: str
    display_name: str = "Sunny Creator"
    username: str = "sunny.creator"
    privacy_level_options: list[str] = field(
        default_factory=lambda: ["PUBLIC_TO_EVERYONE", "MUTUAL_FOLLOW_FRIENDS", "SELF_ONLY"]
    )
    max_video_post_duration_sec: int = 600
    comment_disabled: bool = False
    duet_disabled: bool = False
    stitch_disabled: bool = False


@dataclass
class Publish:
    publish_id: str
    open_id: str
    upload_id: str
    upload_token: str
    video_size: int
    chunk_size: int
    total_chunk_count: int
    post_info: dict[str, Any]
    content_type: str | None = None
    received: int = 0
    chunks: list[tuple[int, int]] = field(default_factory=list)
    sha: Any = field(default_factory=hashlib.sha256)
    polls_after_upload: int = 0
    status: str = "PROCESSING_UPLOAD"
    fail_reason: str | None = None
    post_id: int | None = None
    upload_expired: bool = False

    @property
    def uploaded(self) -> bool:
        return self.received == self.video_size


@dataclass
class Failure:
    endpoint: str
    status: int
    code: str | None
    times: int
    chunk: int | None = None
    message: str = ""
    # For chunks: take the bytes, then answer the failure anyway (a lost 201).
    after_accepting: bool = False


class FakeTikTok:
    def __init__(self) -> None:
        self.port = 0
        self.lock = threading.Lock()
        self.client_key = CLIENT_KEY
        self.client_secret = CLIENT_SECRET
        self.pkce_encoding = "hex"
        self.audited = True
        self.consent = True
        self.grant_scopes = "user.info.basic,video.publish"
        self.expires_in = 86400
        self.refresh_expires_in = 31536000
        self.processing_polls = 1
        self.next_fail_reason: str | None = None
        self.creators: dict[str, Creator] = {}
        self.codes: dict[str, dict[str, Any]] = {}
        self.access: dict[str, tuple[str, str]] = {}
        self.refresh: dict[str, tuple[str, str]] = {}
        self.publishes: dict[str, Publish] = {}
        self.posts: list[dict[str, Any]] = []
        self.requests: list[tuple[str, str]] = []
        self.failures: list[Failure] = []
        self._ids = itertools.count(1)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- test controls -------------------------------------------------------------------

    def creator(self, open_id: str = "open-1", **over: Any) -> Creator:
        c = Creator(open_id, **over)
        self.creators[open_id] = c
        return c

    def grant(self, open_id: str = "open-1", scopes: str | None = None) -> tuple[str, str]:
        """Tokens as if the creator had connected: (access_token, refresh_token)."""
        if open_id not in self.creators:
            self.creator(open_id)
        scope = scopes or self.grant_scopes
        access, refresh = f"act.{secrets.token_hex(8)}", f"rft.{secrets.token_hex(8)}"
        self.access[access] = (open_id, scope)
        self.refresh[refresh] = (open_id, scope)
        return access, refresh

    def revoke(self, token: str) -> None:
        self.access.pop(token, None)
        self.refresh.pop(token, None)

    def fail(
        self,
        endpoint: str,
        status: int,
        code: str | None = None,
        *,
        times: int = 1,
        chunk: int | None = None,
        message: str = "",
        after_accepting: bool = False,
    ) -> None:
        """Answer the next ``times`` calls of ``endpoint`` (token, user_info, creator_info,
        init, chunk, status) with ``status`` and, when given, the v2 ``error.code``."""
        self.failures.append(
            Failure(endpoint, status, code, times, chunk, message, after_accepting)
        )

    def calls(self, path: str) -> int:
        return sum(1 for _, p in self.requests if p == path)

    # -- the server ----------------------------------------------------------------------

    def _injected(self, endpoint: str, chunk: int | None = None) -> Failure | None:
        for f in self.failures:
            if f.endpoint == endpoint and f.times > 0 and (f.chunk is None or f.chunk == chunk):
                f.times -= 1
                return f
        return None

    def handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                self._route("GET")

            def do_POST(self) -> None:
                self._route("POST")

            def do_PUT(self) -> None:
                self._route("PUT")

            # -- plumbing --

            def _route(self, method: str) -> None:
                parts = urlsplit(self.path)
                self.query = {k: v[0] for k, v in parse_qs(parts.query).items()}
                fake.requests.append((method, parts.path))
                routes = {
                    ("GET", "/v2/auth/authorize/"): self.authorize,
                    ("POST", "/v2/oauth/token/"): self.token,
                    ("GET", "/v2/user/info/"): self.user_info,
                    ("POST", "/v2/post/publish/creator_info/query/"): self.creator_info,
                    ("POST", "/v2/post/publish/video/init/"): self.init,
                    ("PUT", "/upload/"): self.upload,
                    ("POST", "/v2/post/publish/status/fetch/"): self.status,
                }
                route = routes.get((method, parts.path))
                if route is None:
                    self._drain()
                    self._send(404, {"error": {"code": "not_found", "message": parts.path}})
                    return
                with fake.lock:
                    route()

            def _drain(self) -> bytes:
                length = self.headers.get("content-length")
                return self.rfile.read(int(length)) if length else b""

            def _drain_chunked(self) -> None:
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                    self.rfile.read(size + 2)
                    if size == 0:
                        return

            def _send(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
                out = body if isinstance(body, bytes) else json.dumps(body).encode()
                self.send_response(status)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                if not isinstance(body, bytes):
                    self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def _error(self, status: int, code: str, message: str = "") -> None:
                self._send(
                    status,
                    {"data": {}, "error": {"code": code, "message": message, "log_id": "log-1"}},
                )

            def _ok(self, data: dict[str, Any]) -> None:
                self._send(
                    200, {"data": data, "error": {"code": "ok", "message": "", "log_id": ""}}
                )

            def _injected(
                self, endpoint: str, chunk: int | None = None, f: Failure | None = None
            ) -> bool:
                f = f or fake._injected(endpoint, chunk)
                if f is None:
                    return False
                if f.code is None:
                    self._send(f.status, b"upstream trouble")
                else:
                    self._error(f.status, f.code, f.message)
                return True

            def _bearer(self, scope: str | None) -> str | None:
                auth = self.headers.get("authorization", "")
                token = auth[7:] if auth.startswith("Bearer ") else ""
                who = fake.access.get(token)
                if who is None:
                    self._error(401, "access_token_invalid", "The access token is invalid.")
                    return None
                open_id, scopes = who
                if scope and scope not in scopes.split(","):
                    self._error(401, "scope_not_authorized", f"{scope} was not granted")
                    return None
                return open_id

            def _json_body(self) -> dict[str, Any] | None:
                raw = self._drain()
                if not self.headers.get("content-type", "").startswith("application/json"):
                    self._error(400, "invalid_param", "Content-Type must be application/json")
                    return None
                try:
                    body = json.loads(raw or b"{}")
                except ValueError:
                    self._error(400, "invalid_param", "body is not JSON")
                    return None
                if not isinstance(body, dict):
                    self._error(400, "invalid_param", "body must be an object")
                    return None
                return body

            # -- Login Kit --

            def authorize(self) -> None:
                q = self.query
                redirect = q.get("redirect_uri", "")
                if (
                    q.get("client_key") != fake.client_key
                    or q.get("response_type") != "code"
                    or not redirect
                    or not q.get("state")
                    or set(q.get("scope", "").split(",")) != {"user.info.basic", "video.publish"}
                    or not q.get("code_challenge")
                    or q.get("code_challenge_method") != "S256"
                ):
                    self._send(400, {"error": "invalid_request", "query": q})
                    return
                if not fake.consent:
                    answer = {
                        "error": "access_denied",
                        "error_description": "The user denied the request",
                        "state": q["state"],
                    }
                else:
                    code = f"code-{secrets.token_hex(8)}"
                    open_id = q.get("fake_open_id", "open-1")
                    if open_id not in fake.creators:
                        fake.creator(open_id)
                    fake.codes[code] = {
                        "open_id": open_id,
                        "redirect_uri": redirect,
                        "challenge": q["code_challenge"],
                    }
                    answer = {"code": code, "scopes": fake.grant_scopes, "state": q["state"]}
                self._send(302, b"", {"Location": f"{redirect}?{urlencode(answer)}"})

            def token(self) -> None:
                raw = self._drain()
                if self._injected("token"):
                    return
                if self.headers.get("content-type") != "application/x-www-form-urlencoded":
                    self._send(400, {"error": "invalid_request", "error_description": "form"})
                    return
                form = {k: v[0] for k, v in parse_qs(raw.decode()).items()}
                if (form.get("client_key"), form.get("client_secret")) != (
                    fake.client_key,
                    fake.client_secret,
                ):
                    self._send(401, {"error": "invalid_client", "error_description": "bad client"})
                    return
                grant = form.get("grant_type")
                if grant == "authorization_code":
                    issued = fake.codes.pop(form.get("code", ""), None)
                    if issued is None or issued["redirect_uri"] != form.get("redirect_uri"):
                        self._refuse("Authorization code is expired.")
                        return
                    verifier = form.get("code_verifier", "")
                    if pkce_challenge(verifier, fake.pkce_encoding) != issued["challenge"]:
                        self._refuse("Code verifier or code challenge is invalid.")
                        return
                    open_id, scope = issued["open_id"], fake.grant_scopes
                elif grant == "refresh_token":
                    old = fake.refresh.pop(form.get("refresh_token", ""), None)
                    if old is None:
                        self._refuse("Refresh token is invalid or expired.")
                        return
                    open_id, scope = old
                else:
                    self._send(400, {"error": "unsupported_grant_type"})
                    return
                access, refresh = fake.grant(open_id, scope)
                self._send(
                    200,
                    {
                        "access_token": access,
                        "expires_in": fake.expires_in,
                        "open_id": open_id,
                        "refresh_expires_in": fake.refresh_expires_in,
                        "refresh_token": refresh,
                        "scope": scope,
                        "token_type": "Bearer",
                    },
                )

            def _refuse(self, why: str) -> None:
                self._send(
                    400, {"error": "invalid_grant", "error_description": why, "log_id": "log-1"}
                )

            def user_info(self) -> None:
                if self._injected("user_info"):
                    return
                open_id = self._bearer("user.info.basic")
                if open_id is None:
                    return
                c = fake.creators[open_id]
                self._ok({"user": {"open_id": open_id, "display_name": c.display_name}})

            # -- Content Posting API --

            def creator_info(self) -> None:
                if self._json_body() is None or self._injected("creator_info"):
                    return
                open_id = self._bearer("video.publish")
                if open_id is None:
                    return
                c = fake.creators[open_id]
                self._ok(
                    {
                        "creator_avatar_url": "https://p16.example/avatar.jpeg",
                        "creator_username": c.username,
                        "creator_nickname": c.display_name,
                        "privacy_level_options": list(c.privacy_level_options),
                        "comment_disabled": c.comment_disabled,
                        "duet_disabled": c.duet_disabled,
                        "stitch_disabled": c.stitch_disabled,
                        "max_video_post_duration_sec": c.max_video_post_duration_sec,
                    }
                )

            def init(self) -> None:
                body = self._json_body()
                if body is None or self._injected("init"):
                    return
                open_id = self._bearer("video.publish")
                if open_id is None:
                    return
                c = fake.creators[open_id]
                post, source = body.get("post_info"), body.get("source_info")
                if not isinstance(post, dict) or not isinstance(source, dict):
                    self._error(400, "invalid_param", "post_info and source_info are required")
                    return
                privacy = post.get("privacy_level")
                if privacy not in c.privacy_level_options:
                    self._error(403, "privacy_level_option_mismatch", f"{privacy!r}")
                    return
                if not fake.audited and privacy != "SELF_ONLY":
                    self._error(403, "unaudited_client_can_only_post_to_private_accounts")
                    return
                title = post.get("title", "")
                if not isinstance(title, str) or len(title.encode("utf-16-le")) // 2 > 2200:
                    self._error(400, "invalid_param", "title is over 2200 UTF-16 runes")
                    return
                for key in (
                    "disable_comment",
                    "disable_duet",
                    "disable_stitch",
                    "brand_content_toggle",
                    "brand_organic_toggle",
                    "is_aigc",
                ):
                    if key in post and not isinstance(post[key], bool):
                        self._error(400, "invalid_param", f"{key} must be a boolean")
                        return
                cover = post.get("video_cover_timestamp_ms")
                if cover is not None and (not isinstance(cover, int) or cover < 0):
                    self._error(400, "invalid_param", "video_cover_timestamp_ms")
                    return
                if post.get("brand_content_toggle") and privacy == "SELF_ONLY":
                    self._error(400, "invalid_param", "branded content cannot be private")
                    return
                if source.get("source") != "FILE_UPLOAD":
                    self._error(400, "invalid_param", "this fake only does FILE_UPLOAD")
                    return
                size, chunk, count = (
                    source.get("video_size"),
                    source.get("chunk_size"),
                    source.get("total_chunk_count"),
                )
                why = check_source_info(size, chunk, count)  # type: ignore[arg-type]
                if why is not None:
                    self._error(400, "invalid_param", why)
                    return
                n = next(fake._ids)
                p = Publish(
                    publish_id=f"v_pub_file~v2-1.{n}",
                    open_id=open_id,
                    upload_id=str(6789 + n),
                    upload_token=secrets.token_hex(6),
                    video_size=size,
                    chunk_size=chunk,
                    total_chunk_count=count,
                    post_info=post,
                )
                fake.publishes[p.publish_id] = p
                upload_url = (
                    f"{fake.url}/upload/?upload_id={p.upload_id}&upload_token={p.upload_token}"
                )
                self._ok({"publish_id": p.publish_id, "upload_url": upload_url})

            def upload(self) -> None:
                p = next(
                    (
                        x
                        for x in fake.publishes.values()
                        if x.upload_id == self.query.get("upload_id")
                    ),
                    None,
                )
                length = self.headers.get("content-length")
                if self.headers.get("transfer-encoding") or length is None:
                    self._drain_chunked()
                    self._send(400, b"Content-Length is required")
                    return
                if p is None:
                    self._drain()
                    self._send(404, b"no such upload")
                    return
                if self.query.get("upload_token") != p.upload_token or p.upload_expired:
                    self._drain()
                    self._send(403, b"upload_url expired")
                    return
                progress = {"Content-Range": f"bytes 0-{p.received - 1}/{p.video_size}"}
                m = re.fullmatch(r"bytes (\d+)-(\d+)/(\d+)", self.headers.get("content-range", ""))
                if self.headers.get("content-type") not in CONTENT_TYPES or m is None:
                    self._drain()
                    self._send(400, b"bad Content-Type or Content-Range")
                    return
                first, last, total = (int(g) for g in m.groups())
                index = len(p.chunks)
                final = index == p.total_chunk_count - 1
                if p.uploaded or total != p.video_size:
                    self._drain()
                    self._send(400, b"the upload is complete or the total is wrong")
                    return
                if first != p.received:
                    self._drain()
                    self._send(416, b"Content-Range is not the progress", progress)
                    return
                want_last = p.video_size - 1 if final else first + p.chunk_size - 1
                if last != want_last or int(length) != last - first + 1:
                    self._drain()
                    self._send(400, b"a chunk of the wrong size")
                    return
                if p.content_type not in (None, self.headers["content-type"]):
                    self._drain()
                    self._send(400, b"Content-Type changed between chunks")
                    return
                data = b""
                remaining = int(length)
                sha = p.sha.copy()
                while remaining:
                    data = self.rfile.read(min(remaining, 1 << 20))
                    if not data:
                        return
                    sha.update(data)
                    remaining -= len(data)
                injected = fake._injected("chunk", index)
                if injected and not injected.after_accepting:
                    self._injected("chunk", f=injected)
                    return
                p.sha = sha
                p.content_type = self.headers["content-type"]
                p.received = last + 1
                p.chunks.append((first, last))
                headers = {"Content-Range": f"bytes 0-{last}/{p.video_size}"}
                if not p.uploaded:
                    if not self._injected("chunk", f=injected):
                        self._send(206, b"", headers)
                    return
                p.fail_reason, fake.next_fail_reason = fake.next_fail_reason, None
                if p.fail_reason is None:
                    private = p.post_info.get("privacy_level") == "SELF_ONLY"
                    p.post_id = None if private else 7_300_000_000_000_000_000 + len(fake.posts)
                    fake.posts.append(
                        {
                            "publish_id": p.publish_id,
                            "open_id": p.open_id,
                            "post_info": p.post_info,
                            "size": p.video_size,
                            "sha256": p.sha.hexdigest(),
                            "chunks": list(p.chunks),
                            "post_id": p.post_id,
                        }
                    )
                if not self._injected("chunk", f=injected):
                    self._send(201, b"", headers)

            def status(self) -> None:
                body = self._json_body()
                if body is None or self._injected("status"):
                    return
                open_id = self._bearer(None)
                if open_id is None:
                    return
                p = fake.publishes.get(body.get("publish_id", ""))
                if p is None or p.open_id != open_id:
                    self._error(400, "invalid_publish_id", "no such publish_id")
                    return
                if p.uploaded and p.status == "PROCESSING_UPLOAD":
                    if p.polls_after_upload >= fake.processing_polls:
                        p.status = "FAILED" if p.fail_reason else "PUBLISH_COMPLETE"
                    p.polls_after_upload += 1
                data: dict[str, Any] = {"status": p.status, "uploaded_bytes": p.received}
                if p.status == "FAILED":
                    data["fail_reason"] = p.fail_reason
                if p.status == "PUBLISH_COMPLETE" and p.post_id is not None:
                    data["publicaly_available_post_id"] = [p.post_id]
                self._ok(data)

        return Handler


@contextmanager
def running() -> Iterator[FakeTikTok]:
    fake = FakeTikTok()
    server = ThreadingHTTPServer(("127.0.0.1", 0), fake.handler())
    fake.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()
