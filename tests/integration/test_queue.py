from __future__ import annotations

import logging
import shutil
import sys
from pathlib import Path

import pytest
from sqlalchemy import select, update

from apihelpers import fields, make_account, make_pool
from media_samples import make_text_file, make_truncated_mp4
from probehelpers import fake_worker
from uploadpools.media import probe
from uploadpools.models import Media, QueueItem, WebhookEvent

pytestmark = pytest.mark.asyncio


async def upload(client, tenant, pool_id, path: Path, **form):  # type: ignore[no-untyped-def]
    with path.open("rb") as f:
        return await client.post(
            f"/api/v1/pools/{pool_id}/videos",
            files={"file": (path.name, f, "video/mp4")},
            data=form,
            headers=tenant.headers,
        )


async def setup_pool(client, tenant, **over):  # type: ignore[no-untyped-def]
    acc = await make_account(client, tenant)
    return await make_pool(client, tenant, acc, **over)


async def enqueue_n(client, tenant, pool_id, sample_mp4, n):  # type: ignore[no-untyped-def]
    ids = []
    for i in range(n):
        r = await upload(client, tenant, pool_id, sample_mp4, title=f"v{i}")
        assert r.status_code == 201, r.text
        ids.append(r.json()["id"])
    return ids


async def queue_url(client, tenant, pool_id, url, **fields):  # type: ignore[no-untyped-def]
    """Queue a `video_url`; its item's id and API path."""
    r = await client.post(
        f"/api/v1/pools/{pool_id}/videos", json={"video_url": url, **fields}, headers=tenant.headers
    )
    assert r.status_code == 201, r.text
    return r.json()["id"], f"/api/v1/pools/{pool_id}/videos/{r.json()['id']}"


def break_probe(monkeypatch):  # type: ignore[no-untyped-def]
    """From now on the probe child cannot run (it exits at once); returns the working
    probe, to put back."""
    working = probe._default
    monkeypatch.setattr(
        probe, "_default", probe.ProbeWorker([sys.executable, "-c", "import sys; sys.exit(3)"])
    )
    return working


async def queue_order(client, tenant, pool_id):  # type: ignore[no-untyped-def]
    r = await client.get(
        f"/api/v1/pools/{pool_id}/videos", params={"status": "queued"}, headers=tenant.headers
    )
    items = r.json()["items"]
    assert [i["position"] for i in items] == list(range(len(items)))
    return [i["id"] for i in items]


async def mark_skipped(app, item_ids, reason="platform_error"):  # type: ignore[no-untyped-def]
    """Stand in for the engine, which is not part of this layer."""
    async with app.state.uploadpools.maker() as s:
        await s.execute(
            update(QueueItem)
            .where(QueueItem.id.in_(item_ids))
            .values(status="skipped", skip_reason=reason)
        )
        await s.commit()


class TestUpload:
    async def test_multipart_upload_is_probed_and_queued(self, client, tenant, sample_mp4):
        pool = await setup_pool(client, tenant)
        r = await upload(
            client,
            tenant,
            pool["id"],
            sample_mp4,
            title="Hello",
            caption="#tag",
            options='{"youtube": {"privacy": "unlisted"}}',
        )
        assert r.status_code == 201, r.text
        item = r.json()
        assert item["status"] == "queued"
        assert item["position"] == 0
        assert (item["title"], item["caption"]) == ("Hello", "#tag")
        assert item["options"] == {"youtube": {"privacy": "unlisted"}}
        media = item["media"]
        assert media["state"] == "ready"
        assert (media["width"], media["height"]) == (320, 240)
        assert media["size"] == sample_mp4.stat().st_size
        assert 0.8 < media["duration_s"] < 1.3
        assert media["content_type"] == "video/mp4"
        assert len(media["sha256"]) == 64
        assert item["deliveries"] == []

    async def test_text_file_refused_and_nothing_kept(self, client, tenant, settings, tmp_path):
        pool = await setup_pool(client, tenant)
        r = await upload(client, tenant, pool["id"], make_text_file(tmp_path / "notes.mp4"))
        assert fields(r) == {"file"}
        assert "not a playable video" in r.json()["errors"][0]["message"]
        assert not any(p.is_file() for p in settings.media_dir.rglob("*"))
        assert (
            await client.get(f"/api/v1/pools/{pool['id']}/videos", headers=tenant.headers)
        ).json()["items"] == []

    async def test_truncated_mp4_refused(self, client, tenant, settings, tmp_path):
        pool = await setup_pool(client, tenant)
        r = await upload(client, tenant, pool["id"], make_truncated_mp4(tmp_path / "cut.mp4"))
        assert fields(r) == {"file"}
        assert not any(p.is_file() for p in settings.media_dir.rglob("*"))

    async def test_probe_crash_refuses_the_upload_and_keeps_nothing(
        self, client, tenant, settings, sample_mp4, monkeypatch
    ):
        crashing = fake_worker("crash")
        monkeypatch.setattr(probe, "_default", crashing)
        pool = await setup_pool(client, tenant)
        try:
            r = await upload(client, tenant, pool["id"], sample_mp4)
        finally:
            crashing.close()
        assert fields(r) == {"file"}
        assert "checker crashed (SIGSEGV)" in r.json()["errors"][0]["message"]
        assert not any(p.is_file() for p in settings.media_dir.rglob("*"))

    async def test_probe_child_killed_once_is_retried_and_the_upload_accepted(
        self, client, tenant, settings, sample_mp4, monkeypatch, tmp_path
    ):
        # Killed on its first look at the file (as the OOM killer might), not the file's fault.
        killed_once = fake_worker("killonce", marks=tmp_path)
        monkeypatch.setattr(probe, "_default", killed_once)
        pool = await setup_pool(client, tenant)
        try:
            r = await upload(client, tenant, pool["id"], sample_mp4)
        finally:
            killed_once.close()
        assert r.status_code == 201, r.text
        assert r.json()["media"]["state"] == "ready"
        assert killed_once.started == 2

    async def test_probe_that_cannot_run_is_503_and_nothing_kept(
        self, client, tenant, settings, sample_mp4, monkeypatch
    ):
        break_probe(monkeypatch)
        pool = await setup_pool(client, tenant)
        r = await upload(client, tenant, pool["id"], sample_mp4)
        assert r.status_code == 503
        assert r.headers["content-type"].startswith("application/problem+json")
        problem = r.json()
        assert problem["type"].endswith("/unavailable")
        assert "could not check the video" in problem["detail"]
        assert not any(p.is_file() for p in settings.media_dir.rglob("*"))
        assert (
            await client.get(f"/api/v1/pools/{pool['id']}/videos", headers=tenant.headers)
        ).json()["items"] == []

    async def test_oversized_upload_is_413_and_nothing_kept(
        self, client, tenant, settings, sample_mp4
    ):
        settings.max_upload_bytes = 10_000
        pool = await setup_pool(client, tenant)
        r = await upload(client, tenant, pool["id"], sample_mp4)
        assert r.status_code == 413
        assert r.headers["content-type"].startswith("application/problem+json")
        assert "10000" in r.json()["detail"]
        assert not any(p.is_file() for p in settings.media_dir.rglob("*"))

    async def test_missing_file_named(self, client, tenant):
        pool = await setup_pool(client, tenant)
        r = await client.post(
            f"/api/v1/pools/{pool['id']}/videos",
            files={"title": (None, "x")},
            headers=tenant.headers,
        )
        assert fields(r) == {"file"}

    async def test_bad_options_json_named(self, client, tenant, sample_mp4):
        pool = await setup_pool(client, tenant)
        r = await upload(client, tenant, pool["id"], sample_mp4, options="{not json")
        assert fields(r) == {"options"}

    async def test_unknown_pool_404_before_reading_body(self, client, tenant, sample_mp4):
        r = await upload(client, tenant, "nope", sample_mp4)
        assert r.status_code == 404


class TestVideoUrl:
    async def test_loopback_url_refused_by_default(self, client, tenant):
        pool = await setup_pool(client, tenant)
        r = await client.post(
            f"/api/v1/pools/{pool['id']}/videos",
            json={"video_url": "http://127.0.0.1:9/v.mp4"},
            headers=tenant.headers,
        )
        assert fields(r) == {"video_url"}
        assert "loopback" in r.json()["errors"][0]["message"]

    async def test_not_a_url_named(self, client, tenant):
        pool = await setup_pool(client, tenant)
        r = await client.post(
            f"/api/v1/pools/{pool['id']}/videos",
            json={"video_url": "ftp//x", "title": 5},
            headers=tenant.headers,
        )
        assert fields(r) == {"video_url", "title"}

    async def test_fetched_in_background_then_ready(
        self, allow_loopback, client, tenant, app, file_server, sample_mp4
    ):
        shutil.copy(sample_mp4, file_server.root / "v.mp4")
        pool = await setup_pool(client, tenant)
        r = await client.post(
            f"/api/v1/pools/{pool['id']}/videos",
            json={"video_url": file_server.url("v.mp4"), "title": "remote"},
            headers=tenant.headers,
        )
        assert r.status_code == 201, r.text
        item = r.json()
        assert item["status"] == "queued"
        assert item["media"]["state"] == "pending"
        assert await app.state.uploadpools.fetcher.run_once() == 1
        got = (
            await client.get(
                f"/api/v1/pools/{pool['id']}/videos/{item['id']}", headers=tenant.headers
            )
        ).json()
        assert got["media"]["state"] == "ready"
        assert got["media"]["size"] == sample_mp4.stat().st_size
        assert got["status"] == "queued"

    async def test_failed_fetch_skips_item_and_notifies(
        self, allow_loopback, client, tenant, app, file_server
    ):
        pool = await setup_pool(client, tenant)
        r = await client.post(
            f"/api/v1/pools/{pool['id']}/videos",
            json={"video_url": file_server.url("missing.mp4"), "title": "gone"},
            headers=tenant.headers,
        )
        item_id = r.json()["id"]
        await app.state.uploadpools.fetcher.run_once()
        got = (
            await client.get(f"/api/v1/pools/{pool['id']}/videos/{item_id}", headers=tenant.headers)
        ).json()
        assert got["status"] == "skipped"
        assert got["skip_reason"] == "media_rejected"
        assert "404" in got["skip_detail"]
        assert got["media"]["state"] == "failed"
        notes = (await client.get("/api/v1/notifications", headers=tenant.headers)).json()["items"]
        assert [(n["kind"], n["level"], n["item_id"]) for n in notes] == [
            ("item.skipped", "warning", item_id)
        ]

    async def test_fetched_file_that_is_not_video_is_rejected(
        self, allow_loopback, client, tenant, app, file_server
    ):
        make_text_file(file_server.root / "t.mp4")
        pool = await setup_pool(client, tenant)
        r = await client.post(
            f"/api/v1/pools/{pool['id']}/videos",
            json={"video_url": file_server.url("t.mp4")},
            headers=tenant.headers,
        )
        await app.state.uploadpools.fetcher.run_once()
        got = (
            await client.get(
                f"/api/v1/pools/{pool['id']}/videos/{r.json()['id']}", headers=tenant.headers
            )
        ).json()
        assert got["skip_reason"] == "media_rejected"

    async def test_fetch_whose_probe_cannot_run_stays_pending_and_is_tried_again(
        self,
        allow_loopback,
        client,
        tenant,
        app,
        file_server,
        sample_mp4,
        settings,
        clock,
        monkeypatch,
    ):
        shutil.copy(sample_mp4, file_server.root / "v.mp4")
        pool = await setup_pool(client, tenant)
        _, item_url = await queue_url(client, tenant, pool["id"], file_server.url("v.mp4"))
        fetcher = app.state.uploadpools.fetcher
        working = break_probe(monkeypatch)
        assert await fetcher.run_once() == 1
        got = (await client.get(item_url, headers=tenant.headers)).json()
        assert (got["status"], got["media"]["state"]) == ("queued", "pending")
        assert not any(p.is_file() for p in settings.media_dir.rglob("*"))

        monkeypatch.setattr(probe, "_default", working)
        clock.advance(seconds=300)
        assert await fetcher.run_once() == 0  # tried again once 5 minutes have passed
        clock.advance(seconds=1)
        assert await fetcher.run_once() == 1
        got = (await client.get(item_url, headers=tenant.headers)).json()
        assert (got["status"], got["media"]["state"]) == ("queued", "ready")

    async def test_fetch_whose_probe_never_runs_is_skipped_after_the_set_attempts(
        self,
        allow_loopback,
        client,
        tenant,
        app,
        file_server,
        sample_mp4,
        settings,
        clock,
        monkeypatch,
        caplog,
    ):
        settings.fetch_max_attempts = 3
        shutil.copy(sample_mp4, file_server.root / "v.mp4")
        pool = await setup_pool(client, tenant)
        r = await client.post(
            "/api/v1/webhooks",
            json={"url": "http://127.0.0.1:9/hook", "events": ["item.skipped"]},
            headers=tenant.headers,
        )
        assert r.status_code == 201, r.text
        url = file_server.url("v.mp4").replace("http://", "http://someone:s3cret@")
        item_id, item_url = await queue_url(client, tenant, pool["id"], url, title="remote")
        fetcher = app.state.uploadpools.fetcher
        working = break_probe(monkeypatch)
        with caplog.at_level(logging.WARNING, logger="uploadpools.media.service"):
            assert await fetcher.run_once() == 1  # attempt 1
            for wait in (300, 600):  # further and further apart
                clock.advance(seconds=wait)
                assert await fetcher.run_once() == 0
                got = (await client.get(item_url, headers=tenant.headers)).json()
                assert (got["status"], got["media"]["state"]) == ("queued", "pending")
                clock.advance(seconds=1)
                assert await fetcher.run_once() == 1  # attempts 2 and 3
        warnings = [
            r.getMessage()
            for r in caplog.records
            if r.name == "uploadpools.media.service" and r.levelno == logging.WARNING
        ]
        assert len(warnings) == 3, warnings
        assert "attempt 1 of 3" in warnings[0] and "fetching it again in 300 s" in warnings[0]
        assert "attempt 2 of 3" in warnings[1] and "fetching it again in 600 s" in warnings[1]
        assert "failed" in warnings[2] and "attempt 3 of 3" in warnings[2]
        assert "s3cret" not in caplog.text and str(file_server.port) not in caplog.text

        got = (await client.get(item_url, headers=tenant.headers)).json()
        assert (got["status"], got["skip_reason"]) == ("skipped", "media_rejected")
        assert got["skip_detail"].startswith("the video could not be checked: ")
        assert "the server's video probe could not run in 3 attempts" in got["skip_detail"]
        assert "not the video's fault" in got["skip_detail"]
        assert got["media"]["state"] == "failed"
        assert not any(p.is_file() for p in settings.media_dir.rglob("*"))
        notes = (await client.get("/api/v1/notifications", headers=tenant.headers)).json()["items"]
        assert [(n["kind"], n["level"], n["item_id"]) for n in notes] == [
            ("item.skipped", "warning", item_id)
        ]
        assert "could not run in 3 attempts" in notes[0]["message"]
        async with app.state.uploadpools.maker() as s:
            events = (await s.scalars(select(WebhookEvent))).all()
        assert [(e.type, e.data["item"]["id"]) for e in events] == [("item.skipped", item_id)]
        assert events[0].data["item"]["skip_reason"] == "media_rejected"

        clock.advance(hours=24)
        assert await fetcher.run_once() == 0  # never fetched again on its own

        # Requeueing it once the server is fixed fetches it again, with a fresh allowance.
        monkeypatch.setattr(probe, "_default", working)
        r = await client.patch(item_url, json={"status": "queued"}, headers=tenant.headers)
        assert r.json()["media"]["state"] == "pending"
        async with app.state.uploadpools.maker() as s:
            assert (await s.scalar(select(Media.fetch_attempts))) == 0
        assert await fetcher.run_once() == 1
        got = (await client.get(item_url, headers=tenant.headers)).json()
        assert (got["status"], got["media"]["state"]) == ("queued", "ready")

    async def test_one_attempt_allowed_skips_at_once_when_the_probe_cannot_run(
        self, allow_loopback, client, tenant, app, file_server, sample_mp4, settings, monkeypatch
    ):
        settings.fetch_max_attempts = 1
        shutil.copy(sample_mp4, file_server.root / "v.mp4")
        pool = await setup_pool(client, tenant)
        _, item_url = await queue_url(client, tenant, pool["id"], file_server.url("v.mp4"))
        break_probe(monkeypatch)
        assert await app.state.uploadpools.fetcher.run_once() == 1
        got = (await client.get(item_url, headers=tenant.headers)).json()
        assert (got["status"], got["skip_reason"]) == ("skipped", "media_rejected")
        assert "could not run in 1 attempt;" in got["skip_detail"]

    async def test_fetch_interrupted_every_time_is_skipped_after_the_set_attempts(
        self, allow_loopback, client, tenant, app, file_server, sample_mp4, settings, clock
    ):
        """A fetch whose process stops mid-way (claimed, never finished) is taken again once
        its lease runs out, but not beyond `fetch_max_attempts`."""
        settings.fetch_max_attempts = 2
        shutil.copy(sample_mp4, file_server.root / "v.mp4")
        pool = await setup_pool(client, tenant)
        item_id, item_url = await queue_url(client, tenant, pool["id"], file_server.url("v.mp4"))
        fetcher = app.state.uploadpools.fetcher
        lease_s = settings.fetch_timeout_s + 60
        for _ in range(2):  # a process claims it and dies before finishing
            assert len(await fetcher._claim(10)) == 1
            assert await fetcher.run_once() == 0  # leased: nobody else takes it meanwhile
            clock.advance(seconds=lease_s + 1)

        assert await fetcher.run_once() == 0  # used up: failed instead of taken again
        got = (await client.get(item_url, headers=tenant.headers)).json()
        assert (got["status"], got["skip_reason"], got["media"]["state"]) == (
            "skipped",
            "media_rejected",
            "failed",
        )
        assert got["skip_detail"].startswith("the video could not be fetched: 2 attempts")
        assert "did not finish" in got["skip_detail"]
        notes = (await client.get("/api/v1/notifications", headers=tenant.headers)).json()["items"]
        assert [(n["kind"], n["item_id"]) for n in notes] == [("item.skipped", item_id)]

        # Requeued, it gets a fresh allowance and is fetched.
        r = await client.patch(item_url, json={"status": "queued"}, headers=tenant.headers)
        assert r.json()["media"]["state"] == "pending"
        assert await fetcher.run_once() == 1
        got = (await client.get(item_url, headers=tenant.headers)).json()
        assert (got["status"], got["media"]["state"]) == ("queued", "ready")

    async def test_a_fetch_failure_after_a_probe_that_could_not_run_fails_at_once(
        self,
        allow_loopback,
        client,
        tenant,
        app,
        file_server,
        sample_mp4,
        settings,
        clock,
        monkeypatch,
    ):
        shutil.copy(sample_mp4, file_server.root / "v.mp4")
        pool = await setup_pool(client, tenant)
        _, item_url = await queue_url(client, tenant, pool["id"], file_server.url("v.mp4"))
        fetcher = app.state.uploadpools.fetcher
        break_probe(monkeypatch)
        assert await fetcher.run_once() == 1
        (file_server.root / "v.mp4").unlink()
        clock.advance(seconds=301)
        assert await fetcher.run_once() == 1  # attempt 2 of 6, and the URL is gone now
        got = (await client.get(item_url, headers=tenant.headers)).json()
        assert (got["status"], got["skip_reason"]) == ("skipped", "media_rejected")
        assert got["skip_detail"].startswith("the video could not be fetched: HTTP 404")

    async def test_requeue_after_failed_fetch_fetches_again(
        self, allow_loopback, client, tenant, app, file_server, sample_mp4
    ):
        pool = await setup_pool(client, tenant)
        r = await client.post(
            f"/api/v1/pools/{pool['id']}/videos",
            json={"video_url": file_server.url("later.mp4")},
            headers=tenant.headers,
        )
        item_id = r.json()["id"]
        await app.state.uploadpools.fetcher.run_once()
        shutil.copy(sample_mp4, file_server.root / "later.mp4")
        r = await client.patch(
            f"/api/v1/pools/{pool['id']}/videos/{item_id}",
            json={"status": "queued"},
            headers=tenant.headers,
        )
        assert r.json()["status"] == "queued"
        assert r.json()["media"]["state"] == "pending"
        await app.state.uploadpools.fetcher.run_once()
        got = (
            await client.get(f"/api/v1/pools/{pool['id']}/videos/{item_id}", headers=tenant.headers)
        ).json()
        assert got["media"]["state"] == "ready"


class TestOrder:
    async def test_list_is_fifo(self, client, tenant, sample_mp4):
        pool = await setup_pool(client, tenant)
        ids = await enqueue_n(client, tenant, pool["id"], sample_mp4, 3)
        assert await queue_order(client, tenant, pool["id"]) == ids

    async def test_move_to_top_bottom_and_middle(self, client, tenant, sample_mp4):
        pool = await setup_pool(client, tenant)
        a, b, c, d = await enqueue_n(client, tenant, pool["id"], sample_mp4, 4)
        base = f"/api/v1/pools/{pool['id']}/videos"
        r = await client.patch(f"{base}/{d}", json={"position": 0}, headers=tenant.headers)
        assert r.json()["position"] == 0
        assert await queue_order(client, tenant, pool["id"]) == [d, a, b, c]
        await client.patch(f"{base}/{d}", json={"position": 99}, headers=tenant.headers)
        assert await queue_order(client, tenant, pool["id"]) == [a, b, c, d]
        await client.patch(f"{base}/{a}", json={"position": 2}, headers=tenant.headers)
        assert await queue_order(client, tenant, pool["id"]) == [b, c, a, d]

    async def test_many_moves_keep_strict_order(self, client, tenant, sample_mp4, app):
        pool = await setup_pool(client, tenant)
        ids = await enqueue_n(client, tenant, pool["id"], sample_mp4, 3)
        base = f"/api/v1/pools/{pool['id']}/videos"
        expected = list(ids)
        # Repeatedly squeezing into the same gap exhausts it and forces a renumbering.
        for _ in range(45):
            await client.patch(
                f"{base}/{expected[-1]}", json={"position": 1}, headers=tenant.headers
            )
            expected.insert(1, expected.pop())
            assert await queue_order(client, tenant, pool["id"]) == expected

    async def test_page_through_queue_with_positions(self, client, tenant, sample_mp4):
        pool = await setup_pool(client, tenant)
        ids = await enqueue_n(client, tenant, pool["id"], sample_mp4, 5)
        seen, positions, cursor = [], [], None
        while True:
            params = {"status": "queued", "limit": 2} | ({"cursor": cursor} if cursor else {})
            page = (
                await client.get(
                    f"/api/v1/pools/{pool['id']}/videos", params=params, headers=tenant.headers
                )
            ).json()
            seen += [i["id"] for i in page["items"]]
            positions += [i["position"] for i in page["items"]]
            cursor = page["next_cursor"]
            if not cursor:
                break
        assert seen == ids
        assert positions == [0, 1, 2, 3, 4]

    async def test_unfiltered_list_gives_queue_positions(self, client, tenant, sample_mp4, app):
        pool = await setup_pool(client, tenant)
        a, b, c, d = await enqueue_n(client, tenant, pool["id"], sample_mp4, 4)
        await mark_skipped(app, [b])
        await client.patch(
            f"/api/v1/pools/{pool['id']}/videos/{d}", json={"position": 0}, headers=tenant.headers
        )
        r = await client.get(f"/api/v1/pools/{pool['id']}/videos", headers=tenant.headers)
        got = {i["id"]: i["position"] for i in r.json()["items"]}
        assert [i["id"] for i in r.json()["items"]] == [d, c, b, a]  # newest first
        assert got == {d: 0, a: 1, c: 2, b: None}

    async def test_expected_at_follows_the_schedule(self, client, tenant, sample_mp4):
        pool = await setup_pool(client, tenant, state="active")
        ids = await enqueue_n(client, tenant, pool["id"], sample_mp4, 2)
        items = (
            await client.get(
                f"/api/v1/pools/{pool['id']}/videos",
                params={"status": "queued"},
                headers=tenant.headers,
            )
        ).json()["items"]
        assert [i["expected_at"] for i in items] == ["2026-03-03T08:00:00Z", "2026-03-04T08:00:00Z"]
        sched = (
            await client.get(
                f"/api/v1/pools/{pool['id']}/schedule", params={"limit": 3}, headers=tenant.headers
            )
        ).json()
        assert [e["item_id"] for e in sched["items"]] == [*ids, None]

    async def test_expected_at_null_when_paused(self, client, tenant, sample_mp4):
        pool = await setup_pool(client, tenant)
        (item_id,) = await enqueue_n(client, tenant, pool["id"], sample_mp4, 1)
        got = (
            await client.get(f"/api/v1/pools/{pool['id']}/videos/{item_id}", headers=tenant.headers)
        ).json()
        assert got["expected_at"] is None


class TestEditAndDelete:
    async def test_edit_title_caption_options(self, client, tenant, sample_mp4):
        pool = await setup_pool(client, tenant)
        (item_id,) = await enqueue_n(client, tenant, pool["id"], sample_mp4, 1)
        r = await client.patch(
            f"/api/v1/pools/{pool['id']}/videos/{item_id}",
            json={"title": "T", "caption": "C", "options": {"tiktok": {"privacy": "public"}}},
            headers=tenant.headers,
        )
        assert r.status_code == 200
        assert (r.json()["title"], r.json()["caption"], r.json()["options"]) == (
            "T",
            "C",
            {"tiktok": {"privacy": "public"}},
        )

    async def test_bad_edit_named(self, client, tenant, sample_mp4):
        pool = await setup_pool(client, tenant)
        (item_id,) = await enqueue_n(client, tenant, pool["id"], sample_mp4, 1)
        r = await client.patch(
            f"/api/v1/pools/{pool['id']}/videos/{item_id}",
            json={"position": -1, "status": "dispatched", "options": []},
            headers=tenant.headers,
        )
        assert fields(r) == {"position", "status", "options"}

    async def test_delete_removes_item_and_file(self, client, tenant, sample_mp4, settings):
        pool = await setup_pool(client, tenant)
        (item_id,) = await enqueue_n(client, tenant, pool["id"], sample_mp4, 1)
        assert any(p.is_file() for p in settings.media_dir.rglob("*"))
        r = await client.delete(
            f"/api/v1/pools/{pool['id']}/videos/{item_id}", headers=tenant.headers
        )
        assert r.status_code == 204
        assert (
            await client.get(f"/api/v1/pools/{pool['id']}/videos/{item_id}", headers=tenant.headers)
        ).status_code == 404
        assert not any(p.is_file() for p in settings.media_dir.rglob("*"))

    async def test_dispatched_item_cannot_be_deleted_or_edited(
        self, client, tenant, sample_mp4, app
    ):
        pool = await setup_pool(client, tenant)
        (item_id,) = await enqueue_n(client, tenant, pool["id"], sample_mp4, 1)
        async with app.state.uploadpools.maker() as s:
            await s.execute(
                update(QueueItem).where(QueueItem.id == item_id).values(status="dispatched")
            )
            await s.commit()
        base = f"/api/v1/pools/{pool['id']}/videos/{item_id}"
        assert (await client.delete(base, headers=tenant.headers)).status_code == 409
        assert (
            await client.patch(base, json={"title": "x"}, headers=tenant.headers)
        ).status_code == 409

    async def test_delete_pool_with_queue_needs_force(
        self, client, tenant, sample_mp4, settings, app
    ):
        pool = await setup_pool(client, tenant)
        await enqueue_n(client, tenant, pool["id"], sample_mp4, 2)
        r = await client.delete(f"/api/v1/pools/{pool['id']}", headers=tenant.headers)
        assert r.status_code == 409
        assert (await client.get(f"/api/v1/pools/{pool['id']}", headers=tenant.headers)).json()[
            "queued_count"
        ] == 2
        r = await client.delete(
            f"/api/v1/pools/{pool['id']}", params={"force": "true"}, headers=tenant.headers
        )
        assert r.status_code == 204
        assert not any(p.is_file() for p in settings.media_dir.rglob("*"))
        async with app.state.uploadpools.maker() as s:
            assert (await s.scalars(select(Media))).all() == []


class TestRequeue:
    async def test_requeue_one_to_back_and_front(self, client, tenant, sample_mp4, app):
        pool = await setup_pool(client, tenant)
        a, b, c = await enqueue_n(client, tenant, pool["id"], sample_mp4, 3)
        await mark_skipped(app, [a])
        base = f"/api/v1/pools/{pool['id']}/videos"
        assert await queue_order(client, tenant, pool["id"]) == [b, c]
        r = await client.patch(f"{base}/{a}", json={"status": "queued"}, headers=tenant.headers)
        assert r.json()["status"] == "queued"
        assert await queue_order(client, tenant, pool["id"]) == [b, c, a]
        await mark_skipped(app, [c])
        await client.patch(
            f"{base}/{c}", json={"status": "queued", "position": 0}, headers=tenant.headers
        )
        assert await queue_order(client, tenant, pool["id"]) == [c, b, a]

    async def test_requeue_queued_item_is_409(self, client, tenant, sample_mp4):
        pool = await setup_pool(client, tenant)
        (a,) = await enqueue_n(client, tenant, pool["id"], sample_mp4, 1)
        r = await client.patch(
            f"/api/v1/pools/{pool['id']}/videos/{a}",
            json={"status": "queued"},
            headers=tenant.headers,
        )
        # Already queued: asking for "queued" changes nothing.
        assert r.status_code == 200
        assert r.json()["position"] == 0

    async def test_bulk_requeue_front_keeps_relative_order(self, client, tenant, sample_mp4, app):
        pool = await setup_pool(client, tenant)
        a, b, c, d = await enqueue_n(client, tenant, pool["id"], sample_mp4, 4)
        await mark_skipped(app, [a, c])
        r = await client.post(
            f"/api/v1/pools/{pool['id']}/videos/requeue",
            json={"status": "skipped", "to": "front"},
            headers=tenant.headers,
        )
        assert r.json() == {"requeued": 2, "item_ids": [a, c]}
        assert await queue_order(client, tenant, pool["id"]) == [a, c, b, d]

    async def test_bulk_requeue_back(self, client, tenant, sample_mp4, app):
        pool = await setup_pool(client, tenant)
        a, b, c, d = await enqueue_n(client, tenant, pool["id"], sample_mp4, 4)
        await mark_skipped(app, [b, a])
        await client.post(
            f"/api/v1/pools/{pool['id']}/videos/requeue",
            json={"to": "back"},
            headers=tenant.headers,
        )
        assert await queue_order(client, tenant, pool["id"]) == [c, d, a, b]

    async def test_skipped_list_newest_first(self, client, tenant, sample_mp4, app):
        pool = await setup_pool(client, tenant)
        a, b = await enqueue_n(client, tenant, pool["id"], sample_mp4, 2)
        await mark_skipped(app, [a, b])
        r = await client.get(
            f"/api/v1/pools/{pool['id']}/videos",
            params={"status": "skipped"},
            headers=tenant.headers,
        )
        assert [i["id"] for i in r.json()["items"]] == [b, a]
        assert all(i["position"] is None for i in r.json()["items"])

    async def test_bad_requeue_body_named(self, client, tenant):
        pool = await setup_pool(client, tenant)
        r = await client.post(
            f"/api/v1/pools/{pool['id']}/videos/requeue",
            json={"to": "middle"},
            headers=tenant.headers,
        )
        assert fields(r) == {"to"}
