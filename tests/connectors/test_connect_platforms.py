"""TikTok and Instagram through the shared connect flow: the stored account posts.

The connect flow stores one token-set shape for every platform; each connector's config
model must read it (TikTok's open_id and Instagram's user id and token age live in
``extra``). YouTube's own walk through the routes is in test_youtube_connect.py.
"""

from __future__ import annotations

from sqlalchemy import select

from platformhelpers import connect
from uploadpools.config import Settings
from uploadpools.connectors.instagram import InstagramConfig
from uploadpools.connectors.tiktok import TikTokConfig
from uploadpools.kit.crypto import SecretBox
from uploadpools.models import Account


async def stored(app, settings: Settings, platform: str) -> tuple[Account, dict]:  # type: ignore[no-untyped-def]
    async with app.state.uploadpools.maker() as s:
        (acc,) = (await s.scalars(select(Account).where(Account.platform == platform))).all()
    return acc, SecretBox(settings.secret()).decrypt(acc.credentials)


class TestConnectFlowStoresWhatTheConnectorReads:
    async def test_tiktok(self, client, tenant, tiktok_app, app, settings):
        r = await connect(client, tenant, "tiktok")
        assert r.status_code == 200, r.text
        acc, config = await stored(app, settings, "tiktok")
        assert acc.status == "connected" and acc.remote_id
        parsed = TikTokConfig.model_validate(config)
        assert parsed.open_id == acc.remote_id
        assert parsed.access_token and parsed.refresh_token and parsed.expires_at

    async def test_instagram(self, client, tenant, instagram_app, app, settings):
        r = await connect(client, tenant, "instagram")
        assert r.status_code == 200, r.text
        acc, config = await stored(app, settings, "instagram")
        assert acc.status == "connected"
        parsed = InstagramConfig.model_validate(config)
        assert parsed.user_id == instagram_app.user_id == acc.remote_id
        assert parsed.username == acc.name == instagram_app.users[instagram_app.user_id]
        assert parsed.issued_at is not None and parsed.expires_at > parsed.issued_at
