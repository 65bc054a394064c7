"""The Instagram Reels connector and its OAuth provider against a fake Instagram on 127.0.0.1."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from pydantic import SecretStr

from connectorhelpers import offline_settings_for
from fakes.instagram import (
    CLIENT_ID,
    CLIENT_SECRET,
    VERSION,
    FakeInstagram,
    running,
)
from uploadpools.config import Settings
from uploadpools.connectors.base import (
    AuthExpired,
    Permanent,
)
from uploadpools.connectors.instagram import InstagramConfig
from uploadpools.connectors.instagram.oauth import InstagramOAuth
from uploadpools.connectors.oauth import OAuthProvider
from uploadpools.kit.clock import FrozenClock

REDIRECT = "https://up.example/connect/instagram/callback"


def point_at(settings: Settings, fake: FakeInstagram) -> Settings:
    settings.instagram_client_id = CLIENT_ID
    settings.instagram_client_secret = SecretStr(CLIENT_SECRET)
    settings.instagram_graph_version = VERSION
    settings.instagram_graph_base = fake.base
    settings.instagram_auth_base = fake.base
    settings.instagram_poll_interval_s = 0
    return settings


@pytest.fixture
def fake(clock: FrozenClock) -> Iterator[FakeInstagram]:
    with running(FakeInstagram(clock)) as f:
        yield f


@pytest.fixture
def ig_settings(tmp_path: Path, fake: FakeInstagram) -> Settings:
    return point_at(offline_settings_for(tmp_path), fake)


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10.0) as c:
        yield c


@pytest.fixture
def provider(ig_settings: Settings, clock: FrozenClock) -> InstagramOAuth:
    return InstagramOAuth(ig_settings, clock=clock)


async def consent(http: httpx.AsyncClient, provider: InstagramOAuth, state: str = "st-1") -> str:
    """Follow the authorize URL as the browser would; the callback's code."""
    r = await http.get(
        provider.authorize_url(state=state, redirect_uri=REDIRECT, code_challenge=None)
    )
    assert r.status_code == 302
    location = urlsplit(r.headers["location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == REDIRECT
    query = parse_qs(location.query)
    assert query["state"] == [state]
    return query["code"][0]


class TestOAuth:
    def test_is_an_oauth_provider_asking_for_the_publish_scopes(
        self, provider: InstagramOAuth, fake: FakeInstagram
    ) -> None:
        assert isinstance(provider, OAuthProvider)
        assert provider.configured()
        url = urlsplit(provider.authorize_url(state="s", redirect_uri=REDIRECT, code_challenge="x"))
        assert f"{url.scheme}://{url.netloc}{url.path}" == f"{fake.base}/oauth/authorize"
        q = parse_qs(url.query)
        assert q["scope"] == ["instagram_business_basic,instagram_business_content_publish"]
        assert (q["client_id"], q["redirect_uri"], q["response_type"], q["state"]) == (
            [CLIENT_ID],
            [REDIRECT],
            ["code"],
            ["s"],
        )
        assert "code_challenge" not in q  # Instagram documents no PKCE

    def test_not_configured_without_the_app_secret(self, tmp_path: Path) -> None:
        assert not InstagramOAuth(offline_settings_for(tmp_path)).configured()

    async def test_code_becomes_a_long_lived_token_of_the_professional_account(
        self, http: httpx.AsyncClient, provider: InstagramOAuth, fake: FakeInstagram, clock
    ) -> None:
        code = await consent(http, provider)
        tokens = await provider.exchange_code(
            http, code=code, redirect_uri=REDIRECT, code_verifier=None
        )
        held = fake.tokens[tokens.access_token]
        assert held.kind == "long"  # the short-lived token was traded in
        assert tokens.expires_at == clock.now() + timedelta(seconds=5184000)
        assert tokens.scope == "instagram_business_basic,instagram_business_content_publish"
        identity = await provider.identify(http, tokens)
        assert (identity.remote_id, identity.name) == (fake.user_id, "sunrise.shop")
        config = InstagramConfig.from_tokens(tokens, identity)
        assert (config.user_id, config.issued_at) == (fake.user_id, clock.now())
        # A token set stored as is (the connect flow's shape) validates as the config too.
        stored = {
            "access_token": tokens.access_token,
            "expires_at": tokens.expires_at.isoformat(),  # type: ignore[union-attr]
            "extra": {k: str(v) for k, v in tokens.extra.items()},
        }
        assert InstagramConfig.model_validate(stored).user_id == fake.user_id

    async def test_flat_code_answer_is_read_too(
        self, http: httpx.AsyncClient, provider: InstagramOAuth, fake: FakeInstagram
    ) -> None:
        fake.flat_code_answer = True
        code = await consent(http, provider)
        tokens = await provider.exchange_code(
            http, code=code, redirect_uri=REDIRECT, code_verifier=None
        )
        assert fake.tokens[tokens.access_token].kind == "long"

    async def test_a_code_is_good_once(
        self, http: httpx.AsyncClient, provider: InstagramOAuth
    ) -> None:
        code = await consent(http, provider)
        await provider.exchange_code(http, code=code, redirect_uri=REDIRECT, code_verifier=None)
        with pytest.raises(Permanent, match="Invalid authorization code"):
            await provider.exchange_code(http, code=code, redirect_uri=REDIRECT, code_verifier=None)

    async def test_refused_consent_redirects_with_access_denied(
        self, http: httpx.AsyncClient, provider: InstagramOAuth, fake: FakeInstagram
    ) -> None:
        fake.consent = False
        r = await http.get(
            provider.authorize_url(state="s", redirect_uri=REDIRECT, code_challenge=None)
        )
        q = parse_qs(urlsplit(r.headers["location"]).query)
        assert (q["error"], q["state"]) == (["access_denied"], ["s"])

    async def test_refresh_replaces_a_day_old_token(
        self, http: httpx.AsyncClient, provider: InstagramOAuth, fake: FakeInstagram, clock
    ) -> None:
        old = fake.long_lived_token(issued_at=clock.now() - timedelta(days=2))
        config = config_for(fake, old)
        fresh = await provider.refresh(http, config.token_set())
        assert fresh.access_token != config.access_token
        assert fake.tokens[fresh.access_token].kind == "long"
        assert fresh.expires_at == clock.now() + timedelta(seconds=5184000)
        assert config.with_tokens(fresh).issued_at == clock.now()

    async def test_refused_refresh_is_auth_expired(
        self, http: httpx.AsyncClient, provider: InstagramOAuth, fake: FakeInstagram, clock
    ) -> None:
        token = fake.long_lived_token(issued_at=clock.now() - timedelta(days=2))
        token.revoked = True
        with pytest.raises(AuthExpired):
            await provider.refresh(http, config_for(fake, token).token_set())


def config_for(fake: FakeInstagram, token: Any = None) -> InstagramConfig:
    token = token or fake.long_lived_token()
    return InstagramConfig(
        access_token=fake.token_string(token),
        expires_at=token.expires_at,
        issued_at=token.issued_at,
        user_id=token.user_id,
        username=fake.users[token.user_id],
    )
