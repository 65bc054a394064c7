"""Signed media URLs: `GET /media/{id}` streams the video to whoever holds a valid link."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from uploadpools.config import Settings
from uploadpools.kit.clock import FrozenClock
from uploadpools.media.service import storage_key
from uploadpools.media.urls import sign_media_url, verify_media_signature
from uploadpools.models import Media
from uploadpools.store.engine import session_scope


@dataclass
class Stored:
    id: str
    data: bytes

    @property
    def etag(self) -> str:
        return f'"{hashlib.sha256(self.data).hexdigest()}"'


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def store_media(
    app: Any, workspace_id: str, data: bytes, now: datetime, *, state: str = "ready"
) -> Stored:
    app_state = app.state.uploadpools
    media_id = f"med{hashlib.sha256(data + state.encode()).hexdigest()[:23]}"
    key = storage_key(workspace_id, media_id)
    stored = await app_state.storage.put_stream(key, _chunks(data), max_bytes=len(data) + 1)
    async with session_scope(app_state.maker) as session:
        session.add(
            Media(
                id=media_id,
                workspace_id=workspace_id,
                state=state,
                storage_key=key,
                size=stored.size,
                sha256=stored.sha256,
                content_type="video/mp4",
                created_at=now,
            )
        )
    return Stored(media_id, data)


@pytest.fixture
def sample_bytes(sample_mp4: Path) -> bytes:
    return sample_mp4.read_bytes()


@pytest.fixture
async def video(app: Any, tenant: Any, clock: FrozenClock, sample_bytes: bytes) -> Stored:
    return await store_media(app, tenant.workspace_id, sample_bytes, clock.now())


def link(settings: Settings, clock: FrozenClock, media_id: str, ttl_s: int = 3600) -> str:
    """The signed URL as a path and query for the test client."""
    url = sign_media_url(settings, media_id, clock.now() + timedelta(seconds=ttl_s))
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}"


def is_problem(r: httpx.Response, status: int) -> bool:
    return (
        r.status_code == status
        and r.headers["content-type"].startswith("application/problem+json")
        and r.json()["status"] == status
    )


@pytest.fixture
def offline_settings(tmp_path: Path) -> Settings:
    """For the tests that need no database (`settings` would run them on both)."""
    return Settings(  # type: ignore[call-arg]
        _env_file=None,
        env="test",
        data_dir=tmp_path,
        secret_key="x" * 40,
        public_url="https://up.example/",
    )


class TestSigning:
    def test_url_lives_under_the_public_url(
        self, offline_settings: Settings, clock: FrozenClock
    ) -> None:
        settings = offline_settings
        expires = clock.now() + timedelta(hours=1)

        url = sign_media_url(settings, "med01", expires)

        parts = urlsplit(url)
        assert f"{parts.scheme}://{parts.netloc}" == "https://up.example"
        assert parts.path == "/media/med01"
        query = parse_qs(parts.query)
        assert query["exp"] == [str(int(expires.timestamp()))]
        assert verify_media_signature(
            settings, "med01", query["exp"][0], query["sig"][0], clock.now()
        )

    def test_signature_binds_media_and_expiry(
        self, offline_settings: Settings, clock: FrozenClock
    ) -> None:
        settings = offline_settings
        query = parse_qs(urlsplit(sign_media_url(settings, "med01", clock.now())).query)
        exp, sig = query["exp"][0], query["sig"][0]
        earlier = clock.now() - timedelta(seconds=1)

        assert verify_media_signature(settings, "med01", exp, sig, earlier)
        assert not verify_media_signature(settings, "med02", exp, sig, earlier)
        assert not verify_media_signature(settings, "med01", str(int(exp) + 1), sig, earlier)
        assert not verify_media_signature(settings, "med01", exp, sig, clock.now())  # expired
        assert not verify_media_signature(settings, "med01", exp, "é" + sig[1:], earlier)
        assert not verify_media_signature(settings, "med01", "soon", sig, earlier)


class TestDownload:
    async def test_valid_link_streams_the_exact_bytes(
        self, client: httpx.AsyncClient, settings: Settings, clock: FrozenClock, video: Stored
    ) -> None:
        r = await client.get(link(settings, clock, video.id))

        assert r.status_code == 200
        assert r.content == video.data
        assert r.headers["content-type"] == "video/mp4"
        assert r.headers["content-length"] == str(len(video.data))
        assert r.headers["accept-ranges"] == "bytes"
        assert r.headers["etag"] == video.etag

    async def test_head_answers_headers_only(
        self, client: httpx.AsyncClient, settings: Settings, clock: FrozenClock, video: Stored
    ) -> None:
        r = await client.head(link(settings, clock, video.id))

        assert r.status_code == 200
        assert r.content == b""
        assert r.headers["content-length"] == str(len(video.data))

    async def test_matching_if_none_match_is_not_modified(
        self, client: httpx.AsyncClient, settings: Settings, clock: FrozenClock, video: Stored
    ) -> None:
        r = await client.get(link(settings, clock, video.id), headers={"If-None-Match": video.etag})

        assert r.status_code == 304
        assert r.content == b""


class TestRanges:
    @pytest.mark.parametrize(
        ("header", "first", "last"),
        [
            ("bytes=0-99", 0, 99),
            ("bytes=100-", 100, None),
            ("bytes=-50", -50, None),
            ("bytes=10-10", 10, 10),
            ("bytes=1000-999999999", 1000, None),  # the end is clamped to the file
        ],
    )
    async def test_single_range_is_partial_content(
        self,
        client: httpx.AsyncClient,
        settings: Settings,
        clock: FrozenClock,
        video: Stored,
        header: str,
        first: int,
        last: int | None,
    ) -> None:
        size = len(video.data)
        start = first % size
        end = size - 1 if last is None else last

        r = await client.get(link(settings, clock, video.id), headers={"Range": header})

        assert r.status_code == 206
        assert r.content == video.data[start : end + 1]
        assert r.headers["content-range"] == f"bytes {start}-{end}/{size}"
        assert r.headers["content-length"] == str(end - start + 1)
        assert r.headers["etag"] == video.etag

    @pytest.mark.parametrize("header", ["bytes=999999999-", "bytes=-0"])
    async def test_unsatisfiable_range_is_416(
        self,
        client: httpx.AsyncClient,
        settings: Settings,
        clock: FrozenClock,
        video: Stored,
        header: str,
    ) -> None:
        r = await client.get(link(settings, clock, video.id), headers={"Range": header})

        assert is_problem(r, 416)
        assert r.headers["content-range"] == f"bytes */{len(video.data)}"

    @pytest.mark.parametrize("header", ["bytes=0-1,5-9", "bytes=9-5", "items=0-1", "bytes=-"])
    async def test_unsupported_or_invalid_range_serves_the_whole_file(
        self,
        client: httpx.AsyncClient,
        settings: Settings,
        clock: FrozenClock,
        video: Stored,
        header: str,
    ) -> None:
        r = await client.get(link(settings, clock, video.id), headers={"Range": header})

        assert r.status_code == 200
        assert r.content == video.data

    async def test_stale_if_range_serves_the_whole_file(
        self, client: httpx.AsyncClient, settings: Settings, clock: FrozenClock, video: Stored
    ) -> None:
        r = await client.get(
            link(settings, clock, video.id),
            headers={"Range": "bytes=0-9", "If-Range": '"some-older-version"'},
        )

        assert r.status_code == 200
        assert r.content == video.data

    async def test_current_if_range_honours_the_range(
        self, client: httpx.AsyncClient, settings: Settings, clock: FrozenClock, video: Stored
    ) -> None:
        r = await client.get(
            link(settings, clock, video.id),
            headers={"Range": "bytes=0-9", "If-Range": video.etag},
        )

        assert r.status_code == 206
        assert r.content == video.data[:10]


class TestRefusals:
    async def test_expired_link_is_403(
        self, client: httpx.AsyncClient, settings: Settings, clock: FrozenClock, video: Stored
    ) -> None:
        url = link(settings, clock, video.id, ttl_s=600)
        assert (await client.head(url)).status_code == 200

        clock.advance(seconds=600)
        r = await client.get(url)

        assert is_problem(r, 403)
        assert "expired" in r.json()["detail"]

    async def test_tampered_signature_is_403(
        self, client: httpx.AsyncClient, settings: Settings, clock: FrozenClock, video: Stored
    ) -> None:
        url = link(settings, clock, video.id)
        sig = parse_qs(urlsplit(url).query)["sig"][0]
        flipped = ("A" if sig[0] != "A" else "B") + sig[1:]

        r = await client.get(url.replace(sig, flipped))

        assert is_problem(r, 403)

    async def test_stretched_expiry_is_403(
        self, client: httpx.AsyncClient, settings: Settings, clock: FrozenClock, video: Stored
    ) -> None:
        url = link(settings, clock, video.id)
        exp = parse_qs(urlsplit(url).query)["exp"][0]

        r = await client.get(url.replace(f"exp={exp}", f"exp={int(exp) + 86400}"))

        assert is_problem(r, 403)

    async def test_signature_for_another_media_is_403(
        self, client: httpx.AsyncClient, settings: Settings, clock: FrozenClock, video: Stored
    ) -> None:
        query = urlsplit(link(settings, clock, "some-other-media")).query

        r = await client.get(f"/media/{video.id}?{query}")

        assert is_problem(r, 403)

    async def test_unsigned_request_is_403(self, client: httpx.AsyncClient, video: Stored) -> None:
        r = await client.get(f"/media/{video.id}")

        assert is_problem(r, 403)

    async def test_unknown_media_is_404(
        self, client: httpx.AsyncClient, settings: Settings, clock: FrozenClock, video: Stored
    ) -> None:
        r = await client.get(link(settings, clock, "01hzzzzzzzzzzzzzzzzzzzzzzz"))

        assert is_problem(r, 404)

    async def test_media_not_ready_is_404(
        self,
        app: Any,
        tenant: Any,
        client: httpx.AsyncClient,
        settings: Settings,
        clock: FrozenClock,
    ) -> None:
        pending = await store_media(
            app, tenant.workspace_id, b"partial", clock.now(), state="pending"
        )

        r = await client.get(link(settings, clock, pending.id))

        assert is_problem(r, 404)

    async def test_route_is_not_in_the_api_schema(self, client: httpx.AsyncClient) -> None:
        schema = (await client.get("/openapi.json")).json()

        assert not any(path.startswith("/media") for path in schema["paths"])
