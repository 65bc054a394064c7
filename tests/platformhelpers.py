"""Pointing the app at the fake platforms, and walking the connect flow through its routes.

Shared by the per-platform tests and the three-platform end-to-end test.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from urllib.parse import urlsplit

import httpx
from pydantic import SecretStr
from sqlalchemy import select

from fakes import instagram as fake_ig
from fakes import tiktok as fake_tt
from uploadpools.config import Settings
from uploadpools.models import QueueItem


def point_tiktok(settings: Settings, fake: fake_tt.FakeTikTok) -> Settings:
    settings.tiktok_client_key = fake_tt.CLIENT_KEY
    settings.tiktok_client_secret = SecretStr(fake_tt.CLIENT_SECRET)
    settings.tiktok_api_base = fake.url
    settings.tiktok_auth_base = fake.url
    settings.tiktok_poll_interval_s = 0
    return settings


def point_instagram(settings: Settings, fake: fake_ig.FakeInstagram) -> Settings:
    settings.instagram_client_id = fake_ig.CLIENT_ID
    settings.instagram_client_secret = SecretStr(fake_ig.CLIENT_SECRET)
    settings.instagram_graph_version = fake_ig.VERSION
    settings.instagram_graph_base = fake.base
    settings.instagram_auth_base = fake.base
    settings.instagram_poll_interval_s = 0
    return settings


async def consent(client: httpx.AsyncClient, tenant, platform: str) -> str:  # type: ignore[no-untyped-def]
    """Start the connect flow and visit the fake's consent page as the user's browser would;
    the callback path and query the platform sends the browser back to."""
    r = await client.get(f"/connect/{platform}", headers=tenant.headers)
    assert r.status_code == 302, r.text
    async with httpx.AsyncClient(trust_env=False) as browser:
        answer = await browser.get(r.headers["location"])
    assert answer.status_code in (302, 303), answer.text
    back = urlsplit(answer.headers["location"])
    assert back.path == f"/connect/{platform}/callback"
    return f"{back.path}?{back.query}"


async def connect(client: httpx.AsyncClient, tenant, platform: str) -> httpx.Response:  # type: ignore[no-untyped-def]
    """The whole connect flow through the routes; the callback's response."""
    return await client.get(await consent(client, tenant, platform))


async def serve_media(app, settings: Settings, file_server, item_id: str, mp4: Path) -> None:  # type: ignore[no-untyped-def]
    """Serve the item's video where its signed media URL points, so a platform that pulls
    the video (Instagram) downloads it from a real server on 127.0.0.1."""
    settings.public_url = f"http://127.0.0.1:{file_server.port}"
    async with app.state.uploadpools.maker() as s:
        media_id = await s.scalar(select(QueueItem.media_id).where(QueueItem.id == item_id))
    (file_server.root / "media").mkdir(exist_ok=True)
    shutil.copyfile(mp4, file_server.root / "media" / str(media_id))
