"""Pre-flight: a video is checked against the constraints of every platform its pool posts to."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from sqlalchemy import func, select

from apihelpers import make_account, make_pool
from media_samples import make_mp4
from uploadpools.kit.crypto import SecretBox
from uploadpools.models import Account, QueueItem
from webhelpers import sign_in


@pytest.fixture(scope="module")
def vertical_mp4(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_mp4(tmp_path_factory.mktemp("pf") / "v.mp4", seconds=1.0, width=96, height=160)


async def youtube_account(app, tenant, settings, clock, name="My channel", status="connected"):  # type: ignore[no-untyped-def]
    async with app.state.uploadpools.maker() as s:
        acc = Account(
            workspace_id=tenant.workspace_id,
            platform="youtube",
            name=name,
            status=status,
            remote_id=f"UC{name}",
            credentials=SecretBox(settings.secret()).encrypt({"access_token": "t"}),
            created_at=clock.now(),
            updated_at=clock.now(),
        )
        s.add(acc)
        await s.commit()
        return acc.id


async def upload(client, tenant, pool_id, mp4, **data):  # type: ignore[no-untyped-def]
    with mp4.open("rb") as f:
        return await client.post(
            f"/api/v1/pools/{pool_id}/videos",
            files={"file": ("v.mp4", f, "video/mp4")},
            data=data,
            headers=tenant.headers,
        )


async def queued(app) -> int:  # type: ignore[no-untyped-def]
    async with app.state.uploadpools.maker() as s:
        return int(await s.scalar(select(func.count()).select_from(QueueItem)) or 0)


async def mixed_pool(client, tenant, app, settings, clock):  # type: ignore[no-untyped-def]
    """A pool posting to a folder and to a YouTube channel."""
    yt = await youtube_account(app, tenant, settings, clock)
    folder = await make_account(client, tenant)
    return await make_pool(
        client, tenant, folder, slots=[{"time": "09:00", "account_ids": [folder, yt]}]
    )


class TestUpload:
    async def test_landscape_video_is_refused_naming_the_account_and_rule(
        self, client, tenant, app, settings, clock, sample_mp4
    ):
        pool = await mixed_pool(client, tenant, app, settings, clock)
        r = await upload(client, tenant, pool["id"], sample_mp4, title="Hi")
        assert r.status_code == 422, r.text
        assert r.headers["content-type"].startswith("application/problem+json")
        assert r.json()["errors"] == [
            {
                "field": "file",
                "message": "YouTube account 'My channel': aspect ratio 320x240 (1.33) is wider "
                "than the maximum 1.00 (square or vertical only)",
            }
        ]
        assert await queued(app) == 0
        assert not any(p.is_file() for p in settings.media_dir.rglob("*"))

    async def test_every_broken_rule_is_named(
        self, client, tenant, app, settings, clock, vertical_mp4
    ):
        settings.media_constraints = {"youtube": {"max_duration_s": 0.5}}
        pool = await mixed_pool(client, tenant, app, settings, clock)
        r = await upload(client, tenant, pool["id"], vertical_mp4, title="x" * 101)
        assert r.status_code == 422, r.text
        assert r.json()["errors"] == [
            {
                "field": "file",
                "message": "YouTube account 'My channel': duration 1 s exceeds 0.5 s",
            },
            {
                "field": "title",
                "message": "YouTube account 'My channel': title has 101 characters, more than 100",
            },
        ]

    async def test_a_video_every_platform_accepts_is_queued(
        self, client, tenant, app, settings, clock, vertical_mp4
    ):
        pool = await mixed_pool(client, tenant, app, settings, clock)
        r = await upload(client, tenant, pool["id"], vertical_mp4, title="x" * 100)
        assert r.status_code == 201, r.text

    async def test_pools_without_constrained_platforms_take_any_video(
        self, client, tenant, app, sample_mp4
    ):
        pool = await make_pool(client, tenant, await make_account(client, tenant))
        r = await upload(client, tenant, pool["id"], sample_mp4, title="x" * 300)
        assert r.status_code == 201, r.text

    async def test_disabled_accounts_are_not_checked(
        self, client, tenant, app, settings, clock, sample_mp4
    ):
        yt = await youtube_account(app, tenant, settings, clock, status="disabled")
        pool = await make_pool(client, tenant, yt)
        r = await upload(client, tenant, pool["id"], sample_mp4)
        assert r.status_code == 201, r.text

    async def test_the_check_can_be_relaxed_by_setting(
        self, client, tenant, app, settings, clock, sample_mp4
    ):
        settings.media_constraints = {"youtube": {"max_aspect": None}}
        pool = await mixed_pool(client, tenant, app, settings, clock)
        r = await upload(client, tenant, pool["id"], sample_mp4)
        assert r.status_code == 201, r.text


class TestVideoUrl:
    async def test_text_is_checked_at_once(
        self, allow_loopback, client, tenant, app, settings, clock
    ):
        pool = await mixed_pool(client, tenant, app, settings, clock)
        r = await client.post(
            f"/api/v1/pools/{pool['id']}/videos",
            json={"video_url": "http://127.0.0.1:9/v.mp4", "caption": "c" * 5001},
            headers=tenant.headers,
        )
        assert r.status_code == 422
        assert r.json()["errors"] == [
            {
                "field": "caption",
                "message": "YouTube account 'My channel': caption has 5001 characters, "
                "more than 5000",
            }
        ]

    async def test_fetched_video_that_breaks_a_rule_is_skipped_and_notified(
        self, allow_loopback, client, tenant, app, settings, clock, file_server, sample_mp4
    ):
        shutil.copy(sample_mp4, file_server.root / "wide.mp4")
        pool = await mixed_pool(client, tenant, app, settings, clock)
        r = await client.post(
            f"/api/v1/pools/{pool['id']}/videos",
            json={"video_url": file_server.url("wide.mp4"), "title": "wide"},
            headers=tenant.headers,
        )
        assert r.status_code == 201, r.text
        item_id = r.json()["id"]
        assert await app.state.uploadpools.fetcher.run_once() == 1
        got = (
            await client.get(f"/api/v1/pools/{pool['id']}/videos/{item_id}", headers=tenant.headers)
        ).json()
        assert (got["status"], got["skip_reason"]) == ("skipped", "media_rejected")
        assert "YouTube account 'My channel': aspect ratio 320x240" in got["skip_detail"]
        assert got["media"]["state"] == "ready"
        notes = (await client.get("/api/v1/notifications", headers=tenant.headers)).json()["items"]
        assert [(n["kind"], n["level"], n["item_id"]) for n in notes] == [
            ("item.skipped", "warning", item_id)
        ]
        assert "aspect ratio" in notes[0]["message"]


def test_an_unknown_rule_in_the_setting_is_refused() -> None:
    from pydantic import ValidationError

    from uploadpools.config import Settings

    with pytest.raises(ValidationError, match="unknown rule"):
        Settings(_env_file=None, media_constraints={"youtube": {"max_seconds": 60}})  # type: ignore[call-arg]


class TestWebDropZone:
    async def test_the_drop_zone_runs_the_same_check_and_keeps_no_file(
        self, client, tenant, app, settings, clock, sample_mp4
    ):
        pool = await mixed_pool(client, tenant, app, settings, clock)
        csrf = await sign_in(client, tenant.email)
        with sample_mp4.open("rb") as f:
            r = await client.post(
                f"/pools/{pool['id']}/upload",
                files={"file": ("v.mp4", f, "video/mp4")},
                headers={"X-CSRF-Token": csrf},
            )
        assert r.status_code == 422, r.text
        assert "aspect ratio 320x240" in r.text
        assert await queued(app) == 0
        assert not any(p.is_file() for p in settings.media_dir.rglob("*"))
