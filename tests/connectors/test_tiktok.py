"""The TikTok connector and OAuth provider against a fake TikTok on 127.0.0.1."""

from __future__ import annotations

import hashlib
import itertools
import os
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import anyio
import httpx
import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from apihelpers import make_pool
from connectorhelpers import offline_settings_for, publish_request
from fakes.tiktok import CLIENT_KEY, FakeTikTok, check_source_info, running
from platformhelpers import point_tiktok
from uploadpools.config import Settings
from uploadpools.connectors.base import (
    UNKNOWN,
    AuthExpired,
    Connector,
    ConnectorContext,
    DailyLimitReached,
    MediaRef,
    Permanent,
    PublishResult,
    RateLimited,
    Transient,
)
from uploadpools.connectors.oauth import OAuthProvider, TokenSet, pkce_pair
from uploadpools.connectors.registry import connector_class
from uploadpools.connectors.tiktok.api import MAX_CHUNK, MAX_VIDEO_SIZE, MIN_CHUNK, plan_chunks
from uploadpools.connectors.tiktok.connector import TikTokConnector
from uploadpools.connectors.tiktok.oauth import TikTokOAuth
from uploadpools.kit.clock import FrozenClock
from uploadpools.kit.crypto import SecretBox
from uploadpools.models import Account

REDIRECT = "https://up.example/connect/tiktok/callback"


@pytest.fixture
def fake() -> Iterator[FakeTikTok]:
    with running() as f:
        yield f


@pytest.fixture
def offline(tmp_path: Path, fake: FakeTikTok) -> Settings:
    return point_tiktok(offline_settings_for(tmp_path), fake)


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


# -- publishing ------------------------------------------------------------------------------


class Jobs:
    """A JobStore recording saves, and how many chunks had reached TikTok at each save."""

    def __init__(self, fake: FakeTikTok) -> None:
        self.fake = fake
        self.saved: list[dict[str, Any]] = []
        self.chunks_at_save: list[int] = []
        self.configs: list[dict[str, Any]] = []

    async def save(self, job: dict[str, Any]) -> None:
        self.saved.append(dict(job))
        self.chunks_at_save.append(self.fake.calls("/upload/"))

    async def save_config(self, config: dict[str, Any]) -> None:
        self.configs.append(dict(config))

    @property
    def job(self) -> dict[str, Any]:
        return self.saved[-1]


def video_file(path: Path, size: int) -> Path:
    """A sparse file of ``size`` bytes with distinct bytes at its start and end."""
    with path.open("wb") as f:
        f.truncate(size)
        f.write(os.urandom(min(size, 4096)))
        if size > 8192:
            f.seek(size - 4096)
            f.write(os.urandom(4096))
    return path


def file_media(
    path: Path, *, content_type: str = "video/mp4", duration_s: float = 12.0
) -> MediaRef:
    async def opener(*, start: int = 0, end: int | None = None, **_: Any) -> AsyncIterator[bytes]:
        async with await anyio.open_file(path, "rb") as f:
            await f.seek(start)
            left = (end if end is not None else path.stat().st_size) - start
            while left > 0:
                data = await f.read(min(left, 1 << 20))
                if not data:
                    return
                left -= len(data)
                yield data

    sha = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            sha.update(block)
    return MediaRef(
        id="med01",
        storage_key="ws/01/med01",
        size=path.stat().st_size,
        sha256=sha.hexdigest(),
        content_type=content_type,
        duration_s=duration_s,
        width=1080,
        height=1920,
        url="https://up.example/media/med01?exp=1&sig=abc",
        open=opener,
    )


@pytest.fixture
def small(tmp_path: Path) -> MediaRef:
    return file_media(video_file(tmp_path / "small.mp4", 300_000))


@pytest.fixture
def ctx(offline: Settings, clock: FrozenClock, http: httpx.AsyncClient) -> ConnectorContext:
    return ConnectorContext(http, offline, clock)


@pytest.fixture
def connector(ctx: ConnectorContext) -> TikTokConnector:
    return TikTokConnector(ctx)


@pytest.fixture
def jobs(fake: FakeTikTok) -> Jobs:
    return Jobs(fake)


def account(fake: FakeTikTok, clock: FrozenClock, **over: Any) -> dict[str, Any]:
    access, refresh = fake.grant("open-1")
    config = {
        "access_token": access,
        "refresh_token": refresh,
        "expires_at": (clock.now() + timedelta(hours=20)).isoformat(),
        "refresh_expires_at": (clock.now() + timedelta(days=300)).isoformat(),
        "scope": "user.info.basic,video.publish",
        "open_id": "open-1",
    }
    config.update(over)
    return config


def request_for(config: dict[str, Any], media: MediaRef, **over: Any):  # type: ignore[no-untyped-def]
    fields: dict[str, Any] = {"options": {"privacy": "public"}, "media": media}
    fields.update(over)
    return publish_request(config, **fields)


class TestPublish:
    def test_is_registered_with_constraints(self, connector):
        assert connector_class("tiktok") is TikTokConnector
        assert isinstance(connector, Connector)
        c = TikTokConnector.constraints
        assert c is not None
        assert (c.max_caption_chars, c.max_size, c.min_width, c.max_duration_s) == (
            2200,
            4 * 1024**3,
            360,
            600.0,
        )
        assert c.containers == {"mp4", "mov", "webm"}

    async def test_small_video_goes_in_one_chunk_and_returns_the_post(
        self, connector, fake, clock, jobs, small
    ):
        result = await connector.publish(request_for(account(fake, clock), small), jobs)
        (post,) = fake.posts
        assert post["sha256"] == small.sha256 and post["chunks"] == [(0, small.size - 1)]
        assert result == PublishResult(
            str(post["post_id"]), f"https://www.tiktok.com/@sunny.creator/video/{post['post_id']}"
        )
        assert post["post_info"] == {
            "title": "Morning light #sunrise",
            "privacy_level": "PUBLIC_TO_EVERYONE",
            "disable_comment": False,
            "disable_duet": False,
            "disable_stitch": False,
            "brand_content_toggle": False,
            "brand_organic_toggle": False,
            "is_aigc": False,
        }
        # The publish id was saved before any byte went to TikTok.
        assert jobs.saved == [{"publish_id": post["publish_id"], "username": "sunny.creator"}]
        assert jobs.chunks_at_save == [0]
        assert fake.calls("/v2/post/publish/creator_info/query/") == 1

    async def test_large_video_goes_in_chunks_the_last_taking_the_rest(
        self, connector, fake, clock, jobs, tmp_path, offline
    ):
        offline.tiktok_chunk_size = MIN_CHUNK
        size = 3 * MIN_CHUNK + 12345
        media = file_media(video_file(tmp_path / "big.mp4", size), content_type="video/quicktime")
        await connector.publish(request_for(account(fake, clock), media), jobs)
        (post,) = fake.posts
        assert post["chunks"] == [
            (0, MIN_CHUNK - 1),
            (MIN_CHUNK, 2 * MIN_CHUNK - 1),
            (2 * MIN_CHUNK, size - 1),
        ]
        assert post["sha256"] == media.sha256
        assert fake.publishes[post["publish_id"]].content_type == "video/quicktime"

    async def test_a_chunk_that_meets_a_server_error_is_sent_again(
        self, connector, fake, clock, jobs, small
    ):
        fake.fail("chunk", 503, chunk=0)
        await connector.publish(request_for(account(fake, clock), small), jobs)
        assert len(fake.posts) == 1 and fake.calls("/upload/") == 2

    async def test_last_chunk_whose_answer_was_lost_is_not_posted_twice(
        self, connector, fake, clock, jobs, small
    ):
        fake.fail("chunk", 502, chunk=0, after_accepting=True)
        result = await connector.publish(request_for(account(fake, clock), small), jobs)
        assert len(fake.posts) == 1 and result.remote_id == str(fake.posts[0]["post_id"])
        assert fake.calls("/upload/") == 2 and len(fake.publishes) == 1

    async def test_waits_for_processing(self, connector, fake, clock, jobs, small):
        fake.processing_polls = 3
        result = await connector.publish(request_for(account(fake, clock), small), jobs)
        assert result.remote_id and fake.calls("/v2/post/publish/status/fetch/") == 4

    async def test_still_processing_at_the_deadline_is_checked_again_later(
        self, ctx, fake, clock, jobs, small, offline
    ):
        offline.tiktok_poll_interval_s = 10
        offline.tiktok_publish_timeout_s = 60
        fake.processing_polls = 100

        async def tick(seconds: float) -> None:
            clock.advance(seconds=seconds)

        connector = TikTokConnector(ctx, sleep=tick)
        config = account(fake, clock, expires_at=(clock.now() + timedelta(days=9)).isoformat())
        with pytest.raises(Transient, match="still processing"):
            await connector.publish(request_for(config, small), jobs)
        assert fake.calls("/v2/post/publish/status/fetch/") == 7
        fake.processing_polls = 0
        again = request_for(config, small, job=jobs.job, attempt=2)
        assert (await connector.publish(again, jobs)).remote_id == str(fake.posts[0]["post_id"])
        assert fake.calls("/v2/post/publish/video/init/") == 1 and len(fake.posts) == 1

    async def test_private_post_without_an_id_links_the_profile(
        self, connector, fake, clock, jobs, small
    ):
        result = await connector.publish(
            request_for(account(fake, clock), small, options={"privacy_level": "SELF_ONLY"}), jobs
        )
        assert result == PublishResult(None, "https://www.tiktok.com/@sunny.creator")
        assert fake.posts[0]["post_info"]["privacy_level"] == "SELF_ONLY"

    async def test_interactions_the_creator_turned_off_stay_off(
        self, connector, fake, clock, jobs, small
    ):
        fake.creator("open-1", comment_disabled=True, stitch_disabled=True)
        options = {"privacy": "friends", "disable_duet": True, "video_cover_timestamp_ms": 1500}
        await connector.publish(request_for(account(fake, clock), small, options=options), jobs)
        info = fake.posts[0]["post_info"]
        assert (info["disable_comment"], info["disable_duet"], info["disable_stitch"]) == (
            True,
            True,
            True,
        )
        assert info["privacy_level"] == "MUTUAL_FOLLOW_FRIENDS"
        assert info["video_cover_timestamp_ms"] == 1500

    @pytest.mark.parametrize(
        ("options", "match"),
        [
            ({"privacy_level": "EVERYONE"}, r"options\.tiktok\.privacy_level"),
            ({"privacy": "public", "disable_comment": "yes"}, r"options\.tiktok\.disable_comment"),
            ({"privacy": "public", "duet": False}, r"options\.tiktok\.duet"),
            ({"privacy": "public", "video_cover_timestamp_ms": -1}, "video_cover_timestamp_ms"),
            ({"privacy": "public", "privacy_level": "SELF_ONLY"}, "disagree"),
            ({"privacy": "private", "brand_content_toggle": True}, "branded content"),
            ({"privacy_level": "FOLLOWER_OF_CREATOR"}, "does not offer privacy"),
            ({}, "choose who can see the video"),
            ({"privacy": "public", "video_cover_timestamp_ms": 60_000}, "past the end"),
        ],
    )
    async def test_bad_options_are_refused_before_posting(
        self, connector, fake, clock, jobs, small, options, match
    ):
        with pytest.raises(Permanent, match=match) as caught:
            await connector.publish(request_for(account(fake, clock), small, options=options), jobs)
        assert caught.value.reason == "platform_error"
        assert fake.calls("/v2/post/publish/video/init/") == 0 and not fake.posts

    async def test_privacy_defaults_to_the_setting_or_the_only_choice(
        self, connector, fake, clock, jobs, small, offline
    ):
        offline.tiktok_default_privacy_level = "SELF_ONLY"
        await connector.publish(request_for(account(fake, clock), small, options={}), jobs)
        offline.tiktok_default_privacy_level = None
        fake.creator("open-1", privacy_level_options=["FOLLOWER_OF_CREATOR"])
        await connector.publish(request_for(account(fake, clock), small, options={}), jobs)
        assert [p["post_info"]["privacy_level"] for p in fake.posts] == [
            "SELF_ONLY",
            "FOLLOWER_OF_CREATOR",
        ]

    async def test_video_longer_than_the_creator_may_post_is_media_rejected(
        self, connector, fake, clock, jobs, tmp_path
    ):
        fake.creator("open-1", max_video_post_duration_sec=180)
        media = file_media(video_file(tmp_path / "long.mp4", 1000), duration_s=181.5)
        with pytest.raises(Permanent, match="up to 180 s") as caught:
            await connector.publish(request_for(account(fake, clock), media), jobs)
        assert caught.value.reason == "media_rejected" and not fake.publishes

    async def test_caption_over_2200_utf16_units_is_refused(
        self, connector, fake, clock, jobs, small
    ):
        caption = "😀" * 1101  # 1101 characters, 2202 UTF-16 units
        with pytest.raises(Permanent, match="2202"):
            await connector.publish(request_for(account(fake, clock), small, caption=caption), jobs)

    async def test_a_format_tiktok_does_not_take_is_media_rejected(
        self, connector, fake, clock, jobs, tmp_path
    ):
        media = file_media(video_file(tmp_path / "v.mkv", 1000), content_type="video/x-matroska")
        with pytest.raises(Permanent) as caught:
            await connector.publish(request_for(account(fake, clock), media), jobs)
        assert caught.value.reason == "media_rejected"


class TestTokens:
    async def test_token_about_to_expire_is_refreshed_first_and_saved(
        self, connector, fake, clock, jobs, small
    ):
        config = account(fake, clock, expires_at=(clock.now() + timedelta(minutes=2)).isoformat())
        config["note"] = "kept"
        await connector.publish(request_for(config, small), jobs)
        (saved,) = jobs.configs
        assert saved["access_token"] != config["access_token"]
        assert saved["refresh_token"] != config["refresh_token"]
        assert config["refresh_token"] not in fake.refresh  # rotated: the old one is dead
        assert (saved["open_id"], saved["note"]) == ("open-1", "kept")
        assert datetime.fromisoformat(saved["expires_at"]) == clock.now() + timedelta(
            seconds=fake.expires_in
        )
        assert len(fake.posts) == 1

    async def test_an_invalid_token_is_refreshed_once_and_the_call_repeated(
        self, connector, fake, clock, jobs, small
    ):
        config = account(fake, clock)
        fake.revoke(config["access_token"])
        await connector.publish(request_for(config, small), jobs)
        assert len(jobs.configs) == 1 and len(fake.posts) == 1
        assert fake.calls("/v2/oauth/token/") == 1

    async def test_refused_refresh_is_auth_expired(self, connector, fake, clock, jobs, small):
        config = account(fake, clock)
        fake.revoke(config["access_token"])
        fake.revoke(config["refresh_token"])
        with pytest.raises(AuthExpired, match="reconnect"):
            await connector.publish(request_for(config, small), jobs)
        assert not jobs.configs and not fake.posts

    async def test_a_token_still_refused_after_refreshing_is_auth_expired(
        self, connector, fake, clock, jobs, small
    ):
        fake.fail("creator_info", 401, "access_token_invalid", times=2)
        with pytest.raises(AuthExpired):
            await connector.publish(request_for(account(fake, clock), small), jobs)
        assert fake.calls("/v2/oauth/token/") == 1 and not fake.posts

    async def test_missing_posting_scope_is_auth_expired_without_refreshing(
        self, connector, fake, clock, jobs, small
    ):
        access, refresh = fake.grant("open-1", scopes="user.info.basic")
        config = account(fake, clock, access_token=access, refresh_token=refresh)
        with pytest.raises(AuthExpired, match=r"video\.publish"):
            await connector.publish(request_for(config, small), jobs)
        assert fake.calls("/v2/oauth/token/") == 0


class TestErrors:
    @pytest.mark.parametrize(
        ("endpoint", "status", "code", "error", "reason"),
        [
            ("init", 403, "spam_risk_too_many_posts", DailyLimitReached, None),
            ("init", 403, "reached_active_user_cap", DailyLimitReached, None),
            # creator_info may answer 200 with a non-ok code: the code decides.
            ("creator_info", 200, "spam_risk_too_many_posts", DailyLimitReached, None),
            ("init", 429, "rate_limit_exceeded", RateLimited, None),
            ("creator_info", 429, "rate_limit_exceeded", RateLimited, None),
            ("init", 403, "spam_risk_user_banned_from_posting", Permanent, "platform_error"),
            ("init", 403, "privacy_level_option_mismatch", Permanent, "platform_error"),
            ("init", 400, "invalid_param", Permanent, "platform_error"),
            ("init", 400, "invalid_file_upload", Permanent, "media_rejected"),
            ("init", 401, "scope_not_authorized", AuthExpired, None),
            ("init", 500, "internal_error", Transient, None),
            ("init", 502, None, Transient, None),
            ("status", 503, None, Transient, None),
        ],
    )
    async def test_error_codes_map_to_the_connector_errors(
        self, connector, fake, clock, jobs, small, endpoint, status, code, error, reason
    ):
        fake.fail(endpoint, status, code)
        with pytest.raises(error) as caught:
            await connector.publish(request_for(account(fake, clock), small), jobs)
        assert type(caught.value) is error or error is AuthExpired
        if reason is not None:
            assert caught.value.reason == reason
        if endpoint != "status":
            assert not fake.posts

    async def test_unaudited_app_posting_publicly_explains_the_audit(
        self, connector, fake, clock, jobs, small
    ):
        fake.audited = False
        with pytest.raises(Permanent, match="audit") as caught:
            await connector.publish(request_for(account(fake, clock), small), jobs)
        assert "SELF_ONLY" in caught.value.detail and not fake.posts
        private = request_for(account(fake, clock), small, options={"privacy": "private"})
        await connector.publish(private, jobs)
        assert len(fake.posts) == 1

    @pytest.mark.parametrize(
        ("fail_reason", "error", "reason"),
        [
            ("file_format_check_failed", Permanent, "media_rejected"),
            ("frame_rate_check_failed", Permanent, "media_rejected"),
            ("picture_size_check_failed", Permanent, "media_rejected"),
            ("duration_check_failed", Permanent, "media_rejected"),
            ("spam_risk_too_many_posts", DailyLimitReached, None),
            ("internal", Transient, None),
            ("auth_removed", AuthExpired, None),
        ],
    )
    async def test_failed_publish_maps_its_fail_reason(
        self, connector, fake, clock, jobs, small, fail_reason, error, reason
    ):
        fake.next_fail_reason = fail_reason
        with pytest.raises(error) as caught:
            await connector.publish(request_for(account(fake, clock), small), jobs)
        assert type(caught.value) is error
        if reason:
            assert caught.value.reason == reason
        assert not fake.posts

    async def test_after_a_retryable_failure_the_next_attempt_posts_afresh(
        self, connector, fake, clock, jobs, small
    ):
        config = account(fake, clock)
        fake.next_fail_reason = "internal"
        with pytest.raises(Transient):
            await connector.publish(request_for(config, small), jobs)
        await connector.publish(request_for(config, small, job=jobs.job, attempt=2), jobs)
        assert len(fake.posts) == 1 and len(fake.publishes) == 2

    async def test_chunk_failing_every_time_is_transient_and_the_retry_starts_over(
        self, connector, fake, clock, jobs, small
    ):
        config = account(fake, clock)
        fake.fail("chunk", 500, chunk=0, times=3)
        with pytest.raises(Transient, match="chunk 1 of 1"):
            await connector.publish(request_for(config, small), jobs)
        assert not fake.posts
        # TikTok never got every byte of that one, so a fresh post is safe.
        await connector.publish(request_for(config, small, job=jobs.job, attempt=2), jobs)
        assert len(fake.posts) == 1 and len(fake.publishes) == 2

    async def test_unreachable_tiktok_is_transient(
        self, connector, offline, fake, clock, jobs, small
    ):
        config = account(fake, clock)
        offline.tiktok_api_base = "http://127.0.0.1:9"
        with pytest.raises(Transient, match="could not reach TikTok"):
            await connector.publish(request_for(config, small), jobs)


class TestReconcile:
    async def test_nothing_saved_means_nothing_posted(self, connector, fake, clock, small):
        assert await connector.reconcile(request_for(account(fake, clock), small)) is None

    async def test_crash_after_the_upload_finds_the_post_and_never_posts_twice(
        self, connector, fake, clock, jobs, small
    ):
        config = account(fake, clock)
        fake.fail("status", 503, times=1)  # the worker "dies" right after the last chunk
        with pytest.raises(Transient):
            await connector.publish(request_for(config, small), jobs)
        assert len(fake.posts) == 1
        recovering = request_for(config, small, job=jobs.job)
        found = await connector.reconcile(recovering)
        post_id = str(fake.posts[0]["post_id"])
        assert found == PublishResult(
            post_id, f"https://www.tiktok.com/@sunny.creator/video/{post_id}"
        )
        # A later attempt (not a recovery) asks about the same publish id too.
        assert (await connector.publish(recovering, jobs)).remote_id == post_id
        assert len(fake.posts) == 1 and fake.calls("/v2/post/publish/video/init/") == 1

    async def test_still_processing_is_polled_to_the_end(self, connector, fake, clock, jobs, small):
        config = account(fake, clock)
        fake.fail("status", 503, times=1)
        with pytest.raises(Transient):
            await connector.publish(request_for(config, small), jobs)
        fake.processing_polls = 3
        found = await connector.reconcile(request_for(config, small, job=jobs.job))
        assert isinstance(found, PublishResult) and found.remote_id

    async def test_crash_mid_upload_is_not_posted_and_posts_once_afterwards(
        self, connector, fake, clock, jobs, small
    ):
        config = account(fake, clock)
        fake.fail("chunk", 500, times=3)
        with pytest.raises(Transient):
            await connector.publish(request_for(config, small), jobs)
        recovering = request_for(config, small, job=jobs.job)
        assert await connector.reconcile(recovering) is None
        await connector.publish(recovering, jobs)
        assert len(fake.posts) == 1

    async def test_failed_publish_is_not_a_post(self, connector, fake, clock, jobs, small):
        config = account(fake, clock)
        fake.next_fail_reason = "internal"
        with pytest.raises(Transient):
            await connector.publish(request_for(config, small), jobs)
        assert await connector.reconcile(request_for(config, small, job=jobs.job)) is None

    async def test_a_publish_tiktok_does_not_know_is_unknown_and_never_reposted(
        self, connector, fake, clock, jobs, small
    ):
        config = account(fake, clock)
        job = {"publish_id": "v_pub_file~v2-1.999", "username": "sunny.creator"}
        recovering = request_for(config, small, job=job)
        assert await connector.reconcile(recovering) == UNKNOWN
        with pytest.raises(Permanent, match="may have been posted"):
            await connector.publish(recovering, jobs)
        assert fake.calls("/v2/post/publish/video/init/") == 0

    async def test_expiring_token_leaves_it_to_publish_which_refreshes_and_resumes(
        self, connector, fake, clock, jobs, small
    ):
        config = account(fake, clock)
        fake.fail("status", 503, times=1)
        with pytest.raises(Transient):
            await connector.publish(request_for(config, small), jobs)
        clock.advance(hours=20)  # the access token now expires within minutes
        recovering = request_for(config, small, job=jobs.job)
        assert await connector.reconcile(recovering) is None
        assert fake.calls("/v2/oauth/token/") == 0  # nowhere to save a rotated token
        assert (await connector.publish(recovering, jobs)).remote_id
        assert len(jobs.configs) == 1 and len(fake.posts) == 1


class TestChunkPlan:
    @pytest.mark.parametrize(
        ("size", "preferred", "expected"),
        [
            (1, 10_000_000, (1, 1)),
            (MIN_CHUNK - 1, 10_000_000, (MIN_CHUNK - 1, 1)),
            (25_000_000, 10_000_000, (10_000_000, 2)),  # the last chunk takes 15 MB
            (15_000_000, 10_000_000, (15_000_000, 1)),
            (64_000_000, MAX_CHUNK, (64_000_000, 1)),
            (64_000_001, MAX_CHUNK, (32_000_000, 2)),
            (100_000_000, 1, (MIN_CHUNK, 19)),  # preferences are held to the rules
            (MAX_VIDEO_SIZE, 10_000_000, (10_000_000, 429)),
        ],
    )
    def test_examples(self, size, preferred, expected):
        plan = plan_chunks(size, preferred)
        assert (plan.chunk_size, plan.total_chunk_count) == expected
        assert check_source_info(size, *expected) is None

    @hsettings(max_examples=400, deadline=None)
    @given(
        size=st.integers(1, MAX_VIDEO_SIZE),
        preferred=st.integers(MIN_CHUNK, MAX_CHUNK),
    )
    def test_every_plan_is_one_the_fake_accepts(self, size, preferred):
        plan = plan_chunks(size, preferred)
        assert check_source_info(size, plan.chunk_size, plan.total_chunk_count) is None
        ranges = plan.ranges()
        assert ranges[0][0] == 0 and ranges[-1][1] == size - 1
        assert all(b[0] == a[1] + 1 for a, b in itertools.pairwise(ranges))

    @pytest.mark.parametrize(
        ("size", "chunk", "count"),
        [
            (20_000_000, 4_000_000, 5),  # chunks under 5 MB
            (70_000_000, 70_000_000, 1),  # over 64 MB in one piece
            (30_000_000, 10_000_000, 2),  # count is not floor(size / chunk)
            (4_000_000, 2_000_000, 2),  # under 5 MB must go whole
            (300_000_000, 100_000_000, 3),  # chunks over 64 MB
        ],
    )
    async def test_the_fake_refuses_plans_against_the_rules(self, fake, http, size, chunk, count):
        access, _ = fake.grant("open-1")
        r = await http.post(
            f"{fake.url}/v2/post/publish/video/init/",
            json={
                "post_info": {"title": "x", "privacy_level": "SELF_ONLY"},
                "source_info": {
                    "source": "FILE_UPLOAD",
                    "video_size": size,
                    "chunk_size": chunk,
                    "total_chunk_count": count,
                },
            },
            headers={"Authorization": f"Bearer {access}"},
        )
        assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_param"


class TestFakeUploadRules:
    async def test_chunks_out_of_order_wrong_size_or_without_headers_are_refused(self, fake, http):
        access, _ = fake.grant("open-1")
        size = 2 * MIN_CHUNK + 10
        r = await http.post(
            f"{fake.url}/v2/post/publish/video/init/",
            json={
                "post_info": {"title": "x", "privacy_level": "SELF_ONLY"},
                "source_info": {
                    "source": "FILE_UPLOAD",
                    "video_size": size,
                    "chunk_size": MIN_CHUNK,
                    "total_chunk_count": 2,
                },
            },
            headers={"Authorization": f"Bearer {access}"},
        )
        url = r.json()["data"]["upload_url"]
        first = b"\0" * MIN_CHUNK

        async def put(body: bytes, content_range: str, ctype: str = "video/mp4") -> int:
            res = await http.put(
                url, content=body, headers={"Content-Type": ctype, "Content-Range": content_range}
            )
            return res.status_code

        assert await put(b"\0" * (MIN_CHUNK + 10), f"bytes {MIN_CHUNK}-{size - 1}/{size}") == 416
        assert await put(first[:-1], f"bytes 0-{MIN_CHUNK - 2}/{size}") == 400
        assert await put(first, f"bytes 0-{MIN_CHUNK - 1}/{size}", "video/avi") == 400
        assert await put(first, f"bytes 0-{MIN_CHUNK - 1}/{size + 1}") == 400

        async def streamed() -> AsyncIterator[bytes]:
            yield first

        res = await http.put(
            url,
            content=streamed(),
            headers={
                "Content-Type": "video/mp4",
                "Content-Range": f"bytes 0-{MIN_CHUNK - 1}/{size}",
            },
        )
        assert res.status_code == 400  # chunked transfer: no Content-Length
        assert await put(first, f"bytes 0-{MIN_CHUNK - 1}/{size}") == 206
        assert await put(b"\0" * (MIN_CHUNK + 10), f"bytes {MIN_CHUNK}-{size - 1}/{size}") == 201
        assert len(fake.posts) == 1


# -- through the engine ----------------------------------------------------------------------

NINE = datetime(2026, 3, 3, 9, 0, tzinfo=UTC)  # the day after conftest's START


class TestThroughTheEngine:
    @pytest.fixture
    async def posting(self, app, client, tenant, settings, clock, fake, platform_mp4):  # type: ignore[no-untyped-def]
        """A TikTok account in an active pool with a 09:00 UTC slot and one queued video."""
        point_tiktok(settings, fake)
        settings.tiktok_default_privacy_level = "PUBLIC_TO_EVERYONE"
        config = account(fake, clock)
        box = SecretBox(settings.secret())
        async with app.state.uploadpools.maker() as s:
            acc = Account(
                workspace_id=tenant.workspace_id,
                platform="tiktok",
                name="Sunny Creator",
                status="connected",
                credentials=box.encrypt(config),
                created_at=clock.now(),
                updated_at=clock.now(),
            )
            s.add(acc)
            await s.commit()
        pool = await make_pool(client, tenant, acc.id, timezone="UTC", state="active")
        with platform_mp4.open("rb") as f:
            r = await client.post(
                f"/api/v1/pools/{pool['id']}/videos",
                files={"file": ("v.mp4", f, "video/mp4")},
                data={"title": "Sunrise"},
                headers=tenant.headers,
            )
        assert r.status_code == 201, r.text
        return {"pool": pool["id"], "item": r.json()["id"], "account": acc.id, "config": config}

    async def item(self, client, tenant, posting):  # type: ignore[no-untyped-def]
        r = await client.get(
            f"/api/v1/pools/{posting['pool']}/videos/{posting['item']}", headers=tenant.headers
        )
        return r.json()

    async def notes(self, client, tenant):  # type: ignore[no-untyped-def]
        r = await client.get("/api/v1/notifications", headers=tenant.headers)
        return r.json()["items"]

    async def test_posts_at_slot_time_and_saves_rotated_tokens(
        self, app, client, tenant, engine, clock, fake, posting, settings
    ):
        clock.set(NINE)  # the stored token (20 h from START) now expires within minutes
        await engine.run()
        got = await self.item(client, tenant, posting)
        (d,) = got["deliveries"]
        post_id = str(fake.posts[0]["post_id"])
        assert (got["status"], d["status"], d["remote_id"]) == ("dispatched", "posted", post_id)
        assert d["remote_url"] == f"https://www.tiktok.com/@sunny.creator/video/{post_id}"
        async with app.state.uploadpools.maker() as s:
            acc = await s.get(Account, posting["account"])
            stored = SecretBox(settings.secret()).decrypt(acc.credentials)
        assert stored["refresh_token"] in fake.refresh
        assert stored["refresh_token"] != posting["config"]["refresh_token"]

    async def test_tiktok_daily_cap_skips_with_a_warning(
        self, client, tenant, engine, clock, fake, posting
    ):
        fake.fail("init", 403, "spam_risk_too_many_posts")
        clock.set(NINE)
        await engine.run()
        got = await self.item(client, tenant, posting)
        assert got["status"] == "skipped"
        assert got["deliveries"][0]["reason"] == "platform_daily_limit"
        (n,) = await self.notes(client, tenant)
        assert n["level"] == "warning" and n["item_id"] == posting["item"]
        assert not fake.posts

    async def test_refused_refresh_marks_the_account_needs_reauth(
        self, client, tenant, engine, clock, fake, posting
    ):
        fake.revoke(posting["config"]["access_token"])
        fake.revoke(posting["config"]["refresh_token"])
        clock.set(NINE)
        await engine.run()
        got = await self.item(client, tenant, posting)
        assert got["deliveries"][0]["reason"] == "auth_expired"
        r = await client.get(f"/api/v1/accounts/{posting['account']}", headers=tenant.headers)
        assert r.json()["status"] == "needs_reauth"
        assert "account.needs_reauth" in [n["kind"] for n in await self.notes(client, tenant)]
