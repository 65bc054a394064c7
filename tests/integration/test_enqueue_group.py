"""Group commit of `video_url` enqueues (`queue/group.py`): the videos waiting for the
store are written in one transaction, each still judged and answered as its own request.

Videos handed to the group together (`asyncio.gather` of `enqueue` calls) are all waiting
before the writer task first runs, so they form one group: no timing is involved."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta

import pytest
from sqlalchemy import event, select, update

from apihelpers import fields, make_account, make_pool
from lockhelpers import waiting_on_a_lock
from uploadpools.exceptions import ValidationFailed
from uploadpools.idempotency import IdempotencyGuard, IdempotencyInProgress, KeyUse, Replay
from uploadpools.models import IdempotencyRecord, Media, Pool, QueueItem, WebhookEvent
from uploadpools.pools.service import PoolNotFound
from uploadpools.queue.schemas import ItemFields
from uploadpools.queue.service import NewVideo

pytestmark = pytest.mark.asyncio

URL = "http://127.0.0.1:9/v.mp4"


def video(tenant, pool_id: str, title: str = "", **over) -> NewVideo:  # type: ignore[no-untyped-def]
    base = dict(
        workspace_id=tenant.workspace_id,
        pool_id=pool_id,
        user_id=tenant.user_id,
        url=URL,
        fields=ItemFields(title=title),
    )
    return NewVideo(**(base | over))  # type: ignore[arg-type]


async def together(app, *videos: NewVideo, claims=None):  # type: ignore[no-untyped-def]
    """Hand the videos to the group at once; each one's answer (dict) or exception."""
    group = app.state.uploadpools.enqueues
    claims = claims or [None] * len(videos)
    out = await asyncio.gather(
        *(group.enqueue(v, c) for v, c in zip(videos, claims, strict=True)),
        return_exceptions=True,
    )
    return [json.loads(o) if isinstance(o, bytes) else o for o in out]


class Commits:
    """Counts COMMITs on the app's engine."""

    def __init__(self, app) -> None:  # type: ignore[no-untyped-def]
        self.n = 0
        self.engine = app.state.uploadpools.engine.sync_engine

    def _count(self, _conn) -> None:  # type: ignore[no-untyped-def]
        self.n += 1

    def __enter__(self) -> Commits:
        event.listen(self.engine, "commit", self._count)
        return self

    def __exit__(self, *exc: object) -> None:
        event.remove(self.engine, "commit", self._count)


async def queued_rows(app, pool_id: str) -> list[QueueItem]:  # type: ignore[no-untyped-def]
    async with app.state.uploadpools.maker() as s:
        return list(
            (
                await s.scalars(
                    select(QueueItem)
                    .where(QueueItem.pool_id == pool_id, QueueItem.status == "queued")
                    .order_by(QueueItem.seq, QueueItem.id)
                )
            ).all()
        )


@pytest.fixture
async def pool(client, tenant, allow_loopback):  # type: ignore[no-untyped-def]
    return await make_pool(client, tenant, await make_account(client, tenant))


class TestOneTransaction:
    async def test_videos_waiting_together_commit_once_in_arrival_order(self, app, tenant, pool):
        with Commits(app) as commits:
            answers = await together(app, *(video(tenant, pool["id"], f"v{i}") for i in range(10)))
        assert commits.n == 1
        assert [a["title"] for a in answers] == [f"v{i}" for i in range(10)]
        assert [a["position"] for a in answers] == list(range(10))
        rows = await queued_rows(app, pool["id"])
        assert [r.id for r in rows] == [a["id"] for a in answers]
        seqs = [r.seq for r in rows]
        assert seqs == sorted(set(seqs))  # strictly increasing, in arrival order

    async def test_answers_match_what_the_api_reads_back(self, app, client, tenant):
        acc = await make_account(client, tenant)
        active = await make_pool(client, tenant, acc, state="active")
        first = await together(app, video(tenant, active["id"], "before"))
        answers = await together(app, *(video(tenant, active["id"], f"v{i}") for i in range(4)))
        for a in [*first, *answers]:
            got = await client.get(
                f"/api/v1/pools/{active['id']}/videos/{a['id']}", headers=tenant.headers
            )
            assert got.json() == a
        # One 09:00 Berlin slot a day, from Monday 12:00 UTC: Tuesday first.
        assert [a["expected_at"] for a in answers] == [
            "2026-03-04T08:00:00Z",
            "2026-03-05T08:00:00Z",
            "2026-03-06T08:00:00Z",
            "2026-03-07T08:00:00Z",
        ]

    async def test_two_pools_in_one_group_keep_their_own_order(self, app, client, tenant, pool):
        other = await make_pool(client, tenant, await make_account(client, tenant, "b"))
        vids = [video(tenant, (pool if i % 2 else other)["id"], f"v{i}") for i in range(8)]
        answers = await together(app, *vids)
        for p in (pool, other):
            mine = [a for a in answers if a["pool_id"] == p["id"]]
            assert [a["position"] for a in mine] == [0, 1, 2, 3]
            assert [r.id for r in await queued_rows(app, p["id"])] == [a["id"] for a in mine]

    async def test_positions_continue_after_the_queue_so_far(self, app, tenant, pool):
        await together(app, *(video(tenant, pool["id"]) for _ in range(3)))
        later = await together(app, *(video(tenant, pool["id"]) for _ in range(3)))
        assert [a["position"] for a in later] == [3, 4, 5]

    async def test_a_new_video_ends_the_empty_and_low_spells(self, app, client, tenant, pool):
        from uploadpools.models import Pool

        other = await make_pool(client, tenant, await make_account(client, tenant, "b"))
        st = app.state.uploadpools
        async with st.maker() as s:
            await s.execute(
                update(Pool)
                .where(Pool.id.in_([pool["id"], other["id"]]))
                .values(empty_since=st.clock.now(), low_since=st.clock.now())
            )
            await s.commit()
        await together(app, video(tenant, pool["id"]))
        async with st.maker() as s:
            spells = {
                p.id: (p.empty_since, p.low_since) for p in (await s.scalars(select(Pool))).all()
            }
        assert spells[pool["id"]] == (None, None)
        assert spells[other["id"]] == (st.clock.now(), st.clock.now())  # not this one's


class TestRefusedInAGroup:
    async def test_foreign_pool_is_404_and_the_others_are_written(
        self, app, tenant, make_tenant, client, pool
    ):
        other = await make_tenant()
        theirs = await make_pool(client, other, await make_account(client, other))
        answers = await together(
            app,
            video(tenant, pool["id"], "a"),
            video(tenant, theirs["id"], "not mine"),
            video(tenant, "no-such-pool", "nowhere"),
            video(tenant, pool["id"], "b"),
        )
        assert isinstance(answers[1], PoolNotFound)
        assert isinstance(answers[2], PoolNotFound)
        assert [answers[0]["position"], answers[3]["position"]] == [0, 1]
        assert [r.title for r in await queued_rows(app, pool["id"])] == ["a", "b"]
        assert await queued_rows(app, theirs["id"]) == []

    async def test_preflight_refusal_names_the_field_and_writes_nothing_for_it(
        self, app, tenant, settings, pool
    ):
        settings.media_constraints = {"folder": {"max_title_chars": 5}}
        answers = await together(
            app,
            video(tenant, pool["id"], "ok"),
            video(tenant, pool["id"], "far too long"),
            video(tenant, pool["id"], "ok 2"),
        )
        assert isinstance(answers[1], ValidationFailed)
        assert [e.field for e in answers[1].errors] == ["title"]
        assert [a["position"] for a in (answers[0], answers[2])] == [0, 1]
        async with app.state.uploadpools.maker() as s:
            sources = (await s.scalars(select(Media.id))).all()
        assert len(sources) == 2  # no media row for the refused one

    async def test_refused_over_http_is_problem_json(self, client, tenant, settings, pool):
        settings.media_constraints = {"folder": {"max_title_chars": 5}}
        r = await client.post(
            f"/api/v1/pools/{pool['id']}/videos",
            json={"video_url": URL, "title": "far too long"},
            headers=tenant.headers,
        )
        assert fields(r) == {"title"}


class TestDatabaseErrorInAGroup:
    async def test_only_the_request_that_breaks_the_write_fails(self, app, tenant, pool):
        # An item naming a user that does not exist breaks a foreign key: the group's
        # transaction fails, and its videos are written again one by one.
        with Commits(app) as commits:
            answers = await together(
                app,
                video(tenant, pool["id"], "a"),
                video(tenant, pool["id"], "broken", user_id="no-such-user"),
                video(tenant, pool["id"], "b"),
            )
        assert isinstance(answers[1], Exception)
        assert not isinstance(answers[1], PoolNotFound)
        assert [answers[0]["position"], answers[2]["position"]] == [0, 1]
        assert [r.title for r in await queued_rows(app, pool["id"])] == ["a", "b"]
        assert commits.n == 2  # "a" and "b", each alone

    async def test_a_failing_store_fails_the_group_at_once(self, app, tenant, pool):
        # Not a value's fault (here: the connection breaks on the items' INSERT): every
        # request gets the error, and the group is not tried again one video at a time.
        engine = app.state.uploadpools.engine.sync_engine
        inserts: list[str] = []

        def broken(_conn, _cursor, statement, *_a) -> None:  # type: ignore[no-untyped-def]
            if statement.startswith("INSERT INTO queue_items"):
                inserts.append(statement)
                raise ConnectionResetError("the database went away")

        event.listen(engine, "before_cursor_execute", broken)
        try:
            answers = await together(app, *(video(tenant, pool["id"]) for _ in range(3)))
        finally:
            event.remove(engine, "before_cursor_execute", broken)
        assert all(isinstance(a, ConnectionResetError) for a in answers), answers
        assert len(inserts) == 1
        assert await queued_rows(app, pool["id"]) == []
        (answer,) = await together(app, video(tenant, pool["id"]))
        assert answer["position"] == 0

    async def test_the_group_keeps_working_after_a_failure(self, app, tenant, pool):
        await together(app, video(tenant, pool["id"], "broken", user_id="no-such-user"))
        (answer,) = await together(app, video(tenant, pool["id"], "fine"))
        assert answer["position"] == 0


class TestIdempotencyInAGroup:
    """A JSON enqueue's Idempotency-Key is claimed in the group's transaction: its record
    is written done, with the answer, together with the item."""

    @staticmethod
    def use(app, tenant, key: str, fp: str = "f") -> KeyUse:  # type: ignore[no-untyped-def]
        return KeyUse(tenant.workspace_id, key, fp, app.state.uploadpools.clock.now())

    async def records(self, app) -> dict[str, IdempotencyRecord]:  # type: ignore[no-untyped-def]
        async with app.state.uploadpools.maker() as s:
            return {r.key: r for r in (await s.scalars(select(IdempotencyRecord))).all()}

    async def test_keyed_and_unkeyed_videos_share_a_group(self, app, tenant, pool):
        with Commits(app) as commits:
            answers = await together(
                app,
                video(tenant, pool["id"], "one"),
                video(tenant, pool["id"], "two"),
                video(tenant, pool["id"], "three"),
                claims=[self.use(app, tenant, "k1"), None, self.use(app, tenant, "k2")],
            )
        assert commits.n == 1
        recs = await self.records(app)
        assert {k: (r.state, r.status_code) for k, r in recs.items()} == {
            "k1": ("done", 201),
            "k2": ("done", 201),
        }
        assert json.loads(recs["k1"].body or b"") == answers[0]
        assert json.loads(recs["k2"].body or b"") == answers[2]

    async def test_keys_in_use_answer_for_their_requests(self, app, tenant, pool):
        (first,) = await together(
            app, video(tenant, pool["id"], "first"), claims=[self.use(app, tenant, "used")]
        )
        answers = await together(
            app,
            video(tenant, pool["id"], "again"),
            video(tenant, pool["id"], "other"),
            video(tenant, pool["id"], "new"),
            video(tenant, pool["id"], "new, twice"),
            video(tenant, pool["id"], "new, other request"),
            claims=[
                self.use(app, tenant, "used"),  # same request: the first answer again
                self.use(app, tenant, "used", "another"),  # 422
                self.use(app, tenant, "new"),
                self.use(app, tenant, "new"),  # the first is still being written: 409
                self.use(app, tenant, "new", "another"),  # 422
            ],
        )
        assert isinstance(answers[0], Replay)
        assert (answers[0].replay_status, json.loads(answers[0].body)) == (201, first)
        assert isinstance(answers[1], ValidationFailed)
        assert [e.field for e in answers[1].errors] == ["Idempotency-Key"]
        assert answers[2]["title"] == "new"
        assert isinstance(answers[3], IdempotencyInProgress)
        assert isinstance(answers[4], ValidationFailed)
        assert [r.title for r in await queued_rows(app, pool["id"])] == ["first", "new"]

    async def test_an_expired_record_frees_its_key(self, app, tenant, pool, clock):
        (first,) = await together(
            app, video(tenant, pool["id"], "first"), claims=[self.use(app, tenant, "k")]
        )
        clock.advance(timedelta(hours=25))
        (later,) = await together(
            app, video(tenant, pool["id"], "later"), claims=[self.use(app, tenant, "k")]
        )
        assert later["id"] != first["id"]
        recs = await self.records(app)
        assert json.loads(recs["k"].body or b"") == later

    async def test_a_running_claim_of_another_request_is_409(self, app, tenant, pool):
        st = app.state.uploadpools
        guard = IdempotencyGuard(st.maker, tenant.workspace_id, "k", st.clock.now())
        await guard.begin("f")  # e.g. an upload with this key, still streaming
        (answer,) = await together(
            app, video(tenant, pool["id"]), claims=[self.use(app, tenant, "k")]
        )
        assert isinstance(answer, IdempotencyInProgress)
        assert await queued_rows(app, pool["id"]) == []

    async def test_a_refused_video_writes_no_record(self, app, tenant, pool):
        answers = await together(
            app,
            video(tenant, "no-such-pool"),
            video(tenant, pool["id"], "ok"),
            claims=[self.use(app, tenant, "k1"), self.use(app, tenant, "k2")],
        )
        assert isinstance(answers[0], PoolNotFound)
        assert set(await self.records(app)) == {"k2"}

    async def test_a_key_recorded_meanwhile_elsewhere_fails_only_its_request(
        self, app, tenant, pool, monkeypatch
    ):
        # Another transaction (another process) records the key after the group looked
        # for it: the group's insert of that record breaks the unique key, and the group
        # is written again one by one, where the key is found in use.
        from uploadpools.idempotency import claim_in, record_done
        from uploadpools.queue import group as group_module

        st = app.state.uploadpools
        async with st.maker() as s:
            await record_done(s, [(self.use(app, tenant, "k", "elsewhere"), 201, b"{}")])
            await s.commit()
        looks: list[int] = []

        async def blind_first(session, uses):  # type: ignore[no-untyped-def]
            looks.append(len(uses))
            if len(looks) == 1:
                return [None] * len(uses)  # as if the record were not committed yet
            return await claim_in(session, uses)

        monkeypatch.setattr(group_module, "claim_in", blind_first)
        answers = await together(
            app,
            video(tenant, pool["id"], "a"),
            video(tenant, pool["id"], "b"),
            claims=[None, self.use(app, tenant, "k")],
        )
        assert answers[0]["position"] == 0
        assert isinstance(answers[1], ValidationFailed)  # the key of another request
        assert [r.title for r in await queued_rows(app, pool["id"])] == ["a"]

    async def test_concurrent_same_key_over_http_make_one_item(self, app, client, tenant, pool):
        body = {"video_url": URL, "title": "once"}
        h = tenant.headers | {"Idempotency-Key": "same"}
        others = [
            client.post(
                f"/api/v1/pools/{pool['id']}/videos",
                json={"video_url": URL},
                headers=tenant.headers,
            )
            for _ in range(5)
        ]
        keyed = [
            client.post(f"/api/v1/pools/{pool['id']}/videos", json=body, headers=h)
            for _ in range(5)
        ]
        responses = await asyncio.gather(*keyed, *others)
        assert all(r.status_code == 201 for r in responses[5:])
        made = {r.json()["id"] for r in responses[:5] if r.status_code == 201}
        assert len(made) == 1
        assert {r.status_code for r in responses[:5]} <= {201, 409}
        replay = await client.post(f"/api/v1/pools/{pool['id']}/videos", json=body, headers=h)
        assert replay.json()["id"] in made
        assert len(await queued_rows(app, pool["id"])) == 6


class TestWebhookOutbox:
    async def test_one_item_queued_event_per_video_in_order(
        self, app, client, tenant, pool, allow_loopback, receiver
    ):
        r = await client.post(
            "/api/v1/webhooks",
            json={"url": receiver.url, "events": ["item.queued"]},
            headers=tenant.headers,
        )
        assert r.status_code == 201, r.text
        answers = await together(app, *(video(tenant, pool["id"], f"v{i}") for i in range(3)))
        async with app.state.uploadpools.maker() as s:
            evs = (await s.scalars(select(WebhookEvent).order_by(WebhookEvent.id))).all()
        assert [e.data["item"]["id"] for e in evs] == [a["id"] for a in answers]
        assert {e.type for e in evs} == {"item.queued"}


class TestOverHttp:
    async def test_concurrent_requests_get_distinct_positions_in_queue_order(
        self, app, client, tenant, pool
    ):
        responses = await asyncio.gather(
            *(
                client.post(
                    f"/api/v1/pools/{pool['id']}/videos",
                    json={"video_url": URL, "title": f"v{i}"},
                    headers=tenant.headers,
                )
                for i in range(20)
            )
        )
        assert all(r.status_code == 201 for r in responses)
        by_position = sorted(responses, key=lambda r: r.json()["position"])
        assert [r.json()["position"] for r in by_position] == list(range(20))
        assert [r.id for r in await queued_rows(app, pool["id"])] == [
            r.json()["id"] for r in by_position
        ]

    async def test_closed_group_answers_503(self, app, client, tenant, pool):
        await app.state.uploadpools.enqueues.aclose()
        r = await client.post(
            f"/api/v1/pools/{pool['id']}/videos", json={"video_url": URL}, headers=tenant.headers
        )
        assert r.status_code == 503
        assert r.headers["content-type"].startswith("application/problem+json")


class TestDirectRoute:
    """The enqueue route is served without FastAPI's routing (`DIRECT_ROUTES`): it must
    answer exactly as the FastAPI route it stands in for."""

    async def test_answers_as_the_fastapi_route_does(self, app, client, tenant, make_tenant, pool):
        from uploadpools.queue.endpoints import DIRECT_ROUTES

        other = await make_tenant()
        theirs = await make_pool(client, other, await make_account(client, other))
        videos = f"/api/v1/pools/{pool['id']}/videos"
        json_type = {"content-type": "application/json"}
        cases = [
            (videos, {}, {"video_url": URL}),
            (videos, {"Authorization": "Basic dXNlcjpwYXNzd29yZA=="}, {"video_url": URL}),
            (videos, {"Authorization": "Bearer "}, {"video_url": URL}),
            (videos, {"Authorization": "Bearer up_0123456789ab_abc"}, {"video_url": URL}),
            (videos, tenant.headers | json_type, b"{not json"),
            (videos, tenant.headers, ["a list"]),
            (videos, tenant.headers, {"video_url": "not a url", "title": 5, "extra": 1}),
            (videos, tenant.headers, {"video_url": "http://10.1.2.3/v.mp4"}),
            (f"/api/v1/pools/{theirs['id']}/videos", tenant.headers, {"video_url": URL}),
            ("/api/v1/pools/nope/videos", tenant.headers, {"video_url": URL}),
            (videos, tenant.headers | {"Idempotency-Key": "k" * 256}, {"video_url": URL}),
        ]

        async def answers():  # type: ignore[no-untyped-def]
            out = []
            for path, headers, body in cases:
                if isinstance(body, bytes):
                    r = await client.post(path, content=body, headers=headers)
                else:
                    r = await client.post(path, json=body, headers=headers)
                out.append(
                    (
                        r.status_code,
                        r.headers.get("content-type"),
                        r.headers.get("www-authenticate"),
                        r.json(),
                    )
                )
            return out

        assert app.router.routes[0] is DIRECT_ROUTES[0]  # matched before any other route
        direct = await answers()
        app.router.routes.remove(DIRECT_ROUTES[0])
        via_fastapi = await answers()
        assert [a[0] for a in direct] == [401, 401, 401, 401, 422, 422, 422, 422, 404, 404, 422]
        assert direct == via_fastapi

    async def test_keyed_replay_is_the_same_through_either_route(self, app, client, tenant, pool):
        from uploadpools.queue.endpoints import DIRECT_ROUTES

        path = f"/api/v1/pools/{pool['id']}/videos"
        h = tenant.headers | {"Idempotency-Key": "k"}
        first = await client.post(path, json={"video_url": URL}, headers=h)
        app.router.routes.remove(DIRECT_ROUTES[0])
        again = await client.post(path, json={"video_url": URL}, headers=h)
        assert first.status_code == again.status_code == 201
        assert again.headers["idempotent-replayed"] == "true"
        assert again.json() == first.json()
        fresh = await client.post(path, json={"video_url": URL}, headers=tenant.headers)
        assert set(fresh.json()) == set(first.json())
        assert fresh.json()["position"] == 1


class TestFetcherGivesWay:
    async def test_a_trickle_of_enqueues_is_not_busy(self, app, tenant, pool):
        st = app.state.uploadpools
        assert st.fetcher.yield_to == st.enqueues.recently_busy
        for _ in range(3):
            await together(app, video(tenant, pool["id"]))  # one at a time
        assert not st.enqueues.recently_busy(within_s=3600)

    async def test_enqueues_crowding_in_are_busy(self, app, tenant, pool):
        st = app.state.uploadpools
        await together(app, *(video(tenant, pool["id"]) for _ in range(3)))
        assert st.enqueues.recently_busy(within_s=3600)
        assert not st.enqueues.recently_busy(within_s=0)  # nothing waiting any more

    async def test_one_video_at_a_time_while_yielding(self, app, tenant, pool):
        st = app.state.uploadpools
        await together(app, *(video(tenant, pool["id"]) for _ in range(3)))
        st.fetcher.yield_to = lambda: True
        assert st.fetcher.yielding()
        assert await st.fetcher.run_once(1) == 1  # (the fetch itself fails: port 9)
        st.fetcher.yield_to = lambda: False
        assert await st.fetcher.run_once() == 2


class TestAPoolAnotherTransactionHolds:
    """PostgreSQL: a pool whose row another transaction holds (a ticker preparing an
    instant holds its pools until the instant) does not hold up the other pools' videos;
    its own wait for it, in arrival order. (SQLite has no row locks: its one writer
    serialises everything.)"""

    @pytest.fixture(autouse=True)
    def _postgres(self, database_url):  # type: ignore[no-untyped-def]
        if not database_url.startswith("postgresql"):
            pytest.skip("row locks: PostgreSQL")

    @staticmethod
    async def hold(app, pool_id: str):  # type: ignore[no-untyped-def]
        """A transaction holding the pool's row lock until it ends."""
        s = app.state.uploadpools.maker()
        await s.execute(select(Pool.id).where(Pool.id == pool_id).with_for_update())
        return s

    async def test_the_other_pools_are_written_meanwhile_and_its_videos_keep_their_order(
        self, app, client, tenant, pool
    ):
        other = await make_pool(client, tenant, await make_account(client, tenant, "b"))
        group = app.state.uploadpools.enqueues
        holder = await self.hold(app, pool["id"])
        try:
            first = asyncio.create_task(group.enqueue(video(tenant, pool["id"], "a1")))
            async with asyncio.timeout(30):  # (without the second writer: forever)
                (b1,) = await together(app, video(tenant, other["id"], "b1"))
                second = asyncio.create_task(group.enqueue(video(tenant, pool["id"], "a2")))
                (b2,) = await together(app, video(tenant, other["id"], "b2"))
            assert [b1["position"], b2["position"]] == [0, 1]
            assert not first.done() and not second.done()
            assert await queued_rows(app, pool["id"]) == []
        finally:
            await holder.rollback()
            await holder.close()
        a1, a2 = json.loads(await first), json.loads(await second)
        assert [(a1["title"], a1["position"]), (a2["title"], a2["position"])] == [
            ("a1", 0),
            ("a2", 1),
        ]
        assert [r.id for r in await queued_rows(app, pool["id"])] == [a1["id"], a2["id"]]
        # Written: later videos for the pool go the usual way again.
        (a3,) = await together(app, video(tenant, pool["id"], "a3"))
        assert a3["position"] == 2

    async def test_a_keyed_video_for_it_is_claimed_when_it_is_written(self, app, tenant, pool):
        """Nothing of a video for a held pool is written before the pool is free, not
        even its Idempotency-Key's claim; then the key is recorded with the answer."""
        use = TestIdempotencyInAGroup.use
        records = TestIdempotencyInAGroup().records
        holder = await self.hold(app, pool["id"])
        try:
            task = asyncio.create_task(
                app.state.uploadpools.enqueues.enqueue(
                    video(tenant, pool["id"], "keyed"), use(app, tenant, "k")
                )
            )
            async with asyncio.timeout(10):  # the second writer waits for the lock
                while not await waiting_on_a_lock(app):
                    await asyncio.sleep(0.02)
            assert await records(app) == {}
        finally:
            await holder.rollback()
            await holder.close()
        answer = json.loads(await task)
        recs = await records(app)
        assert (recs["k"].state, recs["k"].status_code) == ("done", 201)
        assert json.loads(recs["k"].body or b"") == answer
        (replay,) = await together(app, video(tenant, pool["id"]), claims=[use(app, tenant, "k")])
        assert isinstance(replay, Replay) and json.loads(replay.body) == answer
