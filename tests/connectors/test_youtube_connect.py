"""The shared OAuth connect flow, through the routes, against the fake Google."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from sqlalchemy import select

from uploadpools.kit.crypto import SecretBox
from uploadpools.models import Account
from webhelpers import sign_in


@pytest.fixture
async def browser() -> AsyncIterator[httpx.AsyncClient]:
    """What the user's browser does at Google: follow the consent URL, get a redirect."""
    async with httpx.AsyncClient(trust_env=False) as c:
        yield c


async def consent(browser: httpx.AsyncClient, authorize_url: str) -> str:
    """Visit the consent page; return the callback path + query Google redirects to."""
    r = await browser.get(authorize_url)
    assert r.status_code == 302, r.text
    parts = urlsplit(r.headers["location"])
    assert f"{parts.scheme}://{parts.netloc}" == "http://testserver"
    return f"{parts.path}?{parts.query}"


async def start(client, tenant) -> str:  # type: ignore[no-untyped-def]
    r = await client.get("/connect/youtube", headers=tenant.headers)
    assert r.status_code == 302, r.text
    return str(r.headers["location"])


async def accounts(app) -> list[Account]:  # type: ignore[no-untyped-def]
    async with app.state.uploadpools.maker() as s:
        return list((await s.scalars(select(Account).where(Account.platform == "youtube"))).all())


class TestConnect:
    async def test_consent_connects_the_channel_with_encrypted_tokens(
        self, client, tenant, google_app, browser, app, settings
    ):
        url = await start(client, tenant)
        q = parse_qs(urlsplit(url).query)
        assert url.startswith(google_app.base + "/o/oauth2/v2/auth?")
        assert q["access_type"] == ["offline"] and q["prompt"] == ["consent"]
        assert q["code_challenge_method"] == ["S256"]
        assert q["redirect_uri"] == ["http://testserver/connect/youtube/callback"]
        assert "https://www.googleapis.com/auth/youtube.upload" in q["scope"][0].split()
        r = await client.get(await consent(browser, url))
        assert r.status_code == 200, r.text
        assert "Fake Channel" in r.text
        (acc,) = await accounts(app)
        assert (acc.workspace_id, acc.name, acc.status) == (
            tenant.workspace_id,
            "Fake Channel",
            "connected",
        )
        assert acc.remote_id == google_app.channel_id
        # Stored encrypted: the raw column does not contain the token.
        config = SecretBox(settings.secret()).decrypt(acc.credentials)
        assert config["access_token"] in google_app.access_tokens
        assert config["refresh_token"] in google_app.refresh_tokens
        assert config["access_token"].encode() not in acc.credentials
        listed = (await client.get("/api/v1/accounts", headers=tenant.headers)).json()["items"]
        assert [(a["platform"], a["name"]) for a in listed] == [("youtube", "Fake Channel")]
        assert "access_token" not in str(listed)

    async def test_reconnecting_the_same_channel_updates_it_back_to_connected(
        self, client, tenant, google_app, browser, app
    ):
        await client.get(await consent(browser, await start(client, tenant)))
        (acc,) = await accounts(app)
        async with app.state.uploadpools.maker() as s:
            row = await s.get(Account, acc.id)
            row.status = "needs_reauth"
            await s.commit()
        r = await client.get(await consent(browser, await start(client, tenant)))
        assert r.status_code == 200, r.text
        (again,) = await accounts(app)
        assert (again.id, again.status) == (acc.id, "connected")

    async def test_the_api_gives_the_authorize_url(self, client, tenant, google_app, browser, app):
        r = await client.post("/api/v1/accounts/connect/youtube", headers=tenant.headers)
        assert r.status_code == 200, r.text
        url = r.json()["authorize_url"]
        # Not bound to a browser: the callback needs no cookie.
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://testserver"
        ) as other:
            r = await other.get(await consent(browser, url))
        assert r.status_code == 200, r.text
        assert len(await accounts(app)) == 1


class TestRefused:
    async def test_declined_consent_says_so_and_connects_nothing(
        self, client, tenant, google_app, browser, app
    ):
        google_app.refuse_consent = True
        r = await client.get(await consent(browser, await start(client, tenant)))
        assert r.status_code == 400
        assert "declined" in r.text and "access_denied" in r.text
        assert await accounts(app) == []

    async def test_tampered_state_is_refused(self, client, tenant, google_app, browser, app):
        path = await consent(browser, await start(client, tenant))
        q = parse_qs(urlsplit(path).query)
        state = q["state"][0]
        forged = state[:-6] + ("AAAAAA" if not state.endswith("AAAAAA") else "BBBBBB")
        r = await client.get(
            "/connect/youtube/callback", params={"code": q["code"][0], "state": forged}
        )
        assert r.status_code == 400 and "not one this server made" in r.text
        assert await accounts(app) == []

    async def test_expired_state_is_refused(self, client, tenant, google_app, browser, app, clock):
        path = await consent(browser, await start(client, tenant))
        clock.advance(timedelta(minutes=11))
        r = await client.get(path)
        assert r.status_code == 400 and "expired" in r.text
        assert await accounts(app) == []

    async def test_state_from_another_browser_is_refused(
        self, client, tenant, google_app, browser, app
    ):
        path = await consent(browser, await start(client, tenant))
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://testserver"
        ) as victim:
            r = await victim.get(path)
        assert r.status_code == 400 and "another browser" in r.text
        assert await accounts(app) == []

    async def test_wrong_pkce_verifier_is_refused_by_google(
        self, client, tenant, google_app, browser, app
    ):
        path = await consent(browser, await start(client, tenant))
        code = parse_qs(urlsplit(path).query)["code"][0]
        google_app.codes[code]["challenge"] = "not-the-challenge"
        r = await client.get(path)
        assert r.status_code == 400
        assert "Invalid code verifier" in r.text
        assert await accounts(app) == []

    async def test_unconfigured_platform_is_404_naming_the_settings(self, client, tenant, settings):
        r = await client.post("/api/v1/accounts/connect/youtube", headers=tenant.headers)
        assert r.status_code == 404
        assert "UPLOADPOOLS_YOUTUBE_CLIENT_ID" in r.json()["detail"]
        r = await client.post("/api/v1/accounts/connect/tiktok", headers=tenant.headers)
        assert r.status_code == 404
        r = await client.get("/connect/youtube", headers=tenant.headers)
        assert r.status_code == 404 and "text/html" in r.headers["content-type"]

    async def test_starting_from_the_api_needs_an_api_key(self, client, google_app):
        r = await client.post("/api/v1/accounts/connect/youtube")
        assert r.status_code == 401

    async def test_oauth_platforms_cannot_be_created_with_a_config(self, client, tenant):
        r = await client.post(
            "/api/v1/accounts",
            json={"platform": "youtube", "name": "yt", "config": {"access_token": "x"}},
            headers=tenant.headers,
        )
        assert r.status_code == 422
        assert "/connect/youtube" in r.text


class TestFromTheWebUI:
    async def test_signed_in_user_connects_and_lands_on_accounts(
        self, client, tenant, google_app, browser, app
    ):
        await sign_in(client, tenant.email)
        r = await client.get("/connect/youtube")  # no API key: the web session decides
        assert r.status_code == 302, r.text
        r = await client.get(await consent(browser, r.headers["location"]))
        assert (r.status_code, r.headers["location"]) == (303, "/accounts")
        (acc,) = await accounts(app)
        assert acc.workspace_id == tenant.workspace_id
        page = await client.get("/accounts")
        assert "Fake Channel" in page.text

    async def test_signed_out_browser_is_sent_to_sign_in(self, client, google_app):
        r = await client.get("/connect/youtube")
        assert r.status_code == 303
        assert r.headers["location"] == "/signin?next=/connect/youtube"
