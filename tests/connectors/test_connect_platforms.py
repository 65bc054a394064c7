"""TikTok and Instagram through the shared connect flow: the stored account posts.

The connect flow stores one token-set shape for every platform; each connector's config
model must read it (TikTok's open_id and Instagram's user id and token age live in
``extra``). YouTube's own walk through the routes is in test_youtube_connect.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import urlsplit

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy import select

from fakes import instagram as fake_ig
from fakes import tiktok as fake_tt
from uploadpools.config import Settings
from uploadpools.connectors.instagram import InstagramConfig
from uploadpools.connectors.tiktok import TikTokConfig
from uploadpools.kit.clock import FrozenClock
from uploadpools.kit.crypto import SecretBox
from uploadpools.models import Account


@pytest.fixture
def tiktok(settings: Settings) -> Iterator[fake_tt.FakeTikTok]:
    with fake_tt.running() as fake:
        settings.tiktok_client_key = fake_tt.CLIENT_KEY
        settings.tiktok_client_secret = SecretStr(fake_tt.CLIENT_SECRET)
        settings.tiktok_api_base = fake.url
        settings.tiktok_auth_base = fake.url
        yield fake


@pytest.fixture
def instagram(settings: Settings, clock: FrozenClock) -> Iterator[fake_ig.FakeInstagram]:
    with fake_ig.running(fake_ig.FakeInstagram(clock)) as fake:
        settings.instagram_client_id = fake_ig.CLIENT_ID
        settings.instagram_client_secret = SecretStr(fake_ig.CLIENT_SECRET)
        settings.instagram_graph_version = fake_ig.VERSION
        settings.instagram_graph_base = fake.base
        settings.instagram_auth_base = fake.base
        yield fake


async def connect(client, tenant, platform: str) -> httpx.Response:  # type: ignore[no-untyped-def]
    r = await client.get(f"/connect/{platform}", headers=tenant.headers)
    assert r.status_code == 302, r.text
    async with httpx.AsyncClient(trust_env=False) as browser:
        consent = await browser.get(r.headers["location"])
    assert consent.status_code in (302, 303), consent.text
    back = urlsplit(consent.headers["location"])
    assert back.path == f"/connect/{platform}/callback"
    return await client.get(f"{back.path}?{back.query}")


async def stored(app, settings: Settings, platform: str) -> tuple[Account, dict]:  # type: ignore[no-untyped-def]
    async with app.state.uploadpools.maker() as s:
        (acc,) = (await s.scalars(select(Account).where(Account.platform == platform))).all()
    return acc, SecretBox(settings.secret()).decrypt(acc.credentials)


class TestConnectFlowStoresWhatTheConnectorReads:
    async def test_tiktok(self, client, tenant, tiktok, app, settings):
        r = await connect(client, tenant, "tiktok")
        assert r.status_code == 200, r.text
        acc, config = await stored(app, settings, "tiktok")
        assert acc.status == "connected" and acc.remote_id
        parsed = TikTokConfig.model_validate(config)
        assert parsed.open_id == acc.remote_id
        assert parsed.access_token and parsed.refresh_token and parsed.expires_at

    async def test_instagram(self, client, tenant, instagram, app, settings):
        r = await connect(client, tenant, "instagram")
        assert r.status_code == 200, r.text
        acc, config = await stored(app, settings, "instagram")
        assert acc.status == "connected"
        parsed = InstagramConfig.model_validate(config)
        assert parsed.user_id == instagram.user_id == acc.remote_id
        assert parsed.username == acc.name == instagram.users[instagram.user_id]
        assert parsed.issued_at is not None and parsed.expires_at > parsed.issued_at
