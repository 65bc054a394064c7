"""The TikTok connector and OAuth provider against a fake TikTok on 127.0.0.1."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from pydantic import SecretStr

from connectorhelpers import SCHEDULED, offline_settings_for
from fakes.tiktok import CLIENT_KEY, CLIENT_SECRET, FakeTikTok, running
from uploadpools.config import Settings
from uploadpools.connectors.base import AuthExpired, Permanent, Transient
from uploadpools.connectors.oauth import OAuthProvider, TokenSet, pkce_pair
from uploadpools.connectors.tiktok.oauth import TikTokOAuth
from uploadpools.kit.clock import FrozenClock

REDIRECT = "https://up.example/connect/tiktok/callback"


@pytest.fixture
def fake() -> Iterator[FakeTikTok]:
    with running() as f:
        yield f


def tiktok_settings(settings: Settings, fake: FakeTikTok) -> Settings:
    settings.tiktok_client_key = CLIENT_KEY
    settings.tiktok_client_secret = SecretStr(CLIENT_SECRET)
    settings.tiktok_api_base = fake.url
    settings.tiktok_auth_base = fake.url
    settings.tiktok_poll_interval_s = 0
    return settings


@pytest.fixture
def offline(tmp_path: Path, fake: FakeTikTok) -> Settings:
    return tiktok_settings(offline_settings_for(tmp_path), fake)


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(SCHEDULED)


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as c:
        yield c


@pytest.fixture
def provider(offline: Settings, clock: FrozenClock) -> TikTokOAuth:
    return TikTokOAuth(offline, clock=clock)


async def consent(http: httpx.AsyncClient, url: str) -> dict[str, str]:
    """What the fake's consent page sends back to the redirect URI."""
    r = await http.get(url)
    assert r.status_code == 302, r.text
    location = r.headers["location"]
    assert location.startswith(REDIRECT + "?")
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


async def connect(provider: TikTokOAuth, http: httpx.AsyncClient) -> TokenSet:
    verifier, challenge = pkce_pair()
    url = provider.authorize_url(state="st-1", redirect_uri=REDIRECT, code_challenge=challenge)
    back = await consent(http, url)
    return await provider.exchange_code(
        http, code=back["code"], redirect_uri=REDIRECT, code_verifier=verifier
    )


class TestOAuth:
    def test_is_an_oauth_provider_asking_for_posting_scopes(self, provider):
        assert isinstance(provider, OAuthProvider)
        assert provider.platform == "tiktok" and provider.uses_pkce
        assert set(provider.scopes) == {"user.info.basic", "video.publish"}

    def test_authorize_url_names_client_key_scopes_and_hex_pkce(self, provider, fake):
        verifier, challenge = pkce_pair()
        url = provider.authorize_url(state="st-1", redirect_uri=REDIRECT, code_challenge=challenge)
        parts = urlsplit(url)
        assert f"{parts.scheme}://{parts.netloc}{parts.path}" == f"{fake.url}/v2/auth/authorize/"
        q = {k: v[0] for k, v in parse_qs(parts.query).items()}
        import hashlib

        assert q == {
            "client_key": CLIENT_KEY,
            "response_type": "code",
            "scope": "user.info.basic,video.publish",
            "redirect_uri": REDIRECT,
            "state": "st-1",
            "code_challenge": hashlib.sha256(verifier.encode()).hexdigest(),
            "code_challenge_method": "S256",
        }

    async def test_code_exchange_gives_tokens_and_identity(self, provider, http, fake, clock):
        fake.creator("open-1", display_name="Sunny Creator")
        tokens = await connect(provider, http)
        assert tokens.access_token in fake.access and tokens.refresh_token in fake.refresh
        assert tokens.expires_at == clock.now() + timedelta(seconds=fake.expires_in)
        assert tokens.refresh_expires_at == clock.now() + timedelta(seconds=fake.refresh_expires_in)
        assert tokens.extra == {"open_id": "open-1"}
        who = await provider.identify(http, tokens)
        assert (who.remote_id, who.name) == ("open-1", "Sunny Creator")
        assert fake.calls("/v2/oauth/token/") == 1

    async def test_base64url_challenge_when_configured(self, provider, http, fake, offline):
        offline.tiktok_pkce_challenge = "base64url"
        fake.pkce_encoding = "base64url"
        assert (await connect(provider, http)).access_token

    async def test_challenge_in_the_wrong_encoding_is_refused(self, provider, http, fake, offline):
        offline.tiktok_pkce_challenge = "base64url"  # the fake expects hex
        with pytest.raises(Permanent, match="Code verifier or code challenge is invalid"):
            await connect(provider, http)

    async def test_a_code_works_once(self, provider, http, fake):
        verifier, challenge = pkce_pair()
        url = provider.authorize_url(state="s", redirect_uri=REDIRECT, code_challenge=challenge)
        code = (await consent(http, url))["code"]
        await provider.exchange_code(http, code=code, redirect_uri=REDIRECT, code_verifier=verifier)
        with pytest.raises(Permanent, match="refused the authorization code"):
            await provider.exchange_code(
                http, code=code, redirect_uri=REDIRECT, code_verifier=verifier
            )

    async def test_consent_without_posting_permission_is_refused(self, provider, http, fake):
        fake.grant_scopes = "user.info.basic"
        with pytest.raises(Permanent, match=r"video\.publish"):
            await connect(provider, http)

    async def test_refresh_rotates_the_refresh_token(self, provider, http, fake, clock):
        tokens = await connect(provider, http)
        clock.advance(hours=30)
        fresh = await provider.refresh(http, tokens)
        assert fresh.access_token != tokens.access_token
        assert fresh.refresh_token != tokens.refresh_token
        assert fresh.expires_at == clock.now() + timedelta(seconds=fake.expires_in)
        assert fresh.extra == {"open_id": "open-1"}
        # The old refresh token stopped working when the new one was issued.
        with pytest.raises(AuthExpired, match="invalid_grant"):
            await provider.refresh(http, tokens)
        assert (await provider.refresh(http, fresh)).access_token

    async def test_refused_refresh_is_auth_expired(self, provider, http, fake):
        tokens = await connect(provider, http)
        fake.revoke(tokens.refresh_token or "")
        with pytest.raises(AuthExpired, match="reconnect"):
            await provider.refresh(http, tokens)

    async def test_token_endpoint_trouble_is_transient(self, provider, http, fake):
        tokens = await connect(provider, http)
        fake.fail("token", 503)
        with pytest.raises(Transient):
            await provider.refresh(http, tokens)
        assert (await provider.refresh(http, tokens)).access_token

    async def test_unconfigured_server_says_which_settings_to_set(self, provider, http, offline):
        offline.tiktok_client_secret = None
        assert not provider.configured()
        with pytest.raises(Permanent, match="UPLOADPOOLS_TIKTOK_CLIENT_SECRET"):
            await provider.exchange_code(
                http, code="c", redirect_uri=REDIRECT, code_verifier="v" * 43
            )
