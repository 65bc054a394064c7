from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from apihelpers import fields, make_account, make_pool
from uploadpools.models import IdempotencyRecord, QueueItem

pytestmark = pytest.mark.asyncio


async def setup(client, tenant, allow):  # type: ignore[no-untyped-def]
    acc = await make_account(client, tenant)
    return await make_pool(client, tenant, acc)


async def item_count(app) -> int:  # type: ignore[no-untyped-def]
    async with app.state.uploadpools.maker() as s:
        return int(await s.scalar(select(func.count()).select_from(QueueItem)) or 0)


def post_video(client, tenant, pool_id, body, key):  # type: ignore[no-untyped-def]
    return client.post(
        f"/api/v1/pools/{pool_id}/videos",
        json=body,
        headers=tenant.headers | {"Idempotency-Key": key},
    )


class TestEnqueue:
    async def test_same_key_same_body_returns_first_response(
        self, allow_loopback, client, tenant, app
    ):
        pool = await setup(client, tenant, allow_loopback)
        body = {"video_url": "http://127.0.0.1:9/a.mp4", "title": "a"}
        first = await post_video(client, tenant, pool["id"], body, "k1")
        again = await post_video(client, tenant, pool["id"], body, "k1")
        assert first.status_code == again.status_code == 201
        assert again.json() == first.json()
        assert again.headers.get("Idempotent-Replayed") == "true"
        assert await item_count(app) == 1

    async def test_key_order_of_json_does_not_matter(self, allow_loopback, client, tenant, app):
        pool = await setup(client, tenant, allow_loopback)
        first = await client.post(
            f"/api/v1/pools/{pool['id']}/videos",
            content=b'{"title": "a", "video_url": "http://127.0.0.1:9/a.mp4"}',
            headers=tenant.headers | {"Idempotency-Key": "k", "content-type": "application/json"},
        )
        again = await post_video(
            client, tenant, pool["id"], {"video_url": "http://127.0.0.1:9/a.mp4", "title": "a"}, "k"
        )
        assert again.json()["id"] == first.json()["id"]

    async def test_same_key_different_body_is_422(self, allow_loopback, client, tenant, app):
        pool = await setup(client, tenant, allow_loopback)
        await post_video(client, tenant, pool["id"], {"video_url": "http://127.0.0.1:9/a.mp4"}, "k")
        r = await post_video(
            client, tenant, pool["id"], {"video_url": "http://127.0.0.1:9/b.mp4"}, "k"
        )
        assert fields(r) == {"Idempotency-Key"}
        assert await item_count(app) == 1

    async def test_same_key_other_route_is_422(self, allow_loopback, client, tenant):
        pool = await setup(client, tenant, allow_loopback)
        await post_video(client, tenant, pool["id"], {"video_url": "http://127.0.0.1:9/a.mp4"}, "k")
        r = await client.post(
            "/api/v1/accounts",
            json={"platform": "folder", "name": "x", "config": {"path": "x"}},
            headers=tenant.headers | {"Idempotency-Key": "k"},
        )
        assert fields(r) == {"Idempotency-Key"}

    async def test_keys_are_scoped_to_the_workspace(
        self, allow_loopback, client, tenant, make_tenant, app
    ):
        other = await make_tenant()
        pool_a = await setup(client, tenant, allow_loopback)
        pool_b = await setup(client, other, allow_loopback)
        a = await post_video(
            client, tenant, pool_a["id"], {"video_url": "http://127.0.0.1:9/a.mp4"}, "k"
        )
        b = await post_video(
            client, other, pool_b["id"], {"video_url": "http://127.0.0.1:9/a.mp4"}, "k"
        )
        assert a.status_code == b.status_code == 201
        assert a.json()["id"] != b.json()["id"]

    async def test_failed_request_releases_the_key(self, allow_loopback, client, tenant, app):
        pool = await setup(client, tenant, allow_loopback)
        bad = await post_video(client, tenant, pool["id"], {"video_url": "not a url"}, "k")
        assert bad.status_code == 422
        good = await post_video(client, tenant, pool["id"], {"video_url": "not a url"}, "k")
        assert good.status_code == 422  # the same request, run again: still invalid, nothing kept
        fixed = await post_video(
            client, tenant, pool["id"], {"video_url": "http://127.0.0.1:9/a"}, "k"
        )
        assert fixed.status_code == 201

    async def test_a_used_key_answers_before_the_body_is_judged(
        self, allow_loopback, client, tenant, app
    ):
        pool = await setup(client, tenant, allow_loopback)
        path = f"/api/v1/pools/{pool['id']}/videos"
        h = tenant.headers | {"Idempotency-Key": "k", "content-type": "application/json"}
        first = await client.post(path, content=b'{"video_url": "http://127.0.0.1:9/a"}', headers=h)
        assert first.status_code == 201
        broken = await client.post(path, content=b"{not json", headers=h)
        assert fields(broken) == {"Idempotency-Key"}
        invalid = await client.post(path, content=b'{"video_url": "nope"}', headers=h)
        assert fields(invalid) == {"Idempotency-Key"}
        fresh = h | {"Idempotency-Key": "fresh"}
        assert fields(await client.post(path, content=b"{not json", headers=fresh)) == {"body"}
        assert fields(await client.post(path, content=b"{not json", headers=fresh)) == {"body"}
        async with app.state.uploadpools.maker() as s:
            assert [r.key for r in (await s.scalars(select(IdempotencyRecord))).all()] == ["k"]

    async def test_failure_inside_the_work_releases_the_key_at_once(
        self, allow_loopback, client, tenant, app
    ):
        # The work's transaction has begun (the pool was looked up) when it fails: it is
        # rolled back before the claim is released, so the release need not wait for it.
        pool = await setup(client, tenant, allow_loopback)
        body = {"video_url": "http://127.0.0.1:9/a.mp4"}
        r = await asyncio.wait_for(post_video(client, tenant, "nope", body, "k"), 10)
        assert r.status_code == 404, r.text
        async with app.state.uploadpools.maker() as s:
            assert (await s.scalars(select(IdempotencyRecord))).all() == []
        ok = await asyncio.wait_for(post_video(client, tenant, pool["id"], body, "k"), 10)
        assert ok.status_code == 201, ok.text

    async def test_running_request_is_409(self, allow_loopback, client, tenant, app, clock):
        pool = await setup(client, tenant, allow_loopback)
        body = {"video_url": "http://127.0.0.1:9/a.mp4"}
        # A first request that is still running holds the claim.
        from uploadpools.idempotency import IdempotencyGuard, fingerprint

        guard = IdempotencyGuard(app.state.uploadpools.maker, tenant.workspace_id, "k", clock.now())
        import json

        await guard.begin(
            fingerprint("POST", f"/api/v1/pools/{pool['id']}/videos", json.dumps(body).encode())
        )
        r = await post_video(client, tenant, pool["id"], body, "k")
        assert r.status_code == 409
        assert await item_count(app) == 0
        # A claim whose process died long ago is taken over: nothing was committed with it.
        clock.advance(timedelta(hours=2))
        r = await post_video(client, tenant, pool["id"], body, "k")
        assert r.status_code == 201

    async def test_record_expires_after_a_day(self, allow_loopback, client, tenant, app, clock):
        pool = await setup(client, tenant, allow_loopback)
        body = {"video_url": "http://127.0.0.1:9/a.mp4"}
        first = await post_video(client, tenant, pool["id"], body, "k")
        clock.advance(timedelta(hours=23))
        assert (await post_video(client, tenant, pool["id"], body, "k")).json()[
            "id"
        ] == first.json()["id"]
        clock.advance(timedelta(hours=2))
        later = await post_video(client, tenant, pool["id"], body, "k")
        assert later.json()["id"] != first.json()["id"]

    async def test_hundred_concurrent_same_key_make_one_item(
        self, allow_loopback, client, tenant, app
    ):
        pool = await setup(client, tenant, allow_loopback)
        body = {"video_url": "http://127.0.0.1:9/a.mp4", "title": "once"}
        responses = await asyncio.gather(
            *(post_video(client, tenant, pool["id"], body, "same") for _ in range(100))
        )
        codes = [r.status_code for r in responses]
        assert set(codes) <= {201, 409}, codes
        assert len({r.json()["id"] for r in responses if r.status_code == 201}) == 1
        assert await item_count(app) == 1
        async with app.state.uploadpools.maker() as s:
            recs = (await s.scalars(select(IdempotencyRecord))).all()
        assert [(r.key, r.state) for r in recs] == [("same", "done")]

    async def test_multipart_upload_is_idempotent(self, client, tenant, app, sample_mp4):
        pool = await setup(client, tenant, None)

        async def send(title: str):  # type: ignore[no-untyped-def]
            with sample_mp4.open("rb") as f:
                return await client.post(
                    f"/api/v1/pools/{pool['id']}/videos",
                    files={"file": ("v.mp4", f, "video/mp4")},
                    data={"title": title},
                    headers=tenant.headers | {"Idempotency-Key": "up"},
                )

        first, again = await send("t"), await send("t")
        assert first.status_code == again.status_code == 201
        assert first.json()["id"] == again.json()["id"]
        assert fields(await send("other")) == {"Idempotency-Key"}
        assert await item_count(app) == 1


class TestFailedCommit:
    async def test_a_commit_that_fails_after_recording_releases_the_key(self, app, client, tenant):
        # The response is recorded in the work's transaction; if that commit fails, the
        # claim must still be released, or a retry would be refused (409) for an hour.
        import httpx
        from sqlalchemy import event
        from sqlalchemy.orm import Session

        failed: list[bool] = []

        def fail_once(session: Session) -> None:
            recording = any(
                isinstance(o, IdempotencyRecord) and o.state == "done" for o in session.dirty
            )
            if recording and not failed:
                failed.append(True)
                raise RuntimeError("the disk is full")

        acc = await make_account(client, tenant)
        body = {"name": "p", "timezone": "UTC", "slots": [{"time": "09:00", "account_ids": [acc]}]}
        h = tenant.headers | {"Idempotency-Key": "pool-1"}
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        event.listen(Session, "before_commit", fail_once)
        try:
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
                first = await c.post("/api/v1/pools", json=body, headers=h)
        finally:
            event.remove(Session, "before_commit", fail_once)
        assert first.status_code == 500
        again = await client.post("/api/v1/pools", json=body, headers=h)
        assert again.status_code == 201, again.text


class TestOtherPosts:
    async def test_create_pool_replays(self, client, tenant, app):
        acc = await make_account(client, tenant)
        body = {"name": "p", "timezone": "UTC", "slots": [{"time": "09:00", "account_ids": [acc]}]}
        h = tenant.headers | {"Idempotency-Key": "pool-1"}
        a = await client.post("/api/v1/pools", json=body, headers=h)
        b = await client.post("/api/v1/pools", json=body, headers=h)
        assert a.json() == b.json()
        assert len((await client.get("/api/v1/pools", headers=tenant.headers)).json()["items"]) == 1
