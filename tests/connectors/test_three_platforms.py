"""YouTube, TikTok and Instagram together, end to end through the engine.

One pool whose slot posts to one account of each platform, each connected through the
connect flow's routes against its fake (tests/fakes/). The per-platform files test each
protocol in depth; this one tests that the three run side by side at slot time, skip
together on a rate limit, survive a worker killed after the platforms accepted the
upload, and that the connect flow refuses what it must for every platform.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from sqlalchemy import select

from apihelpers import make_pool
from fakes.instagram import graph_error
from platformhelpers import connect, consent, serve_media
from uploadpools.connectors.base import Transient
from uploadpools.connectors.registry import connector_for
from uploadpools.engine.dispatcher import Dispatcher, _Jobs
from uploadpools.models import Account

PLATFORMS = ("youtube", "tiktok", "instagram")
NINE = datetime(2026, 3, 3, 9, 0, tzinfo=UTC)  # the first 09:00 UTC slot after conftest's START
OPTIONS = {"youtube": {"privacy": "private"}, "tiktok": {"privacy": "public"}}


@dataclass
class Three:
    pool_id: str
    accounts: dict[str, str]  # platform → account id
    google: Any
    tiktok: Any
    instagram: Any

    def posts(self) -> dict[str, list[dict[str, Any]]]:
        """What each fake platform published."""
        return {
            "youtube": list(self.google.videos.values()),
            "tiktok": list(self.tiktok.posts),
            "instagram": list(self.instagram.posts),
        }

    def remote(self, platform: str) -> tuple[str, str]:
        """The (remote id, url) of the one post on ``platform``'s fake."""
        (post,) = self.posts()[platform]
        if platform == "youtube":
            return post["id"], f"https://www.youtube.com/shorts/{post['id']}"
        if platform == "tiktok":
            pid = str(post["post_id"])
            return pid, f"https://www.tiktok.com/@sunny.creator/video/{pid}"
        return post["id"], f"https://www.instagram.com/reel/{post['shortcode']}/"


@pytest.fixture
async def three(client, tenant, google_app, tiktok_app, instagram_app) -> Three:  # type: ignore[no-untyped-def]
    """Three accounts connected through the routes, in one active pool's 09:00 UTC slot."""
    for platform in PLATFORMS:
        r = await connect(client, tenant, platform)
        assert r.status_code == 200, r.text
    listed = (await client.get("/api/v1/accounts", headers=tenant.headers)).json()["items"]
    accounts = {a["platform"]: a["id"] for a in listed}
    assert set(accounts) == set(PLATFORMS)
    pool = await make_pool(
        client,
        tenant,
        accounts["youtube"],
        timezone="UTC",
        state="active",
        slots=[{"time": "09:00", "account_ids": [accounts[p] for p in PLATFORMS]}],
    )
    return Three(pool["id"], accounts, google_app, tiktok_app, instagram_app)


async def enqueue(app, client, tenant, settings, file_server, three: Three, mp4: Path) -> str:  # type: ignore[no-untyped-def]
    """Add the video to the pool (pre-flight checks it against all three platforms) and
    serve it where Instagram will fetch it from."""
    with mp4.open("rb") as f:
        r = await client.post(
            f"/api/v1/pools/{three.pool_id}/videos",
            files={"file": ("v.mp4", f, "video/mp4")},
            data={"title": "Sunrise", "caption": "Morning #light", "options": json.dumps(OPTIONS)},
            headers=tenant.headers,
        )
    assert r.status_code == 201, r.text
    item_id = str(r.json()["id"])
    await serve_media(app, settings, file_server, item_id, mp4)
    return item_id


async def item(client, tenant, three: Three, item_id: str) -> tuple[dict, dict[str, dict]]:  # type: ignore[no-untyped-def]
    r = await client.get(f"/api/v1/pools/{three.pool_id}/videos/{item_id}", headers=tenant.headers)
    body = r.json()
    return body, {d["platform"]: d for d in body["deliveries"]}


def assert_posted_once_everywhere(got: dict, deliveries: dict[str, dict], three: Three) -> None:
    assert got["status"] == "dispatched"
    assert {p: len(posts) for p, posts in three.posts().items()} == dict.fromkeys(PLATFORMS, 1)
    for platform in PLATFORMS:
        d = deliveries[platform]
        assert d["account_id"] == three.accounts[platform]
        assert (d["status"], (d["remote_id"], d["remote_url"])) == (
            "posted",
            three.remote(platform),
        ), platform


class TestThroughTheEngine:
    async def test_posts_to_all_three_at_slot_time_then_a_rate_limited_run_skips(
        self, app, client, tenant, settings, engine, clock, file_server, three, platform_mp4
    ):
        first = await enqueue(app, client, tenant, settings, file_server, three, platform_mp4)
        second = await enqueue(app, client, tenant, settings, file_server, three, platform_mp4)

        clock.set(NINE)
        await engine.run()
        got, deliveries = await item(client, tenant, three, first)
        assert_posted_once_everywhere(got, deliveries, three)
        sha = hashlib.sha256(platform_mp4.read_bytes()).hexdigest()
        posts = three.posts()
        assert posts["youtube"][0]["sha256"] == posts["tiktok"][0]["sha256"] == sha
        assert posts["instagram"][0]["video_sha256"] == sha  # fetched from the signed URL
        assert posts["youtube"][0]["status"]["privacyStatus"] == "private"
        assert posts["tiktok"][0]["post_info"]["privacy_level"] == "PUBLIC_TO_EVERYONE"
        assert posts["instagram"][0]["caption"] == "Morning #light"
        assert (await item(client, tenant, three, second))[0]["status"] == "queued"

        # The next slot: every platform answers with its documented rate-limit body.
        three.google.inject("start", 403, "userRateLimitExceeded")
        three.tiktok.fail("init", 429, "rate_limit_exceeded")
        three.instagram.fail(
            "create", 400, graph_error(4, None, "Application request limit reached")
        )
        clock.set(NINE + timedelta(days=1))
        await engine.run()
        got, deliveries = await item(client, tenant, three, second)
        assert got["status"] == "skipped"
        assert {p: (d["status"], d["reason"]) for p, d in deliveries.items()} == dict.fromkeys(
            PLATFORMS, ("skipped", "platform_rate_limited")
        )
        assert "userRateLimitExceeded" in deliveries["youtube"]["detail"]
        assert "rate limit" in deliveries["tiktok"]["detail"]
        notes = (await client.get("/api/v1/notifications", headers=tenant.headers)).json()["items"]
        (note,) = [n for n in notes if n["item_id"] == second]
        assert note["level"] == "warning"
        assert all(p in note["message"] for p in PLATFORMS), note["message"]
        assert {p: len(posts) for p, posts in three.posts().items()} == dict.fromkeys(PLATFORMS, 1)

    async def test_a_worker_killed_after_the_platforms_accepted_posts_exactly_once(
        self, app, client, tenant, settings, engine, clock, file_server, three, platform_mp4
    ):
        item_id = await enqueue(app, client, tenant, settings, file_server, three, platform_mp4)
        clock.set(NINE)
        await engine.ticker.tick()
        st = app.state.uploadpools
        dying = Dispatcher(st.maker, settings, clock, st.storage, st.http, node="dying")
        claimed = await dying.claim(10)
        assert sorted(c.platform for c in claimed) == sorted(PLATFORMS)
        for c in claimed:
            await publish_then_die(c, dying, three)
        # Each platform has the post; the database knows only the saved job ids.
        assert {p: len(posts) for p, posts in three.posts().items()} == dict.fromkeys(PLATFORMS, 1)

        clock.advance(seconds=settings.lease_seconds + 1)
        survivor = Dispatcher(st.maker, settings, clock, st.storage, st.http, node="survivor")
        assert await survivor.run_until_idle() == 3
        got, deliveries = await item(client, tenant, three, item_id)
        assert_posted_once_everywhere(got, deliveries, three)
        assert len(three.google.sessions) == 1
        assert three.tiktok.calls("/v2/post/publish/video/init/") == 1
        assert three.instagram.containers_created() == 1
        assert three.instagram.publish_attempts == 1


class Crash(Exception):
    """The worker died here."""


class DiesAtSave:
    """The dispatcher's job store, until the worker dies at the ``n``-th job save."""

    def __init__(self, jobs: _Jobs, n: int) -> None:
        self.jobs, self.n, self.saves = jobs, n, 0

    async def save(self, job: dict[str, Any]) -> None:
        self.saves += 1
        if self.saves == self.n:
            raise Crash
        await self.jobs.save(job)

    async def save_config(self, config: dict[str, Any]) -> None:
        await self.jobs.save_config(config)

    async def load_config(self) -> dict[str, Any]:
        return await self.jobs.load_config()


async def publish_then_die(c: Any, dying: Dispatcher, three: Three) -> None:
    """Post ``c`` as the dying worker, which stops after the platform accepted the upload
    and before recording anything — at each platform's riskiest point."""
    connector = connector_for(c.platform, dying.ctx)
    jobs = _Jobs(dying, c)
    if c.platform == "youtube":
        # Every byte sent (YouTube made the video); the worker dies before recording it.
        await connector.publish(c.request, jobs)
    elif c.platform == "tiktok":
        # The last chunk landed (TikTok publishes); the status fetch never answers.
        three.tiktok.fail("status", 503)
        with pytest.raises(Transient):
            await connector.publish(c.request, jobs)
    else:
        # media_publish answered; the worker dies saving the media id (save 3 of 3).
        with pytest.raises(Crash):
            await connector.publish(c.request, DiesAtSave(jobs, 3))


# -- the connect flow's refusals, for every platform ---------------------------------------


def refuse_consent(fake: Any) -> None:
    if hasattr(fake, "refuse_consent"):  # the fake Google
        fake.refuse_consent = True
    else:
        fake.consent = False


async def no_accounts(app) -> bool:  # type: ignore[no-untyped-def]
    async with app.state.uploadpools.maker() as s:
        return (await s.scalars(select(Account))).first() is None


@pytest.mark.parametrize("platform", PLATFORMS)
class TestConnectRefusals:
    @pytest.fixture
    def fake(self, request: pytest.FixtureRequest, platform: str) -> Any:
        return request.getfixturevalue(f"{'google' if platform == 'youtube' else platform}_app")

    async def test_declined_consent_connects_nothing(self, client, tenant, app, fake, platform):
        refuse_consent(fake)
        r = await connect(client, tenant, platform)
        assert r.status_code == 400
        assert "consent was declined" in r.text and "nothing was connected" in r.text
        assert await no_accounts(app)

    async def test_a_tampered_state_connects_nothing(self, client, tenant, app, fake, platform):
        back = await consent(client, tenant, platform)
        parts = urlsplit(back)
        q = {k: v[0] for k, v in parse_qs(parts.query).items()}
        code, state = q["code"], q["state"]
        forged = state[:-6] + ("AAAAAA" if not state.endswith("AAAAAA") else "BBBBBB")
        r = await client.get(parts.path, params={**q, "state": forged})
        assert r.status_code == 400 and "not one this server made" in r.text
        assert await no_accounts(app)
        assert code in fake.codes  # the code was never even redeemed
        r = await client.get(back)  # the genuine answer still connects
        assert r.status_code == 200, r.text
        assert not await no_accounts(app)
