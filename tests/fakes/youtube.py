"""A fake Google: OAuth (consent, token endpoint) and the YouTube Data API upload protocol.

A real HTTP server on 127.0.0.1 (stdlib, one thread per request). It is strict where
the documented protocol is: PKCE S256 is verified, a code is single-use and bound to its
redirect_uri, every API call needs a live bearer token, a resumable upload's chunks must
start where the last one ended, declare the session's total, carry exactly the bytes
their Content-Range names, and (except the last) be a multiple of 256 KiB. Failures are
injected with ``inject(kind, status, reason)`` and answer Google's error bodies.
"""

from __future__ import annotations

import base64
import hashlib
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

from pydantic import SecretStr

CLIENT_ID = "fake-client.apps.googleusercontent.com"
CLIENT_SECRET = "fake-client-secret"
QUANTUM = 256 * 1024

MESSAGES = {
    "quotaExceeded": "The request cannot be completed because you have exceeded your quota.",
    "uploadLimitExceeded": "The user has exceeded the number of videos they may upload.",
    "rateLimitExceeded": "Rate limit exceeded.",
    "authError": "Invalid Credentials",
    "backendError": "Backend Error",
    "invalidVideoMetadata": "The request metadata is invalid.",
    "invalidTitle": "The request metadata specifies an invalid or empty video title.",
}


def google_error(status: int, reason: str, message: str | None = None) -> dict[str, Any]:
    msg = message or MESSAGES.get(reason, reason)
    domain = {"quotaExceeded": "youtube.quota", "uploadLimitExceeded": "youtube.video"}.get(
        reason, "global"
    )
    return {
        "error": {
            "code": status,
            "message": msg,
            "errors": [{"message": msg, "domain": domain, "reason": reason}],
        }
    }


@dataclass
class Rule:
    kind: str  # start | chunk | status | token | refresh | channels
    status: int
    body: dict[str, Any]
    skip: int = 0
    times: int = 1
    hang: bool = False  # store the chunk, then never answer (the client times out)


@dataclass
class Session:
    id: str
    channel: str
    total: int
    resource: dict[str, Any]
    data: bytearray = field(default_factory=bytearray)
    video_id: str | None = None
    expired: bool = False


@dataclass
class FakeGoogle:
    port: int = 0
    channel_id: str = "UC_fake_channel_0001"
    channel_title: str = "Fake Channel"
    refuse_consent: bool = False
    rotate_refresh_tokens: bool = False
    codes: dict[str, dict[str, Any]] = field(default_factory=dict)
    access_tokens: set[str] = field(default_factory=set)
    refresh_tokens: set[str] = field(default_factory=set)
    sessions: dict[str, Session] = field(default_factory=dict)
    videos: dict[str, dict[str, Any]] = field(default_factory=dict)
    rules: list[Rule] = field(default_factory=list)
    log: list[str] = field(default_factory=list)
    refreshes: int = 0
    release: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def configure(self, settings: Any) -> None:
        settings.youtube_client_id = CLIENT_ID
        settings.youtube_client_secret = SecretStr(CLIENT_SECRET)
        settings.google_auth_url = f"{self.base}/o/oauth2/v2/auth"
        settings.google_token_url = f"{self.base}/token"
        settings.youtube_api_base = f"{self.base}/youtube/v3"
        settings.youtube_upload_base = f"{self.base}/upload/youtube/v3"
        settings.youtube_chunk_bytes = QUANTUM

    # -- test controls ---------------------------------------------------------------------

    def inject(
        self,
        kind: str,
        status: int,
        reason: str | None = None,
        *,
        body: dict[str, Any] | None = None,
        skip: int = 0,
        times: int = 1,
        hang: bool = False,
    ) -> None:
        payload = body if body is not None else google_error(status, reason or "backendError")
        self.rules.append(Rule(kind, status, payload, skip, times, hang))

    def grant(self) -> dict[str, Any]:
        """Tokens as if the user had consented: (access, refresh) now valid."""
        access, refresh = self._new_access(), f"1//r-{secrets.token_hex(8)}"
        self.refresh_tokens.add(refresh)
        return {"access_token": access, "refresh_token": refresh}

    def expire_access_tokens(self) -> None:
        self.access_tokens.clear()

    def revoke_refresh_tokens(self) -> None:
        self.refresh_tokens.clear()

    def _new_access(self) -> str:
        token = f"ya29.{secrets.token_urlsafe(12)}"
        self.access_tokens.add(token)
        return token

    def _rule(self, kind: str) -> Rule | None:
        for rule in self.rules:
            if rule.kind != kind:
                continue
            if rule.skip:
                rule.skip -= 1
                return None
            rule.times -= 1
            if rule.times <= 0:
                self.rules.remove(rule)
            return rule
        return None


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    fake: FakeGoogle

    def log_message(self, *args: object) -> None:
        pass

    # -- plumbing ----------------------------------------------------------------------------

    def _send(self, status: int, body: Any = None, headers: dict[str, str] | None = None) -> None:
        raw = b"" if body is None else json.dumps(body).encode()
        try:
            self.send_response(status)
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            if body is not None:
                self.send_header("Content-Type", "application/json; charset=UTF-8")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)
        except OSError:
            pass

    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length", "0")))

    def _query(self) -> dict[str, str]:
        return {k: v[0] for k, v in parse_qs(urlsplit(self.path).query).items()}

    def _authorized(self) -> bool:
        auth = self.headers.get("Authorization", "")
        if not auth.startswith("Bearer ") or auth[7:] not in self.fake.access_tokens:
            self._send(401, google_error(401, "authError"))
            return False
        return True

    def _injected(self, kind: str) -> bool:
        with self.fake.lock:
            rule = self.fake._rule(kind)
        if rule is None:
            return False
        self._send(rule.status, rule.body)
        return True

    # -- routes ------------------------------------------------------------------------------

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        self.fake.log.append(f"GET {path}")
        if path == "/o/oauth2/v2/auth":
            return self._consent()
        if path == "/youtube/v3/channels":
            if self._injected("channels") or not self._authorized():
                return None
            item = {"id": self.fake.channel_id, "snippet": {"title": self.fake.channel_title}}
            return self._send(200, {"kind": "youtube#channelListResponse", "items": [item]})
        return self._send(404, google_error(404, "notFound"))

    def do_POST(self) -> None:
        path = urlsplit(self.path).path
        self.fake.log.append(f"POST {path}")
        if path == "/token":
            return self._token()
        if path == "/upload/youtube/v3/videos":
            return self._start()
        return self._send(404, google_error(404, "notFound"))

    def do_PUT(self) -> None:
        path = urlsplit(self.path).path
        if path == "/upload/youtube/v3/videos":
            return self._put()
        return self._send(404, google_error(404, "notFound"))

    def _consent(self) -> None:
        q = self._query()
        redirect = q.get("redirect_uri", "")
        ok = (
            q.get("client_id") == CLIENT_ID
            and q.get("response_type") == "code"
            and q.get("code_challenge_method") == "S256"
            and q.get("code_challenge")
            and q.get("access_type") == "offline"
            and "https://www.googleapis.com/auth/youtube.upload" in q.get("scope", "").split()
        )
        if not ok or not redirect:
            return self._send(400, {"error": "invalid_request"})
        if self.fake.refuse_consent:
            answer = {"error": "access_denied", "state": q.get("state", "")}
        else:
            code = f"4/{secrets.token_urlsafe(12)}"
            self.fake.codes[code] = {"redirect_uri": redirect, "challenge": q["code_challenge"]}
            answer = {"code": code, "state": q.get("state", ""), "scope": q.get("scope", "")}
        self._send(302, None, {"Location": f"{redirect}?{urlencode(answer)}"})

    def _token(self) -> None:
        form = {k: v[0] for k, v in parse_qs(self._body().decode()).items()}
        if form.get("client_id") != CLIENT_ID or form.get("client_secret") != CLIENT_SECRET:
            return self._send(401, {"error": "invalid_client", "error_description": "Unauthorized"})
        grant = form.get("grant_type")
        if grant == "authorization_code":
            if self._injected("token"):
                return None
            issued = self.fake.codes.pop(form.get("code", ""), None)
            if issued is None or issued["redirect_uri"] != form.get("redirect_uri"):
                return self._send(
                    400, {"error": "invalid_grant", "error_description": "Bad Request"}
                )
            verifier = form.get("code_verifier", "")
            digest = hashlib.sha256(verifier.encode()).digest()
            challenge = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
            if challenge != issued["challenge"]:
                return self._send(
                    400, {"error": "invalid_grant", "error_description": "Invalid code verifier."}
                )
            tokens = self.fake.grant()
            return self._send(
                200,
                {
                    **tokens,
                    "expires_in": 3599,
                    "token_type": "Bearer",
                    "scope": "https://www.googleapis.com/auth/youtube.upload",
                },
            )
        if grant == "refresh_token":
            self.fake.refreshes += 1
            if self._injected("refresh"):
                return None
            old = form.get("refresh_token", "")
            if old not in self.fake.refresh_tokens:
                return self._send(
                    400,
                    {
                        "error": "invalid_grant",
                        "error_description": "Token has been expired or revoked.",
                    },
                )
            body: dict[str, Any] = {
                "access_token": self.fake._new_access(),
                "expires_in": 3599,
                "token_type": "Bearer",
            }
            if self.fake.rotate_refresh_tokens:
                self.fake.refresh_tokens.discard(old)
                body["refresh_token"] = f"1//r-{secrets.token_hex(8)}"
                self.fake.refresh_tokens.add(body["refresh_token"])
            return self._send(200, body)
        return self._send(400, {"error": "unsupported_grant_type"})

    def _start(self) -> None:
        q = self._query()
        body = self._body()
        if self._injected("start") or not self._authorized():
            return None
        if q.get("uploadType") != "resumable" or q.get("part") != "snippet,status":
            return self._send(400, google_error(400, "invalidParameter"))
        try:
            total = int(self.headers["X-Upload-Content-Length"])
            resource = json.loads(body)
            title = resource["snippet"]["title"]
        except (KeyError, ValueError, TypeError):
            return self._send(400, google_error(400, "invalidVideoMetadata"))
        if not title or len(title) > 100 or "<" in title:
            return self._send(400, google_error(400, "invalidTitle"))
        sid = secrets.token_urlsafe(10)
        token = self.headers["Authorization"][7:]
        self.fake.sessions[sid] = Session(sid, token, total, resource)
        location = f"{self.fake.base}/upload/youtube/v3/videos?uploadType=resumable&upload_id={sid}"
        self._send(200, None, {"Location": location})

    def _put(self) -> None:
        q = self._query()
        data = self._body()
        session = self.fake.sessions.get(q.get("upload_id", ""))
        if session is None or session.expired:
            return self._send(404, google_error(404, "notFound", "Upload session not found"))
        if not self._authorized():
            return None
        crange = self.headers.get("Content-Range", "")
        status_query = re.fullmatch(r"bytes \*/(\d+)", crange)
        if status_query:
            self.fake.log.append("PUT status")
            if int(status_query[1]) != session.total:
                return self._send(400, google_error(400, "badContentRange"))
            if self._injected("status"):
                return None
            return self._state(session)
        self.fake.log.append(f"PUT {crange}")
        m = re.fullmatch(r"bytes (\d+)-(\d+)/(\d+)", crange)
        if m is None:
            return self._send(400, google_error(400, "badContentRange", "Content-Range missing"))
        first, last, total = int(m[1]), int(m[2]), int(m[3])
        if total != session.total:
            return self._send(400, google_error(400, "badContentRange", "total mismatch"))
        if first != len(session.data) or session.video_id is not None:
            return self._send(400, google_error(400, "badContentRange", "not at the offset"))
        if len(data) != last - first + 1:
            return self._send(400, google_error(400, "badContentRange", "length mismatch"))
        final = last + 1 == total
        if not final and len(data) % QUANTUM:
            return self._send(400, google_error(400, "badContentRange", "not 256 KiB aligned"))
        with self.fake.lock:
            rule = self.fake._rule("chunk")
        if rule is not None and not rule.hang:
            return self._send(rule.status, rule.body)
        session.data += data
        if final:
            self._finish(session)
        if rule is not None and rule.hang:
            self.fake.release.wait(10)
            return None
        return self._state(session)

    def _finish(self, session: Session) -> None:
        with self.fake.lock:
            vid = f"vid{len(self.fake.videos) + 1:04d}"
            session.video_id = vid
            self.fake.videos[vid] = {
                "id": vid,
                "snippet": session.resource["snippet"],
                "status": {**session.resource.get("status", {}), "uploadStatus": "uploaded"},
                "sha256": hashlib.sha256(session.data).hexdigest(),
                "size": len(session.data),
            }

    def _state(self, session: Session) -> None:
        if session.video_id is not None:
            v = self.fake.videos[session.video_id]
            resource = {"kind": "youtube#video", "id": v["id"], "snippet": v["snippet"]}
            return self._send(201, {**resource, "status": v["status"]})
        headers = {"Range": f"bytes=0-{len(session.data) - 1}"} if session.data else {}
        return self._send(308, None, headers)


@contextmanager
def fake_google() -> Iterator[FakeGoogle]:
    fake = FakeGoogle()
    handler = type("Handler", (_Handler,), {"fake": fake})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    server.handle_error = lambda *a: None  # type: ignore[method-assign]
    fake.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        fake.release.set()
        server.shutdown()
        server.server_close()
