"""Structured logs: request and engine ids on every line, and no secret in any line."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from datetime import timedelta
from urllib.parse import urlsplit

import pytest
from test_ticker import NINE

from apihelpers import make_pool, upload_n
from uploadpools.config import Settings
from uploadpools.ops.logs import JsonFormatter, configure_logging


@pytest.fixture
def captured(settings: Settings) -> Iterator[io.StringIO]:
    """Everything logged anywhere, as `serve`/`worker` configure it (JSON, INFO)."""
    settings.log_format = "json"
    buf = io.StringIO()
    root = logging.getLogger()
    saved = list(root.handlers), root.level
    quiet = {n: logging.getLogger(n).level for n in ("httpx", "httpcore")}
    configure_logging(settings, buf)
    try:
        yield buf
    finally:
        for h in list(root.handlers):
            root.removeHandler(h)
        for h in saved[0]:
            root.addHandler(h)
        root.setLevel(saved[1])
        for n, level in quiet.items():
            logging.getLogger(n).setLevel(level)


def records(buf: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in buf.getvalue().splitlines()]


class TestRequestIds:
    async def test_request_id_is_echoed_and_on_the_access_line(self, client, captured) -> None:  # type: ignore[no-untyped-def]
        r = await client.get("/healthz", headers={"X-Request-ID": "abc-123"})
        assert r.headers["x-request-id"] == "abc-123"
        access = [x for x in records(captured) if x["logger"] == "uploadpools.access"]
        assert access[-1]["request_id"] == "abc-123"
        assert access[-1]["path"] == "/healthz" and access[-1]["status"] == 200
        assert {"timestamp", "level", "logger", "message"} <= set(access[-1])

    async def test_missing_or_odd_request_id_is_replaced(self, client, captured) -> None:  # type: ignore[no-untyped-def]
        a = (await client.get("/healthz")).headers["x-request-id"]
        b = (await client.get("/healthz", headers={"X-Request-ID": "bad id {x}"})).headers[
            "x-request-id"
        ]
        assert len(a) == 32 and len(b) == 32 and a != b


class TestNoSecretsLogged:
    async def test_keys_secrets_credentials_and_signatures_stay_out_of_logs(  # type: ignore[no-untyped-def]
        self, client, tenant, clock, engine, receiver, allow_loopback, sample_mp4, captured
    ) -> None:
        hook_secret = "whsec_" + "c2VjcmV0LXNpZ25pbmcta2V5LTEyMzQ1Njc4OTA="
        r = await client.post(
            "/api/v1/accounts",
            json={
                "platform": "webhook",
                "name": "sink",
                "config": {"url": receiver.url + "?token=url-token-4242", "secret": hook_secret},
            },
            headers=tenant.headers,
        )
        assert r.status_code == 201, r.text
        pool = await make_pool(client, tenant, r.json()["id"], timezone="UTC", state="active")
        await upload_n(client, tenant, pool["id"], sample_mp4, 1)
        # A wrong key, too: failed authentication must not echo it.
        await client.get("/api/v1/pools", headers={"Authorization": "Bearer up_wrong-key-777"})
        clock.set(NINE + timedelta(seconds=1))
        await engine.run()
        assert len(receiver.requests) == 1
        media_url = json.loads(receiver.requests[0]["body"])["media"]["url"]
        parts = urlsplit(media_url)
        got = await client.get(f"{parts.path}?{parts.query}")
        assert got.status_code == 200
        sig = dict(p.split("=", 1) for p in parts.query.split("&"))["sig"]

        text = captured.getvalue()
        lines = records(captured)
        assert any(x.get("delivery_id") and x.get("firing_id") for x in lines), (
            "engine lines carry delivery and firing ids"
        )
        assert any(x.get("path", "").startswith("/media/") for x in lines)
        for secret in (
            tenant.key,
            "up_wrong-key-777",
            hook_secret,
            hook_secret.removeprefix("whsec_"),
            "url-token-4242",
            sig,
            settings_secret(allow_loopback),
        ):
            assert secret not in text, f"{secret[:8]}... was logged"

    async def test_configure_logging_installs_one_json_handler(self, captured) -> None:  # type: ignore[no-untyped-def]
        root = logging.getLogger()  # pytest adds capture handlers of its own
        assert sum(isinstance(h.formatter, JsonFormatter) for h in root.handlers) == 1
        logging.getLogger("x").warning("hello %s", "there")
        assert records(captured)[-1] == {
            "timestamp": records(captured)[-1]["timestamp"],
            "level": "WARNING",
            "logger": "x",
            "message": "hello there",
        }


def settings_secret(settings: Settings) -> str:
    return settings.secret()
