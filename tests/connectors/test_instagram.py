"""The Instagram Reels connector and its OAuth provider against a fake Instagram on 127.0.0.1."""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from apihelpers import make_pool
from connectorhelpers import media_ref, offline_settings_for, publish_request
from fakes.instagram import (
    CLIENT_ID,
    PUBLISH_CAP,
    FakeInstagram,
    graph_error,
    running,
)
from media_samples import make_mp4
from platformhelpers import point_instagram, serve_media
from uploadpools.accounts.schemas import AccountCreate
from uploadpools.accounts.service import AccountService
from uploadpools.config import Settings
from uploadpools.connectors.base import (
    UNKNOWN,
    AuthExpired,
    ConnectorContext,
    DailyLimitReached,
    Permanent,
    PublishResult,
    RateLimited,
    Transient,
)
from uploadpools.connectors.instagram import InstagramConfig
from uploadpools.connectors.instagram.connector import InstagramConnector
from uploadpools.connectors.instagram.graph import graph_error as classify
from uploadpools.connectors.instagram.oauth import InstagramOAuth
from uploadpools.connectors.oauth import OAuthProvider
from uploadpools.kit.clock import FrozenClock
from uploadpools.kit.crypto import SecretBox
from uploadpools.models import Account
from uploadpools.store.engine import session_scope

REDIRECT = "https://up.example/connect/instagram/callback"


@pytest.fixture
def fake(clock: FrozenClock) -> Iterator[FakeInstagram]:
    with running(FakeInstagram(clock)) as f:
        yield f


@pytest.fixture
def ig_settings(tmp_path: Path, fake: FakeInstagram) -> Settings:
    return point_instagram(offline_settings_for(tmp_path), fake)


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


class Jobs:
    """A JobStore recording saves; ``crash_at`` (1-based save number) simulates the worker
    dying there: ``after`` decides whether that save reached the database first."""

    def __init__(self, crash_at: int | None = None, *, after: bool = False) -> None:
        self.saved: list[dict[str, Any]] = []
        self.configs: list[dict[str, Any]] = []
        self.crash_at = crash_at
        self.after = after
        self.calls = 0

    @property
    def job(self) -> dict[str, Any]:
        return dict(self.saved[-1]) if self.saved else {}

    async def save(self, job: dict[str, Any]) -> None:
        self.calls += 1
        if self.calls == self.crash_at and not self.after:
            raise Crash
        self.saved.append(dict(job))
        if self.calls == self.crash_at:
            raise Crash

    async def save_config(self, config: dict[str, Any]) -> None:
        self.configs.append(dict(config))


class Crash(Exception):
    pass


@pytest.fixture
def video(file_server, sample_mp4: Path) -> tuple[str, bytes]:  # type: ignore[no-untyped-def]
    shutil.copyfile(sample_mp4, file_server.root / "clip.mp4")
    return file_server.url("clip.mp4"), sample_mp4.read_bytes()


@pytest.fixture
def connector(ig_settings: Settings, http: httpx.AsyncClient, clock) -> InstagramConnector:  # type: ignore[no-untyped-def]
    return InstagramConnector(ConnectorContext(http, ig_settings, clock))


def reel(fake: FakeInstagram, url: str, *, config: InstagramConfig | None = None, **over: Any):  # type: ignore[no-untyped-def]
    fields: dict[str, Any] = {"options": {}, "media": replace(media_ref(), url=url)}
    fields.update(over)
    return publish_request((config or config_for(fake)).model_dump(mode="json"), **fields)


def endpoints(fake: FakeInstagram) -> list[str]:
    return [f"{m} {p.split('/', 2)[-1]}" for m, p, _ in fake.requests]


class TestPublish:
    async def test_publishes_a_reel_from_the_signed_media_url(
        self, connector: InstagramConnector, fake: FakeInstagram, video
    ) -> None:
        url, data = video
        jobs = Jobs()
        result = await connector.publish(reel(fake, url), jobs)
        (post,) = fake.posts
        assert result == PublishResult(
            post["id"], f"https://www.instagram.com/reel/{post['shortcode']}/"
        )
        assert post["video_sha256"] == hashlib.sha256(data).hexdigest()  # downloaded it
        assert post["caption"] == "Morning light #sunrise"
        assert post["share_to_feed"] == "true"
        cid = post["container_id"]
        # The container id is saved before anything else, the marker before media_publish.
        assert [sorted(j) for j in jobs.saved] == [
            ["container_created_at", "container_id"],
            ["container_created_at", "container_id", "publish_sent_at"],
            ["container_created_at", "container_id", "media_id", "publish_sent_at"],
        ]
        assert jobs.saved[0]["container_id"] == cid
        u = fake.user_id
        assert endpoints(fake) == [
            f"GET {u}/content_publishing_limit",
            f"POST {u}/media",
            f"GET {cid}",  # IN_PROGRESS
            f"GET {cid}",  # FINISHED
            f"POST {u}/media_publish",
            f"GET {post['id']}",
        ]

    async def test_options_reach_the_container(
        self, connector: InstagramConnector, fake: FakeInstagram, video
    ) -> None:
        options = {"share_to_feed": False, "thumb_offset": 1500, "collaborators": ["a.b"]}
        await connector.publish(reel(fake, video[0], options=options), Jobs())
        (post,) = fake.posts
        assert (post["share_to_feed"], post["thumb_offset"]) == ("false", "1500")
        (create,) = [p for m, path, p in fake.requests if path.endswith("/media") and m == "POST"]
        assert create["collaborators"] == "a.b"

    @pytest.mark.parametrize(
        ("options", "field"),
        [
            ({"thumb_offset": -1}, "thumb_offset"),
            ({"collaborators": ["a", "b", "c", "d"]}, "collaborators"),
            ({"privacy": "public"}, "privacy"),
            ({"cover_url": "not a url"}, "cover_url"),
        ],
    )
    async def test_invalid_options_are_refused_before_calling_instagram(
        self, connector: InstagramConnector, fake: FakeInstagram, options, field
    ) -> None:
        with pytest.raises(Permanent, match=field) as err:
            await connector.publish(reel(fake, "http://127.0.0.1:9/x", options=options), Jobs())
        assert err.value.reason == "media_rejected"
        assert fake.requests == []

    @pytest.mark.parametrize(
        ("caption", "rule"),
        [(" ".join(f"#t{i}" for i in range(31)), "31 hashtags"), ("@a " * 21, "21 @-mentions")],
    )
    async def test_caption_over_the_tag_limits_is_refused(
        self, connector: InstagramConnector, fake: FakeInstagram, caption: str, rule: str
    ) -> None:
        with pytest.raises(Permanent, match=rule):
            await connector.publish(reel(fake, "http://127.0.0.1:9/x", caption=caption), Jobs())
        assert fake.requests == []

    async def test_live_limit_used_up_creates_nothing(
        self, connector: InstagramConnector, fake: FakeInstagram, video
    ) -> None:
        fake.quota_used_before = 50
        with pytest.raises(DailyLimitReached, match="50 of 50"):
            await connector.publish(reel(fake, video[0]), Jobs())
        assert fake.containers_created() == 0 and fake.posts == []

    async def test_publishing_cap_error_is_the_daily_limit(
        self, connector: InstagramConnector, fake: FakeInstagram, video
    ) -> None:
        fake.fail("publish", 400, PUBLISH_CAP)
        with pytest.raises(DailyLimitReached, match="maximum number of posts"):
            await connector.publish(reel(fake, video[0]), Jobs())
        assert fake.posts == []

    async def test_container_error_is_media_rejected_with_the_status_text(
        self, connector: InstagramConnector, fake: FakeInstagram, video
    ) -> None:
        fake.container_error = "Error: The video's aspect ratio is not supported (2207009)"
        with pytest.raises(Permanent, match="aspect ratio is not supported") as err:
            await connector.publish(reel(fake, video[0]), Jobs())
        assert err.value.reason == "media_rejected"
        assert fake.publish_attempts == 0

    async def test_unreachable_video_fails_the_container_and_names_the_public_url(
        self, connector: InstagramConnector, fake: FakeInstagram, file_server
    ) -> None:
        with pytest.raises(Permanent, match="UPLOADPOOLS_PUBLIC_URL") as err:
            await connector.publish(reel(fake, file_server.url("missing.mp4")), Jobs())
        assert err.value.reason == "media_rejected" and "HTTP 404" in err.value.detail

    async def test_bytes_that_are_not_a_video_fail_the_container(
        self, connector: InstagramConnector, fake: FakeInstagram, file_server
    ) -> None:
        (file_server.root / "page.mp4").write_text("<html>signature expired</html>")
        with pytest.raises(Permanent, match="format is not supported"):
            await connector.publish(reel(fake, file_server.url("page.mp4")), Jobs())
        assert fake.posts == []

    async def test_slow_processing_is_retried_on_the_same_container(
        self, connector: InstagramConnector, fake: FakeInstagram, video, clock
    ) -> None:
        fake.polls_before_finished = 10**6
        ticking = TickingClock(clock)
        connector._ctx = ConnectorContext(connector._ctx.http, connector._ctx.settings, ticking)
        jobs = Jobs()
        with pytest.raises(Transient, match="still processing"):
            await connector.publish(reel(fake, video[0]), jobs)
        fake.polls_before_finished = 0
        await connector.publish(reel(fake, video[0], job=jobs.job), jobs)
        assert fake.containers_created() == 1 and len(fake.posts) == 1

    async def test_expired_container_is_replaced(
        self, connector: InstagramConnector, fake: FakeInstagram, video, clock
    ) -> None:
        fake.fail("publish", 503, graph_error(2, None, "Service temporarily unavailable"))
        jobs = Jobs()
        with pytest.raises(Transient):
            await connector.publish(reel(fake, video[0]), jobs)
        clock.advance(hours=25)
        config = config_for(fake)  # the old token is still valid; a fresh one keeps it simple
        await connector.publish(reel(fake, video[0], config=config, job=jobs.job), jobs)
        assert fake.containers_created() == 2 and len(fake.posts) == 1

    async def test_not_ready_for_publishing_is_retried_on_the_same_container(
        self, connector: InstagramConnector, fake: FakeInstagram, video
    ) -> None:
        fake.fail("publish", 400, graph_error(9007, 2207027, "The media is not ready"))
        jobs = Jobs()
        with pytest.raises(Transient, match="not ready"):
            await connector.publish(reel(fake, video[0]), jobs)
        await connector.publish(reel(fake, video[0], job=jobs.job), jobs)
        assert len(fake.posts) == 1 and fake.containers_created() == 1


class TickingClock:
    """A clock that moves a minute every time it is read (a slow platform, no sleeping)."""

    def __init__(self, clock: FrozenClock) -> None:
        self.clock = clock

    def now(self):  # type: ignore[no-untyped-def]
        return self.clock.advance(minutes=1)


class TestTokens:
    async def test_token_near_expiry_is_refreshed_and_saved(
        self, connector: InstagramConnector, fake: FakeInstagram, video, clock
    ) -> None:
        old = fake.long_lived_token(issued_at=clock.now() - timedelta(days=40))
        jobs = Jobs()
        await connector.publish(reel(fake, video[0], config=config_for(fake, old)), jobs)
        (saved,) = jobs.configs
        assert saved["access_token"] != fake.token_string(old)
        assert fake.tokens[saved["access_token"]].kind == "long"
        assert InstagramConfig.model_validate(saved).expires_at == clock.now() + timedelta(days=60)
        assert len(fake.posts) == 1

    async def test_refresh_failing_for_now_posts_with_the_old_token(
        self, connector: InstagramConnector, fake: FakeInstagram, video, clock
    ) -> None:
        old = fake.long_lived_token(issued_at=clock.now() - timedelta(days=40))
        fake.fail("refresh", 503, {"error": {"message": "try later", "code": 2}})
        jobs = Jobs()
        await connector.publish(reel(fake, video[0], config=config_for(fake, old)), jobs)
        assert jobs.configs == [] and len(fake.posts) == 1

    async def test_young_token_is_not_refreshed(
        self, connector: InstagramConnector, fake: FakeInstagram, video
    ) -> None:
        jobs = Jobs()
        await connector.publish(reel(fake, video[0]), jobs)
        assert jobs.configs == []
        assert not any(p.endswith("refresh_access_token") for _, p, _ in fake.requests)

    async def test_expired_token_needs_reauth_without_calling(
        self, connector: InstagramConnector, fake: FakeInstagram, video, clock
    ) -> None:
        old = fake.long_lived_token(issued_at=clock.now() - timedelta(days=61))
        with pytest.raises(AuthExpired, match="reconnect"):
            await connector.publish(reel(fake, video[0], config=config_for(fake, old)), Jobs())
        assert fake.requests == []

    async def test_refused_refresh_needs_reauth(
        self, connector: InstagramConnector, fake: FakeInstagram, video, clock
    ) -> None:
        old = fake.long_lived_token(issued_at=clock.now() - timedelta(days=50))
        old.revoked = True
        with pytest.raises(AuthExpired):
            await connector.publish(reel(fake, video[0], config=config_for(fake, old)), Jobs())
        assert fake.containers_created() == 0

    async def test_revoked_token_while_posting_needs_reauth(
        self, connector: InstagramConnector, fake: FakeInstagram, video
    ) -> None:
        config = config_for(fake)
        fake.tokens[config.access_token].revoked = True
        with pytest.raises(AuthExpired, match="code 190"):
            await connector.publish(reel(fake, video[0], config=config), Jobs())


class TestErrors:
    @pytest.mark.parametrize(
        ("status", "body", "kind", "reason"),
        [
            (400, PUBLISH_CAP, DailyLimitReached, None),
            (400, graph_error(4, None, "Application request limit reached"), RateLimited, None),
            (400, graph_error(17, None, "User request limit reached"), RateLimited, None),
            (400, graph_error(32, None, "Page request limit reached"), RateLimited, None),
            (
                400,
                graph_error(613, None, "Calls to this api have exceeded the rate limit"),
                RateLimited,
                None,
            ),
            (400, graph_error(80002, None, "too many calls"), RateLimited, None),
            (400, graph_error(190, 463, "Session has expired"), AuthExpired, None),
            (
                400,
                graph_error(4, 2207051, "We restrict certain activity"),
                Permanent,
                "platform_error",
            ),
            (
                400,
                graph_error(352, 2207026, "The video format is not supported"),
                Permanent,
                "media_rejected",
            ),
            (400, graph_error(36004, 2207010, "caption too long"), Permanent, "media_rejected"),
            (400, graph_error(100, 2207023, "media type unknown"), Permanent, "media_rejected"),
            (
                400,
                graph_error(25, 2207050, "The Instagram account is restricted."),
                Permanent,
                "platform_error",
            ),
            (400, graph_error(1, None, "An unknown error occurred"), Transient, None),
            (400, graph_error(2, None, "Service temporarily unavailable"), Transient, None),
            (400, graph_error(-1, 2207001, "Instagram server error"), Transient, None),
            (400, graph_error(100, None, "x", is_transient=True), Transient, None),
            (500, {"error": {"message": "oops"}}, Transient, None),
            (502, None, Transient, None),
            (400, graph_error(100, None, "Invalid parameter"), Permanent, "platform_error"),
        ],
    )
    def test_body_decides_the_class(self, status, body, kind, reason) -> None:  # type: ignore[no-untyped-def]
        err = classify(status, body, "creating the reel container")
        assert type(err) is kind
        if reason is not None:
            assert isinstance(err, Permanent) and err.reason == reason

    @pytest.mark.parametrize(
        ("code", "kind"),
        [
            (4, RateLimited),
            (17, RateLimited),
            (32, RateLimited),
            (613, RateLimited),
            (190, AuthExpired),
        ],
    )
    async def test_errors_from_the_server_are_mapped(
        self, connector: InstagramConnector, fake: FakeInstagram, video, code: int, kind: type
    ) -> None:
        fake.fail("create", 400, graph_error(code, None, "refused"))
        with pytest.raises(kind):
            await connector.publish(reel(fake, video[0]), Jobs())
        assert fake.posts == []

    async def test_server_error_is_transient_and_nothing_leaks_the_token(
        self, connector: InstagramConnector, fake: FakeInstagram, video
    ) -> None:
        config = config_for(fake)
        fake.fail("limit", 500, {"error": {"message": "Please retry your request later."}})
        with pytest.raises(Transient) as err:
            await connector.publish(reel(fake, video[0], config=config), Jobs())
        assert config.access_token not in err.value.detail


class TestNoDoublePosts:
    """A worker dies at each save; the engine reconciles, then publishes if told None."""

    async def recover(
        self, connector: InstagramConnector, fake: FakeInstagram, url: str, jobs: Jobs
    ):  # type: ignore[no-untyped-def]
        request = reel(fake, url, job=jobs.job)
        found = await connector.reconcile(request)
        if found is None:
            found = await connector.publish(request, Jobs())
        return found

    async def test_crash_after_the_container_was_saved(
        self, connector: InstagramConnector, fake: FakeInstagram, video
    ) -> None:
        jobs = Jobs(crash_at=2)  # dies saving the publish marker: media_publish not sent
        with pytest.raises(Crash):
            await connector.publish(reel(fake, video[0]), jobs)
        assert fake.publish_attempts == 0 and "container_id" in jobs.job
        result = await self.recover(connector, fake, video[0], jobs)
        (post,) = fake.posts
        assert result.remote_id == post["id"]
        assert fake.containers_created() == 1  # the saved container was reused

    async def test_crash_after_the_marker_before_media_publish(
        self, connector: InstagramConnector, fake: FakeInstagram, video
    ) -> None:
        jobs = Jobs(crash_at=2, after=True)  # marker saved, then died: container FINISHED
        with pytest.raises(Crash):
            await connector.publish(reel(fake, video[0]), jobs)
        assert "publish_sent_at" in jobs.job and fake.publish_attempts == 0
        result = await self.recover(connector, fake, video[0], jobs)
        (post,) = fake.posts
        assert result.remote_id == post["id"] and fake.containers_created() == 1

    async def test_crash_after_media_publish_finds_the_post(
        self, connector: InstagramConnector, fake: FakeInstagram, video
    ) -> None:
        jobs = Jobs(crash_at=3)  # published, died before saving the media id
        with pytest.raises(Crash):
            await connector.publish(reel(fake, video[0]), jobs)
        assert "media_id" not in jobs.job
        (post,) = fake.posts
        found = await connector.reconcile(reel(fake, video[0], job=jobs.job))
        assert found == PublishResult(
            post["id"], f"https://www.instagram.com/reel/{post['shortcode']}/"
        )
        # A retry with the same job does not publish again either.
        again = await connector.publish(reel(fake, video[0], job=jobs.job), Jobs())
        assert again.remote_id == post["id"]
        assert len(fake.posts) == 1 and fake.publish_attempts == 1

    async def test_lost_answer_to_media_publish_is_retried_safely(
        self, connector: InstagramConnector, fake: FakeInstagram, video
    ) -> None:
        fake.fail("publish", 500, {"error": {"message": "An unexpected error has occurred."}})
        jobs = Jobs()
        with pytest.raises(Transient):
            await connector.publish(reel(fake, video[0]), jobs)
        await connector.publish(reel(fake, video[0], job=jobs.job), jobs)
        assert len(fake.posts) == 1 and fake.containers_created() == 1

    async def test_media_id_saved_is_the_post(
        self, connector: InstagramConnector, fake: FakeInstagram, video
    ) -> None:
        jobs = Jobs()
        result = await connector.publish(reel(fake, video[0]), jobs)
        assert await connector.reconcile(reel(fake, video[0], job=jobs.job)) == result

    async def test_nothing_saved_is_nothing_posted(
        self, connector: InstagramConnector, fake: FakeInstagram
    ) -> None:
        assert await connector.reconcile(reel(fake, "http://127.0.0.1:9/x", job={})) is None
        job = {"container_id": "1", "container_created_at": "2026-03-02T12:00:00+00:00"}
        assert await connector.reconcile(reel(fake, "http://127.0.0.1:9/x", job=job)) is None
        assert fake.requests == []  # decided from what was saved alone

    async def test_unanswerable_is_unknown(
        self, connector: InstagramConnector, fake: FakeInstagram, video
    ) -> None:
        jobs = Jobs(crash_at=3)
        config = config_for(fake)
        with pytest.raises(Crash):
            await connector.publish(reel(fake, video[0], config=config), jobs)
        fake.tokens[config.access_token].revoked = True
        found = await connector.reconcile(reel(fake, video[0], config=config, job=jobs.job))
        assert found == UNKNOWN


NINE = datetime(2026, 3, 3, 9, 0, tzinfo=UTC)  # the day after conftest's START


@pytest.fixture(scope="module")
def reel_mp4(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Reels need at least 3 s; vertical like a reel.
    return make_mp4(
        tmp_path_factory.mktemp("reel") / "reel.mp4", seconds=3.2, width=144, height=256
    )


@pytest.fixture
async def through_engine(app, client, tenant, settings, fake, file_server, reel_mp4):  # type: ignore[no-untyped-def]
    """A pool posting at 09:00 UTC to a connected Instagram account, one video queued.

    The app's public URL is the file server, which serves the video under the signed
    media path, so the fake downloads it as Instagram would from a public server."""
    point_instagram(settings, fake)
    st = app.state.uploadpools
    token = fake.long_lived_token()
    async with session_scope(st.maker) as s:
        account = await AccountService(s, settings).create(
            tenant.workspace_id,
            AccountCreate(platform="instagram", name="sunrise.shop"),
            token.issued_at,
            validated_config=config_for(fake, token).model_dump(mode="json"),
        )
    pool = await make_pool(client, tenant, account.id, timezone="UTC", state="active")
    with reel_mp4.open("rb") as f:
        r = await client.post(
            f"/api/v1/pools/{pool['id']}/videos",
            files={"file": ("reel.mp4", f, "video/mp4")},
            data={"title": "Sunrise", "caption": "Morning #light"},
            headers=tenant.headers,
        )
    assert r.status_code == 201, r.text
    item = r.json()
    await serve_media(app, settings, file_server, item["id"], reel_mp4)
    return {"pool": pool["id"], "item": item["id"], "account": account.id, "token": token}


async def outcome(client, tenant, ctx):  # type: ignore[no-untyped-def]
    r = await client.get(
        f"/api/v1/pools/{ctx['pool']}/videos/{ctx['item']}", headers=tenant.headers
    )
    (delivery,) = r.json()["deliveries"]
    notes = (await client.get("/api/v1/notifications", headers=tenant.headers)).json()["items"]
    return r.json(), delivery, notes


class TestThroughTheEngine:
    async def test_posts_at_slot_time(self, client, tenant, engine, clock, fake, through_engine):  # type: ignore[no-untyped-def]
        clock.set(NINE)
        await engine.run()
        item, d, _ = await outcome(client, tenant, through_engine)
        (post,) = fake.posts
        assert (item["status"], d["status"], d["remote_id"]) == ("dispatched", "posted", post["id"])
        assert d["remote_url"] == f"https://www.instagram.com/reel/{post['shortcode']}/"
        assert post["caption"] == "Morning #light"

    async def test_publishing_limit_skips_with_a_warning(
        self, client, tenant, engine, clock, fake, through_engine
    ):  # type: ignore[no-untyped-def]
        fake.quota_used_before = fake.quota_total
        clock.set(NINE)
        await engine.run()
        item, d, notes = await outcome(client, tenant, through_engine)
        assert (item["status"], d["reason"]) == ("skipped", "platform_daily_limit")
        (note,) = notes
        assert note["level"] == "warning" and "daily limit" in note["message"]
        assert fake.containers_created() == 0

    async def test_token_error_makes_the_account_need_reauth(
        self, client, tenant, engine, clock, fake, through_engine
    ):  # type: ignore[no-untyped-def]
        through_engine["token"].revoked = True
        clock.set(NINE)
        await engine.run()
        item, d, notes = await outcome(client, tenant, through_engine)
        assert (item["status"], d["reason"]) == ("skipped", "auth_expired")
        r = await client.get(
            f"/api/v1/accounts/{through_engine['account']}", headers=tenant.headers
        )
        assert r.json()["status"] == "needs_reauth"
        assert "account.needs_reauth" in {n["kind"] for n in notes}
        assert fake.posts == []

    async def test_refused_refresh_makes_the_account_need_reauth(
        self, app, client, tenant, engine, clock, fake, settings, through_engine
    ):  # type: ignore[no-untyped-def]
        # A 50-day-old token is due for a refresh; the user revoked the app meanwhile.
        old = fake.long_lived_token(issued_at=clock.now() - timedelta(days=50))
        async with session_scope(app.state.uploadpools.maker) as s:
            account = await s.get(Account, through_engine["account"])
            account.credentials = SecretBox(settings.secret()).encrypt(
                config_for(fake, old).model_dump(mode="json")
            )
        old.revoked = True
        clock.set(NINE)
        await engine.run()
        item, d, notes = await outcome(client, tenant, through_engine)
        assert (item["status"], d["reason"]) == ("skipped", "auth_expired")
        r = await client.get(
            f"/api/v1/accounts/{through_engine['account']}", headers=tenant.headers
        )
        assert r.json()["status"] == "needs_reauth"
        assert "account.needs_reauth" in {n["kind"] for n in notes}
        assert [p for _, p, _ in fake.requests] == ["/refresh_access_token"]
        assert fake.containers_created() == 0

    @pytest.mark.parametrize("dies_at", [2, 3], ids=["before-publish", "after-publish"])
    async def test_worker_dying_mid_post_ends_with_exactly_one_post(
        self, client, tenant, clock, app, settings, fake, through_engine, dies_at
    ):  # type: ignore[no-untyped-def]
        from uploadpools.engine.dispatcher import Dispatcher, _Jobs
        from uploadpools.engine.ticker import Ticker

        st = app.state.uploadpools
        clock.set(NINE)
        await Ticker(st.maker, settings, clock).tick()
        dying = Dispatcher(st.maker, settings, clock, st.storage, st.http, node="dying")
        (c,) = await dying.claim(10)
        jobs = _Jobs(dying, c)
        saves = 0

        class Dies:
            async def save(self, job: dict[str, Any]) -> None:
                nonlocal saves
                saves += 1
                if saves == dies_at:  # 2: saving the marker; 3: saving the media id
                    raise Crash
                await jobs.save(job)

            async def save_config(self, config: dict[str, Any]) -> None:
                await jobs.save_config(config)

        with pytest.raises(Crash):
            await InstagramConnector(dying.ctx).publish(c.request, Dies())
        assert len(fake.posts) == dies_at - 2
        clock.advance(seconds=settings.lease_seconds + 1)
        survivor = Dispatcher(st.maker, settings, clock, st.storage, st.http, node="survivor")
        assert await survivor.run_until_idle() == 1
        item, d, _ = await outcome(client, tenant, through_engine)
        (post,) = fake.posts
        assert (item["status"], d["status"], d["remote_id"]) == ("dispatched", "posted", post["id"])
        assert fake.containers_created() == 1 and fake.publish_attempts == 1
