"""The webhook connector against a real HTTP receiver on 127.0.0.1."""

from __future__ import annotations

import base64
import json
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from standardwebhooks import Webhook

from connectorhelpers import SCHEDULED, RecordingJobs, offline_settings_for, publish_request
from uploadpools.config import Settings
from uploadpools.connectors.base import (
    UNKNOWN,
    Connector,
    ConnectorContext,
    Permanent,
    PublishResult,
    RateLimited,
    Transient,
)
from uploadpools.connectors.webhook import connector as webhook_module
from uploadpools.connectors.webhook.connector import WebhookConnector
from uploadpools.kit.clock import FrozenClock, SystemClock
from uploadpools.kit.netguard import DestinationRefused

PREFIXED_SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()


@pytest.fixture
def offline_settings(tmp_path: Path) -> Settings:
    return offline_settings_for(tmp_path)


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> dict[str, object]:
        data: dict[str, object] = json.loads(self.body)
        return data


@dataclass
class Reply:
    status: int = 200
    headers: dict[str, str] = field(default_factory=lambda: {"Content-Type": "application/json"})
    body: bytes = b'{"id": "remote-1", "url": "https://hooks.example/posts/remote-1"}'
    hang: bool = False


class Receiver:
    """A Standard Webhooks receiver that records requests and answers as told."""

    def __init__(self, events: list[str]) -> None:
        self.events = events
        self.requests: list[Received] = []
        self.replies: list[Reply] = []
        self.release = threading.Event()
        self.port = 0

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def answer(self, *replies: Reply) -> None:
        self.replies = list(replies)

    def next_reply(self) -> Reply:
        return self.replies.pop(0) if len(self.replies) > 1 else self.replies[0]


@pytest.fixture
def events() -> list[str]:
    return []


@pytest.fixture
def receiver(events: list[str]) -> Iterator[Receiver]:
    rec = Receiver(events)
    rec.answer(Reply())

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def _handle(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(length)
            rec.events.append("request")
            rec.requests.append(
                Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
            )
            reply = rec.next_reply()
            if reply.hang:
                rec.release.wait(10)
            try:
                self.send_response(reply.status)
                for k, v in reply.headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(reply.body)))
                self.end_headers()
                self.wfile.write(reply.body)
            except OSError:  # the client gave up (timeout test)
                pass

        do_POST = _handle
        do_GET = _handle

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.handle_error = lambda *a: None  # type: ignore[method-assign]
    rec.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield rec
    finally:
        rec.release.set()
        server.shutdown()
        server.server_close()


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(trust_env=False) as client:
        yield client


@pytest.fixture
def connector(http: httpx.AsyncClient, offline_settings: Settings) -> WebhookConnector:
    return WebhookConnector(ConnectorContext(http, offline_settings, SystemClock()))


@pytest.fixture
def jobs(events: list[str]) -> RecordingJobs:
    return RecordingJobs(events)


def verify(secret: str | bytes, received: Received) -> object:
    return Webhook(secret).verify(received.body, received.headers)


class TestRequest:
    async def test_posts_the_documented_payload(
        self, connector: WebhookConnector, receiver: Receiver, jobs: RecordingJobs
    ) -> None:
        await connector.publish(publish_request({"url": receiver.url()}), jobs)

        [got] = receiver.requests
        assert got.path == "/hook"
        assert got.headers["content-type"] == "application/json"
        assert got.json() == {
            "event": "item.dispatch",
            "pool": {"id": "pool01", "name": "Daily shorts"},
            "item": {
                "id": "item01",
                "title": "Sunrise",
                "caption": "Morning light #sunrise",
                "options": {"tag": "morning"},
            },
            "media": {
                "url": "https://up.example/media/med01?exp=1772445600&sig=abc",
                "content_type": "video/mp4",
                "size": 256000,
                "sha256": publish_request({}).media.sha256,
            },
            "firing": {"id": "fir01", "scheduled_for": "2026-03-02T09:00:00Z"},
        }

    async def test_is_a_connector(self, connector: WebhookConnector) -> None:
        assert isinstance(connector, Connector)
        assert connector.platform == "webhook"

    async def test_unsigned_without_a_secret_but_still_identified(
        self, connector: WebhookConnector, receiver: Receiver, jobs: RecordingJobs
    ) -> None:
        await connector.publish(publish_request({"url": receiver.url()}), jobs)

        [got] = receiver.requests
        assert "webhook-signature" not in got.headers
        assert got.headers["webhook-id"] == "del01"
        assert got.headers["webhook-timestamp"].isdigit()

    async def test_job_is_saved_before_the_request_reaches_the_receiver(
        self,
        connector: WebhookConnector,
        receiver: Receiver,
        jobs: RecordingJobs,
        events: list[str],
    ) -> None:
        await connector.publish(publish_request({"url": receiver.url()}), jobs)

        assert events == ["saved", "request"]
        [saved] = jobs.saved
        assert saved["webhook_id"] == "del01"
        assert saved["sent_at"].endswith("Z")

    async def test_every_attempt_carries_the_same_webhook_id(
        self, connector: WebhookConnector, receiver: Receiver, jobs: RecordingJobs
    ) -> None:
        receiver.answer(Reply(status=503, body=b"busy"), Reply())
        config = {"url": receiver.url(), "secret": PREFIXED_SECRET}

        with pytest.raises(Transient):
            await connector.publish(publish_request(config, attempt=1), jobs)
        result = await connector.publish(publish_request(config, attempt=2), jobs)

        assert result.remote_id == "remote-1"
        first, second = receiver.requests
        assert first.headers["webhook-id"] == second.headers["webhook-id"] == "del01"
        assert first.body == second.body
        verify(PREFIXED_SECRET, second)


class TestSignature:
    async def test_prefixed_secret_verifies_with_standard_webhooks(
        self, connector: WebhookConnector, receiver: Receiver, jobs: RecordingJobs
    ) -> None:
        await connector.publish(
            publish_request({"url": receiver.url(), "secret": PREFIXED_SECRET}), jobs
        )

        [got] = receiver.requests
        assert got.headers["webhook-signature"].startswith("v1,")
        assert verify(PREFIXED_SECRET, got) == got.json()

    @pytest.mark.parametrize(
        "secret",
        [
            "my-shared-secret-1234",  # not base64 as typed; the library reads it leniently
            "c2hhcmVkLXNlY3JldC12YWx1ZQ",  # unpadded base64
            "correct horse battery stapler",
        ],
    )
    async def test_unprefixed_secret_verifies_with_the_same_string(
        self, connector: WebhookConnector, receiver: Receiver, jobs: RecordingJobs, secret: str
    ) -> None:
        await connector.publish(publish_request({"url": receiver.url(), "secret": secret}), jobs)

        [got] = receiver.requests
        assert verify(secret, got) == got.json()

    async def test_secret_the_library_cannot_decode_signs_with_its_raw_bytes(
        self, connector: WebhookConnector, receiver: Receiver, jobs: RecordingJobs
    ) -> None:
        secret = "abcdefghijklmnopq"  # 17 base64 letters: not decodable
        with pytest.raises(ValueError):
            Webhook(secret)

        await connector.publish(publish_request({"url": receiver.url(), "secret": secret}), jobs)

        [got] = receiver.requests
        verify(secret.encode(), got)
        verify("whsec_" + base64.b64encode(secret.encode()).decode(), got)

    async def test_tampered_body_fails_verification(
        self, connector: WebhookConnector, receiver: Receiver, jobs: RecordingJobs
    ) -> None:
        await connector.publish(
            publish_request({"url": receiver.url(), "secret": PREFIXED_SECRET}), jobs
        )

        [got] = receiver.requests
        forged = Received(got.path, got.headers, got.body.replace(b"Sunrise", b"Sunset!"))
        with pytest.raises(Exception, match="signature"):
            verify(PREFIXED_SECRET, forged)


class TestOutcome:
    async def test_json_id_and_url_become_the_result(
        self, connector: WebhookConnector, receiver: Receiver, jobs: RecordingJobs
    ) -> None:
        result = await connector.publish(publish_request({"url": receiver.url()}), jobs)

        assert result == PublishResult("remote-1", "https://hooks.example/posts/remote-1")

    @pytest.mark.parametrize(
        "body", [b"", b"ok", b"[1, 2]", b'{"id": null}', b'{"status": "queued"}']
    )
    async def test_2xx_without_id_is_posted_without_remote_ids(
        self, connector: WebhookConnector, receiver: Receiver, jobs: RecordingJobs, body: bytes
    ) -> None:
        receiver.answer(Reply(status=202, body=body))

        result = await connector.publish(publish_request({"url": receiver.url()}), jobs)

        assert result == PublishResult(None, None)

    async def test_numeric_id_is_kept_as_text(
        self, connector: WebhookConnector, receiver: Receiver, jobs: RecordingJobs
    ) -> None:
        receiver.answer(Reply(body=b'{"id": 42}'))

        result = await connector.publish(publish_request({"url": receiver.url()}), jobs)

        assert result == PublishResult("42", None)

    async def test_429_is_rate_limited_with_retry_after_seconds(
        self, connector: WebhookConnector, receiver: Receiver, jobs: RecordingJobs
    ) -> None:
        receiver.answer(Reply(status=429, headers={"Retry-After": "120"}, body=b"slow down"))

        with pytest.raises(RateLimited) as info:
            await connector.publish(publish_request({"url": receiver.url()}), jobs)

        assert info.value.retry_after == 120.0
        assert "429" in info.value.detail
        assert "slow down" in info.value.detail

    async def test_429_retry_after_as_http_date(
        self,
        http: httpx.AsyncClient,
        offline_settings: Settings,
        receiver: Receiver,
        jobs: RecordingJobs,
    ) -> None:
        clock = FrozenClock(SCHEDULED)
        when = format_datetime(SCHEDULED + timedelta(seconds=90), usegmt=True)
        receiver.answer(Reply(status=429, headers={"Retry-After": when}))
        connector = WebhookConnector(ConnectorContext(http, offline_settings, clock))

        with pytest.raises(RateLimited) as info:
            await connector.publish(publish_request({"url": receiver.url()}), jobs)

        assert info.value.retry_after == 90.0

    @pytest.mark.parametrize("status", [500, 502, 503])
    async def test_5xx_is_transient(
        self, connector: WebhookConnector, receiver: Receiver, jobs: RecordingJobs, status: int
    ) -> None:
        receiver.answer(Reply(status=status, body=b"upstream down"))

        with pytest.raises(Transient) as info:
            await connector.publish(publish_request({"url": receiver.url()}), jobs)

        assert not isinstance(info.value, RateLimited)
        assert str(status) in info.value.detail

    @pytest.mark.parametrize("status", [400, 401, 404, 410, 422])
    async def test_other_4xx_is_permanent_with_status_and_body_start(
        self, connector: WebhookConnector, receiver: Receiver, jobs: RecordingJobs, status: int
    ) -> None:
        receiver.answer(Reply(status=status, body=b"no such workflow " + b"x" * 500))

        with pytest.raises(Permanent) as info:
            await connector.publish(publish_request({"url": receiver.url()}), jobs)

        detail = info.value.detail
        assert str(status) in detail
        assert "no such workflow" in detail
        assert "x" * 183 in detail and "x" * 184 not in detail  # first 200 chars only
        assert info.value.reason == "platform_error"

    async def test_redirect_is_not_followed(
        self, connector: WebhookConnector, receiver: Receiver, jobs: RecordingJobs
    ) -> None:
        receiver.answer(Reply(status=302, headers={"Location": receiver.url("/elsewhere")}))

        with pytest.raises(Permanent, match="redirects are not followed"):
            await connector.publish(publish_request({"url": receiver.url()}), jobs)

        assert [r.path for r in receiver.requests] == ["/hook"]

    async def test_slow_receiver_times_out_as_transient(
        self,
        http: httpx.AsyncClient,
        offline_settings: Settings,
        receiver: Receiver,
        jobs: RecordingJobs,
    ) -> None:
        receiver.answer(Reply(hang=True))
        connector = WebhookConnector(
            ConnectorContext(http, offline_settings, SystemClock()), timeout_s=0.5
        )

        with pytest.raises(Transient, match=r"did not answer within 0\.5 s"):
            await connector.publish(publish_request({"url": receiver.url()}), jobs)

        assert len(receiver.requests) == 1
        assert jobs.saved  # it may have been received: the job says so

    async def test_connection_refused_is_transient(
        self, connector: WebhookConnector, jobs: RecordingJobs
    ) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]

        with pytest.raises(Transient, match="could not reach"):
            await connector.publish(publish_request({"url": f"http://127.0.0.1:{port}/"}), jobs)


class TestAddressGuard:
    async def test_loopback_is_refused_without_the_allow_list(
        self, http: httpx.AsyncClient, tmp_path: Path, receiver: Receiver, jobs: RecordingJobs
    ) -> None:
        strict = Settings(  # type: ignore[call-arg]
            _env_file=None, env="test", data_dir=tmp_path, secret_key="x" * 40
        )
        connector = WebhookConnector(ConnectorContext(http, strict, SystemClock()))

        with pytest.raises(Permanent, match="loopback"):
            await connector.publish(publish_request({"url": receiver.url()}), jobs)

        assert receiver.requests == []
        assert jobs.saved == []

    async def test_temporary_dns_failure_is_transient(
        self, connector: WebhookConnector, jobs: RecordingJobs, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        async def resolver_down(url: str, allowed: object) -> list[str]:
            try:
                raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
            except socket.gaierror as exc:
                raise DestinationRefused(f"could not resolve host: {exc}") from None

        monkeypatch.setattr(webhook_module, "resolve_and_check", resolver_down)

        with pytest.raises(Transient, match="could not resolve"):
            await connector.publish(publish_request({"url": "https://hooks.example/x"}), jobs)

        assert jobs.saved == []

    async def test_invalid_config_is_permanent(
        self, connector: WebhookConnector, jobs: RecordingJobs
    ) -> None:
        with pytest.raises(Permanent, match="settings are invalid"):
            await connector.publish(publish_request({"url": "ftp://example.com/x"}), jobs)

        assert jobs.saved == []


class TestReconcile:
    async def test_nothing_saved_means_nothing_was_sent(self, connector: WebhookConnector) -> None:
        assert await connector.reconcile(publish_request({"url": "https://x.example"})) is None

    async def test_a_sent_request_cannot_be_confirmed(self, connector: WebhookConnector) -> None:
        request = publish_request(
            {"url": "https://x.example"},
            job={"sent_at": "2026-03-02T09:00:00Z", "webhook_id": "del01"},
        )

        assert await connector.reconcile(request) == UNKNOWN
