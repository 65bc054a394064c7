"""The YouTube connector against the fake Google on 127.0.0.1: resumable upload, resume
after a crash or timeout, token refresh, error mapping, and the engine around it."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from connectorhelpers import media_ref, offline_settings_for, publish_request
from fakes.youtube import QUANTUM, FakeGoogle, fake_google
from media_samples import make_mp4
from uploadpools.connectors.base import (
    AuthExpired,
    ConnectorContext,
    DailyLimitReached,
    Permanent,
    PublishResult,
    RateLimited,
    Transient,
)
from uploadpools.connectors.oauth_session import tokens_from_config
from uploadpools.connectors.youtube.connector import YouTubeConnector, video_resource
from uploadpools.kit.clock import FrozenClock
from uploadpools.kit.crypto import SecretBox
from uploadpools.models import Account, Delivery

DATA = bytes(range(256)) * (QUANTUM * 2 // 256) + b"tail" * 1000  # 2 full chunks + 4000 bytes


class Crash(Exception):
    """The worker died here."""


def ranged(data: bytes, *, die_at: int | None = None):  # type: ignore[no-untyped-def]
    """A MediaRef opener honouring start/end, optionally dying when asked for `die_at`."""

    async def gen(*, start: int = 0, end: int | None = None, **_: Any) -> AsyncIterator[bytes]:
        if die_at is not None and start >= die_at:
            raise Crash
        part = data[start:end]
        for i in range(0, len(part), 64 * 1024):
            yield part[i : i + 64 * 1024]

    return gen


class Jobs:
    def __init__(self, fake: FakeGoogle | None = None) -> None:
        self.fake = fake
        self.saved: list[dict[str, Any]] = []
        self.configs: list[dict[str, Any]] = []
        self.puts_before_save: int | None = None
        self.stored: dict[str, Any] | None = None

    async def save(self, job: dict[str, Any]) -> None:
        if self.fake is not None and self.puts_before_save is None:
            self.puts_before_save = sum(e.startswith("PUT") for e in self.fake.log)
        self.saved.append(dict(job))

    async def save_config(self, config: dict[str, Any]) -> None:
        self.configs.append(dict(config))

    async def load_config(self) -> dict[str, Any]:
        assert self.stored is not None, "only a refused refresh re-reads the config"
        return dict(self.stored)


@pytest.fixture
def google(tmp_path: Path) -> Iterator[FakeGoogle]:
    with fake_google() as fake:
        yield fake


@pytest.fixture
def clock() -> FrozenClock:
    from conftest import START as T0

    return FrozenClock(T0)


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(trust_env=False, timeout=5) as c:
        yield c


@pytest.fixture
def yt(google: FakeGoogle, http: httpx.AsyncClient, tmp_path: Path, clock) -> YouTubeConnector:  # type: ignore[no-untyped-def]
    settings = offline_settings_for(tmp_path)
    google.configure(settings)
    return YouTubeConnector(ConnectorContext(http, settings, clock))


def config_for(
    google: FakeGoogle, clock: FrozenClock, expires_in_s: float = 3600
) -> dict[str, Any]:
    return {
        **google.grant(),
        "expires_at": (clock.now() + timedelta(seconds=expires_in_s)).isoformat(),
        "remote_id": google.channel_id,
    }


def request_for(google, clock, data: bytes = DATA, **over):  # type: ignore[no-untyped-def]
    fields = {
        "config": config_for(google, clock),
        "media": media_ref(data, opener=ranged(data)),
        "options": {"privacy": "unlisted", "tags": ["sunrise", "morning light"], "categoryId": 15},
    }
    fields.update(over)
    return publish_request(**fields)


def puts(google: FakeGoogle) -> list[str]:
    return [e for e in google.log if e.startswith("PUT")]


class TestPublish:
    async def test_resumable_upload_in_256k_chunks_after_saving_the_session(
        self, yt, google, clock
    ):
        jobs = Jobs(google)
        result = await yt.publish(request_for(google, clock), jobs)
        assert result == PublishResult("vid0001", "https://www.youtube.com/shorts/vid0001")
        (video,) = google.videos.values()
        assert video["sha256"] == hashlib.sha256(DATA).hexdigest()
        assert video["snippet"]["title"] == "Sunrise"
        assert video["snippet"]["description"] == "Morning light #sunrise"
        assert video["snippet"]["tags"] == ["sunrise", "morning light"]
        assert video["snippet"]["categoryId"] == "15"
        assert video["status"]["privacyStatus"] == "unlisted"
        assert video["status"]["selfDeclaredMadeForKids"] is False
        total = len(DATA)
        assert puts(google) == [
            f"PUT bytes 0-{QUANTUM - 1}/{total}",
            f"PUT bytes {QUANTUM}-{2 * QUANTUM - 1}/{total}",
            f"PUT bytes {2 * QUANTUM}-{total - 1}/{total}",
        ]
        (saved,) = jobs.saved
        assert saved["upload_url"].startswith(google.base + "/upload/youtube/v3/videos?")
        assert jobs.puts_before_save == 0  # the session URI was saved before any byte went
        assert jobs.configs == []  # a fresh token is not refreshed

    async def test_crash_mid_upload_resumes_the_same_session_and_posts_once(
        self, yt, google, clock
    ):
        jobs = Jobs(google)
        dying = request_for(
            google, clock, media=media_ref(DATA, opener=ranged(DATA, die_at=QUANTUM))
        )
        with pytest.raises(Crash):
            await yt.publish(dying, jobs)
        assert google.videos == {}
        after = request_for(google, clock, config=dying.config, job=jobs.saved[-1])
        # The status query proves no video exists yet (308): safe to resume.
        assert await yt.reconcile(after) is None
        before = len(puts(google))
        result = await yt.publish(after, jobs)
        assert result.remote_id == "vid0001" and len(google.videos) == 1
        assert len(google.sessions) == 1
        total = len(DATA)
        assert puts(google)[before:] == [
            "PUT status",
            f"PUT bytes {QUANTUM}-{2 * QUANTUM - 1}/{total}",
            f"PUT bytes {2 * QUANTUM}-{total - 1}/{total}",
        ]
        assert google.videos["vid0001"]["sha256"] == hashlib.sha256(DATA).hexdigest()

    async def test_timeout_after_the_last_byte_is_reconciled_to_the_one_video(
        self, google, clock, tmp_path
    ):
        settings = offline_settings_for(tmp_path)
        google.configure(settings)
        google.inject("chunk", 201, skip=2, hang=True)  # stores the last chunk, never answers
        async with httpx.AsyncClient(trust_env=False, timeout=0.5) as http:
            yt = YouTubeConnector(ConnectorContext(http, settings, clock))
            jobs = Jobs(google)
            req = request_for(google, clock)
            with pytest.raises(Transient):
                await yt.publish(req, jobs)
            google.release.set()
            found = await yt.reconcile(
                request_for(google, clock, config=req.config, job=jobs.saved[-1])
            )
        assert found == PublishResult("vid0001", "https://www.youtube.com/shorts/vid0001")
        assert len(google.videos) == 1

    async def test_a_5xx_chunk_is_transient_and_the_retry_resumes(self, yt, google, clock):
        google.inject("chunk", 503, "backendError", skip=1)
        jobs = Jobs(google)
        req = request_for(google, clock)
        with pytest.raises(Transient) as exc:
            await yt.publish(req, jobs)
        assert not isinstance(exc.value, RateLimited)
        retry = request_for(google, clock, config=req.config, job=jobs.saved[-1])
        assert (await yt.publish(retry, jobs)).remote_id == "vid0001"
        assert len(google.videos) == 1 and len(google.sessions) == 1

    async def test_an_expired_session_starts_a_new_one(self, yt, google, clock):
        jobs = Jobs(google)
        dying = request_for(
            google, clock, media=media_ref(DATA, opener=ranged(DATA, die_at=QUANTUM))
        )
        with pytest.raises(Crash):
            await yt.publish(dying, jobs)
        for s in google.sessions.values():
            s.expired = True
        after = request_for(google, clock, config=dying.config, job=jobs.saved[-1])
        assert await yt.reconcile(after) is None  # 404: no video was created
        assert (await yt.publish(after, jobs)).remote_id == "vid0001"
        assert len(google.videos) == 1 and len(jobs.saved) == 2

    def test_metadata_is_cut_to_youtube_limits(self):
        req = publish_request(
            {}, title="", caption="<b>" + "x" * 200 + "\nmore", options={"madeForKids": True}
        )
        res = video_resource(req)
        assert len(res["snippet"]["title"]) == 100 and "<" not in res["snippet"]["title"]
        assert res["status"] == {"privacyStatus": "public", "selfDeclaredMadeForKids": True}
        with pytest.raises(Permanent):
            video_resource(publish_request({}, options={"privacy": "friends"}))


class TestErrors:
    @pytest.mark.parametrize(
        ("kind", "status", "reason", "expected", "not_expected"),
        [
            ("start", 403, "quotaExceeded", DailyLimitReached, None),
            ("start", 403, "dailyLimitExceeded", DailyLimitReached, None),
            ("start", 400, "uploadLimitExceeded", DailyLimitReached, None),
            ("start", 403, "uploadLimitExceeded", DailyLimitReached, None),
            ("start", 403, "rateLimitExceeded", RateLimited, DailyLimitReached),
            ("start", 403, "userRateLimitExceeded", RateLimited, DailyLimitReached),
            ("start", 429, "rateLimitExceeded", RateLimited, DailyLimitReached),
            ("start", 500, "backendError", Transient, RateLimited),
            ("chunk", 503, "backendError", Transient, RateLimited),
            ("start", 400, "invalidVideoMetadata", Permanent, None),
            ("start", 403, "forbidden", Permanent, None),
            ("start", 401, "youtubeSignupRequired", Permanent, None),
        ],
    )
    async def test_google_reasons_map_to_the_error_tree(
        self, yt, google, clock, kind, status, reason, expected, not_expected
    ):
        google.inject(kind, status, reason)
        with pytest.raises(expected) as exc:
            await yt.publish(request_for(google, clock), Jobs())
        if not_expected is not None:
            assert not isinstance(exc.value, not_expected)
        assert reason in exc.value.detail
        assert google.videos == {}

    async def test_bad_metadata_is_media_rejected(self, yt, google, clock):
        google.inject("start", 400, "invalidVideoMetadata")
        with pytest.raises(Permanent) as exc:
            await yt.publish(request_for(google, clock), Jobs())
        assert exc.value.reason == "media_rejected"

    async def test_a_401_refreshes_once_and_replays(self, yt, google, clock):
        req = request_for(google, clock)
        google.expire_access_tokens()  # Google forgot the token although it is not due
        jobs = Jobs()
        assert (await yt.publish(req, jobs)).remote_id == "vid0001"
        assert google.refreshes == 1
        (config,) = jobs.configs
        assert config["access_token"] != req.config["access_token"]
        assert config["access_token"] in google.access_tokens
        assert config["refresh_token"] == req.config["refresh_token"]  # Google does not rotate

    async def test_a_401_after_refreshing_is_auth_expired(self, yt, google, clock):
        google.inject("start", 401, "authError", times=2)
        with pytest.raises(AuthExpired):
            await yt.publish(request_for(google, clock), Jobs())
        assert google.refreshes == 1


class TestRefresh:
    async def test_a_token_expiring_soon_is_refreshed_first_and_a_rotated_one_saved(
        self, yt, google, clock
    ):
        google.rotate_refresh_tokens = True
        req = request_for(google, clock, config=config_for(google, clock, expires_in_s=60))
        jobs = Jobs()
        assert (await yt.publish(req, jobs)).remote_id == "vid0001"
        assert google.refreshes == 1
        (config,) = jobs.configs
        assert config["refresh_token"] != req.config["refresh_token"]
        assert config["refresh_token"] in google.refresh_tokens
        assert req.config["refresh_token"] not in google.refresh_tokens
        tokens = tokens_from_config(config)
        assert tokens.expires_at == clock.now() + timedelta(seconds=3599)
        assert config["remote_id"] == google.channel_id  # the rest of the config is kept

    async def test_a_refresh_token_rotated_by_another_worker_is_picked_up(
        self, yt, google, clock, http
    ):
        google.rotate_refresh_tokens = True
        req = request_for(google, clock, config=config_for(google, clock, expires_in_s=-10))
        # Another worker refreshed first: the stored config moved on, ours is stale.
        r = await http.post(
            f"{google.base}/token",
            data={
                "grant_type": "refresh_token",
                "refresh_token": req.config["refresh_token"],
                "client_id": yt.settings.youtube_client_id,
                "client_secret": yt.settings.youtube_client_secret.get_secret_value(),
            },
        )
        jobs = Jobs()
        jobs.stored = {
            **req.config,
            **r.json(),
            "expires_at": (clock.now() + timedelta(hours=1)).isoformat(),
        }
        assert (await yt.publish(req, jobs)).remote_id == "vid0001"
        assert google.refreshes == 2  # theirs, and our refused one
        assert jobs.configs == []

    async def test_a_refused_refresh_is_auth_expired(self, yt, google, clock):
        req = request_for(google, clock, config=config_for(google, clock, expires_in_s=-10))
        google.revoke_refresh_tokens()
        jobs = Jobs()
        jobs.stored = dict(req.config)  # nobody else refreshed either
        with pytest.raises(AuthExpired) as exc:
            await yt.publish(req, jobs)
        assert "invalid_grant" in exc.value.detail
        assert google.log.count("POST /upload/youtube/v3/videos") == 0


# -- through the engine --------------------------------------------------------------------


@pytest.fixture(scope="module")
def vertical_mp4(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_mp4(tmp_path_factory.mktemp("yt") / "v.mp4", seconds=1.0, width=96, height=160)


async def youtube_account(app, tenant, google, clock, settings, **config_over) -> str:  # type: ignore[no-untyped-def]
    config = {**config_for(google, clock), **config_over}
    async with app.state.uploadpools.maker() as s:
        acc = Account(
            workspace_id=tenant.workspace_id,
            platform="youtube",
            name="My channel",
            status="connected",
            remote_id=google.channel_id,
            credentials=SecretBox(settings.secret()).encrypt(config),
            created_at=clock.now(),
            updated_at=clock.now(),
        )
        s.add(acc)
        await s.commit()
        return acc.id


async def queue_one(client, tenant, account_id, mp4: Path) -> tuple[dict, str]:  # type: ignore[no-untyped-def]
    from apihelpers import make_pool

    pool = await make_pool(client, tenant, account_id, timezone="UTC", state="active")
    with mp4.open("rb") as f:
        r = await client.post(
            f"/api/v1/pools/{pool['id']}/videos",
            files={"file": ("v.mp4", f, "video/mp4")},
            data={"title": "Hello", "options": '{"youtube": {"privacy": "private"}}'},
            headers=tenant.headers,
        )
    assert r.status_code == 201, r.text
    return pool, r.json()["id"]


async def get_item(client, tenant, pool_id, item_id):  # type: ignore[no-untyped-def]
    return (
        await client.get(f"/api/v1/pools/{pool_id}/videos/{item_id}", headers=tenant.headers)
    ).json()


class TestEngine:
    async def test_a_slot_posts_to_youtube(
        self, client, tenant, engine, clock, app, settings, google_app, vertical_mp4
    ):
        acc = await youtube_account(app, tenant, google_app, clock, settings)
        pool, item_id = await queue_one(client, tenant, acc, vertical_mp4)
        clock.advance(timedelta(hours=21))  # the next 09:00 UTC
        await engine.run()
        got = await get_item(client, tenant, pool["id"], item_id)
        (d,) = got["deliveries"]
        assert (got["status"], d["status"], d["remote_url"]) == (
            "dispatched",
            "posted",
            "https://www.youtube.com/shorts/vid0001",
        )
        (video,) = google_app.videos.values()
        assert video["status"]["privacyStatus"] == "private"
        assert video["size"] == vertical_mp4.stat().st_size

    @pytest.mark.parametrize(
        ("status", "reason", "skip"),
        [
            (403, "rateLimitExceeded", "platform_rate_limited"),
            (403, "quotaExceeded", "platform_daily_limit"),
        ],
    )
    async def test_a_refusal_for_limits_skips_with_a_warning(
        self,
        client,
        tenant,
        engine,
        clock,
        app,
        settings,
        google_app,
        vertical_mp4,
        status,
        reason,
        skip,
    ):
        acc = await youtube_account(app, tenant, google_app, clock, settings)
        pool, item_id = await queue_one(client, tenant, acc, vertical_mp4)
        google_app.inject("start", status, reason)
        clock.advance(timedelta(hours=21))
        await engine.run()
        got = await get_item(client, tenant, pool["id"], item_id)
        (d,) = got["deliveries"]
        assert (got["status"], d["reason"], d["attempts"]) == ("skipped", skip, 1)
        assert reason in d["detail"]
        notes = (await client.get("/api/v1/notifications", headers=tenant.headers)).json()
        assert any(n["level"] == "warning" for n in notes["items"]), notes
        assert google_app.videos == {}

    async def test_a_refused_refresh_marks_the_account_needs_reauth(
        self, client, tenant, engine, clock, app, settings, google_app, vertical_mp4
    ):
        acc = await youtube_account(
            app,
            tenant,
            google_app,
            clock,
            settings,
            expires_at=(clock.now() - timedelta(hours=1)).isoformat(),
        )
        google_app.revoke_refresh_tokens()
        pool, item_id = await queue_one(client, tenant, acc, vertical_mp4)
        clock.advance(timedelta(hours=21))
        await engine.run()
        got = await get_item(client, tenant, pool["id"], item_id)
        assert got["deliveries"][0]["reason"] == "auth_expired"
        account = (await client.get(f"/api/v1/accounts/{acc}", headers=tenant.headers)).json()
        assert account["status"] == "needs_reauth"
        notes = (await client.get("/api/v1/notifications", headers=tenant.headers)).json()
        assert "account.needs_reauth" in [n["kind"] for n in notes["items"]]
        assert google_app.videos == {}

    async def test_a_rotated_refresh_token_is_saved_encrypted_on_the_account(
        self, client, tenant, engine, clock, app, settings, google_app, vertical_mp4
    ):
        google_app.rotate_refresh_tokens = True
        acc = await youtube_account(
            app, tenant, google_app, clock, settings, expires_at=clock.now().isoformat()
        )
        pool, item_id = await queue_one(client, tenant, acc, vertical_mp4)
        clock.advance(timedelta(hours=21))
        await engine.run()
        assert (await get_item(client, tenant, pool["id"], item_id))["status"] == "dispatched"
        async with app.state.uploadpools.maker() as s:
            row = await s.get(Account, acc)
        config = SecretBox(settings.secret()).decrypt(row.credentials)
        assert config["refresh_token"] in google_app.refresh_tokens
        assert google_app.refreshes == 1

    async def test_a_worker_killed_after_the_upload_landed_posts_exactly_once(
        self, client, tenant, clock, app, settings, google_app, vertical_mp4
    ):
        from uploadpools.connectors.registry import connector_for
        from uploadpools.engine.dispatcher import Dispatcher, _Jobs
        from uploadpools.engine.ticker import Ticker

        acc = await youtube_account(app, tenant, google_app, clock, settings)
        pool, item_id = await queue_one(client, tenant, acc, vertical_mp4)
        clock.advance(timedelta(hours=21))
        st = app.state.uploadpools
        await Ticker(st.maker, settings, clock).tick()
        dying = Dispatcher(st.maker, settings, clock, st.storage, st.http, node="dying")
        (c,) = await dying.claim(10)
        # The worker uploads every byte (YouTube creates the video), then dies unrecorded.
        await connector_for("youtube", dying.ctx).publish(c.request, _Jobs(dying, c))
        assert len(google_app.videos) == 1
        clock.advance(seconds=settings.lease_seconds + 1)
        survivor = Dispatcher(st.maker, settings, clock, st.storage, st.http, node="survivor")
        await survivor.run_until_idle()
        got = await get_item(client, tenant, pool["id"], item_id)
        assert (got["deliveries"][0]["status"], got["deliveries"][0]["remote_id"]) == (
            "posted",
            "vid0001",
        )
        assert len(google_app.videos) == 1
        async with st.maker() as s:
            (d,) = (await s.scalars(select(Delivery))).all()
        assert d.job["upload_url"].startswith(google_app.base)
