from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta

import httpx
import pytest

from apihelpers import fields, make_account, make_pool
from uploadpools.app import create_app
from uploadpools.auth.service import create_api_key
from uploadpools.config import Settings
from uploadpools.kit import ids
from uploadpools.models import Membership, QuotaEntry, User, Workspace
from uploadpools.notifications.service import notify
from uploadpools.store.engine import session_scope

pytestmark = pytest.mark.asyncio

API = "/api/v1"
NOTE_FIELDS = {"id", "level", "kind", "message", "pool_id", "item_id", "created_at", "read_at"}


def iso(when: datetime) -> str:
    return when.astimezone(UTC).isoformat().replace("+00:00", "Z")


async def get_usage(client, tenant) -> dict:  # type: ignore[no-untyped-def]
    r = await client.get(f"{API}/usage", headers=tenant.headers)
    assert r.status_code == 200, r.text
    return r.json()


async def add_entries(app, clock, *entries: tuple[str, str, str | None, date]) -> None:  # type: ignore[no-untyped-def]
    """Quota rows as the engine writes them: (owner_id, workspace_id, user_id, period)."""
    async with session_scope(app.state.uploadpools.maker) as s:
        for n, (owner_id, workspace_id, user_id, period) in enumerate(entries):
            s.add(
                QuotaEntry(
                    owner_id=owner_id,
                    workspace_id=workspace_id,
                    user_id=user_id,
                    period_start=period,
                    state="consumed" if n % 2 else "reserved",
                    created_at=clock.now(),
                )
            )


class TestUsage:
    async def test_free_owner_starts_at_zero_of_thirteen(self, client, tenant):
        assert await get_usage(client, tenant) == {
            "plan": "free",
            "period_start": "2026-03-01T00:00:00Z",
            "period_end": "2026-04-01T00:00:00Z",
            "used": 0,
            "limit": 13,
            "by_member": [],
        }

    async def test_owner_quota_is_the_limit(self, client, make_tenant):
        t = await make_tenant(quota=5)
        assert (await get_usage(client, t))["limit"] == 5

    async def test_paid_owner_is_unlimited(self, client, make_tenant, app, clock):
        t = await make_tenant(plan="paid", quota=5)
        await add_entries(app, clock, (t.user_id, t.workspace_id, t.user_id, date(2026, 3, 1)))
        u = await get_usage(client, t)
        assert (u["plan"], u["limit"], u["used"]) == ("paid", None, 1)

    async def test_period_is_the_utc_calendar_month_of_the_clock(self, client, tenant, clock):
        clock.set(datetime(2026, 12, 31, 23, 30, tzinfo=UTC))
        u = await get_usage(client, tenant)
        assert (u["period_start"], u["period_end"]) == (
            "2026-12-01T00:00:00Z",
            "2027-01-01T00:00:00Z",
        )
        clock.set(datetime(2027, 1, 1, tzinfo=UTC))
        u = await get_usage(client, tenant)
        assert (u["period_start"], u["period_end"]) == (
            "2027-01-01T00:00:00Z",
            "2027-02-01T00:00:00Z",
        )
        # 23:30Z on 31 March is already April in Berlin; the quota month is still March.
        clock.set(datetime(2026, 3, 31, 23, 30, tzinfo=UTC))
        assert (await get_usage(client, tenant))["period_end"] == "2026-04-01T00:00:00Z"

    async def test_counts_every_entry_of_the_owner_in_the_period(
        self, client, make_tenant, app, clock
    ):
        owner = await make_tenant()
        stranger = await make_tenant()
        now = clock.now()
        async with session_scope(app.state.uploadpools.maker) as s:
            member = User(email="member@example.com", password_hash="!", created_at=now)
            s.add(member)
            await s.flush()
            s.add(
                Membership(
                    workspace_id=owner.workspace_id,
                    user_id=member.id,
                    role="member",
                    created_at=now,
                )
            )
            second = Workspace(name="Agency client", owner_id=owner.user_id, created_at=now)
            s.add(second)
            await s.flush()
            _, second_key = await create_api_key(
                s, workspace_id=second.id, user_id=owner.user_id, name="second", now=now
            )
        march, feb, april = date(2026, 3, 1), date(2026, 2, 1), date(2026, 4, 1)
        await add_entries(
            app,
            clock,
            # counted: the owner's own, a member's, another workspace of the same owner
            (owner.user_id, owner.workspace_id, owner.user_id, march),
            (owner.user_id, owner.workspace_id, member.id, march),
            (owner.user_id, second.id, member.id, march),
            (owner.user_id, second.id, None, march),
            # not counted: last month, next month, another owner
            (owner.user_id, owner.workspace_id, owner.user_id, feb),
            (owner.user_id, second.id, member.id, april),
            (stranger.user_id, stranger.workspace_id, stranger.user_id, march),
        )
        assert (await get_usage(client, owner))["used"] == 4
        assert (await get_usage(client, stranger))["used"] == 1
        # Every workspace of the owner sees the owner's one quota.
        r = await client.get(f"{API}/usage", headers={"Authorization": f"Bearer {second_key}"})
        first = await get_usage(client, owner)
        second_usage = r.json()
        assert {k: v for k, v in second_usage.items() if k != "by_member"} == {
            k: v for k, v in first.items() if k != "by_member"
        }
        # `by_member` is each workspace's own share: no member of another workspace shows.
        assert sorted((m["user_id"], m["used"]) for m in first["by_member"]) == sorted(
            [(owner.user_id, 1), (member.id, 1)]
        )
        assert sorted((m["user_id"] or "", m["used"]) for m in second_usage["by_member"]) == sorted(
            [(member.id, 1), ("", 1)]
        )

    async def test_last_month_stops_counting_when_the_month_turns(self, client, tenant, app, clock):
        clock.set(datetime(2026, 12, 31, 23, 30, tzinfo=UTC))
        await add_entries(
            app,
            clock,
            *[(tenant.user_id, tenant.workspace_id, tenant.user_id, date(2026, 12, 1))] * 3,
        )
        assert (await get_usage(client, tenant))["used"] == 3
        clock.advance(minutes=30)
        u = await get_usage(client, tenant)
        assert (u["used"], u["period_start"]) == (0, "2027-01-01T00:00:00Z")


@pytest.fixture
def ticking_ids(monkeypatch):  # type: ignore[no-untyped-def]
    """Ids order by the host's millisecond, and notes made back to back can share one.
    Give each id its own millisecond so order tests do not depend on host timing (the
    same-millisecond case has its own test below)."""

    class Ticking:
        ms = time.time_ns() // 1_000_000

        def time_ns(self) -> int:
            Ticking.ms += 1
            return Ticking.ms * 1_000_000

    monkeypatch.setattr(ids, "time", Ticking())


async def make_notes(app, clock, tenant, n: int, **kw) -> list[str]:  # type: ignore[no-untyped-def]
    """`n` notifications, one a minute from the clock's now; returns ids, oldest first."""
    made = []
    async with session_scope(app.state.uploadpools.maker) as s:
        for i in range(n):
            note = await notify(
                s,
                workspace_id=tenant.workspace_id,
                level=("info", "warning", "error")[i % 3],
                kind=kw.get("kind", "pool.running_low"),
                message=f"note {i}",
                now=clock.now(),
                pool_id=kw.get("pool_id"),
                item_id=kw.get("item_id"),
            )
            made.append(note.id)
            clock.advance(minutes=1)
    return made


async def list_notes(client, tenant, **params) -> dict:  # type: ignore[no-untyped-def]
    r = await client.get(f"{API}/notifications", params=params, headers=tenant.headers)
    assert r.status_code == 200, r.text
    return r.json()


class TestNotifications:
    async def test_newest_first_with_every_field(self, client, tenant, app, clock, ticking_ids):
        assert await list_notes(client, tenant) == {"items": [], "next_cursor": None}
        start = clock.now()
        made = await make_notes(app, clock, tenant, 3)
        page = await list_notes(client, tenant)
        assert page["next_cursor"] is None
        assert [n["id"] for n in page["items"]] == made[::-1]
        newest = page["items"][0]
        assert set(newest) == NOTE_FIELDS
        assert newest == {
            "id": made[2],
            "level": "error",
            "kind": "pool.running_low",
            "message": "note 2",
            "pool_id": None,
            "item_id": None,
            "created_at": iso(start + timedelta(minutes=2)),
            "read_at": None,
        }

    async def test_mark_read_sets_read_at_to_now_once(self, client, tenant, app, clock):
        (note,) = await make_notes(app, clock, tenant, 1)
        clock.set(datetime(2026, 3, 5, 9, 30, tzinfo=UTC))
        url = f"{API}/notifications/{note}/read"
        r = await client.post(url, headers=tenant.headers)
        assert r.status_code == 200, r.text
        assert set(r.json()) == NOTE_FIELDS
        assert r.json()["read_at"] == "2026-03-05T09:30:00Z"
        clock.advance(hours=1)
        again = await client.post(url, headers=tenant.headers)
        assert again.status_code == 200
        assert again.json() == r.json()
        listed = (await list_notes(client, tenant))["items"]
        assert listed[0]["read_at"] == "2026-03-05T09:30:00Z"

    async def test_unread_filter(self, client, tenant, app, clock, ticking_ids):
        a, b, c = await make_notes(app, clock, tenant, 3)
        await client.post(f"{API}/notifications/{b}/read", headers=tenant.headers)
        unread = await list_notes(client, tenant, unread="true")
        assert [n["id"] for n in unread["items"]] == [c, a]
        assert all(n["read_at"] is None for n in unread["items"])
        everything = await list_notes(client, tenant, unread="false")
        assert [n["id"] for n in everything["items"]] == [c, b, a]

    async def test_pages_newest_first(self, client, tenant, app, clock, ticking_ids):
        made = await make_notes(app, clock, tenant, 5)
        seen, sizes, cursor = [], [], None
        while True:
            page = await list_notes(
                client, tenant, limit=2, **({"cursor": cursor} if cursor else {})
            )
            sizes.append(len(page["items"]))
            seen += [n["id"] for n in page["items"]]
            cursor = page["next_cursor"]
            if not cursor:
                break
        assert sizes == [2, 2, 1]
        assert seen == made[::-1]

    async def test_unread_pages(self, client, tenant, app, clock, ticking_ids):
        made = await make_notes(app, clock, tenant, 5)
        for note in made[1::2]:
            await client.post(f"{API}/notifications/{note}/read", headers=tenant.headers)
        first = await list_notes(client, tenant, unread="true", limit=2)
        rest = await list_notes(client, tenant, unread="true", limit=2, cursor=first["next_cursor"])
        assert [n["id"] for n in first["items"] + rest["items"]] == [made[4], made[2], made[0]]
        assert rest["next_cursor"] is None

    async def test_links_to_its_pool(self, client, tenant, app, clock):
        acc = await make_account(client, tenant)
        pool = await make_pool(client, tenant, acc)
        (note,) = await make_notes(app, clock, tenant, 1, kind="pool.empty", pool_id=pool["id"])
        item = (await list_notes(client, tenant))["items"][0]
        assert (item["id"], item["kind"], item["pool_id"]) == (note, "pool.empty", pool["id"])

    async def test_bad_limit_and_cursor_named(self, client, tenant):
        r = await client.get(f"{API}/notifications", params={"limit": 501}, headers=tenant.headers)
        assert fields(r) == {"limit"}
        r = await client.get(f"{API}/notifications", params={"cursor": "!"}, headers=tenant.headers)
        assert fields(r) == {"cursor"}

    async def test_unknown_id_is_404_problem(self, client, tenant):
        r = await client.post(f"{API}/notifications/nope/read", headers=tenant.headers)
        assert r.status_code == 404
        assert r.headers["content-type"].startswith("application/problem+json")
        assert r.json()["status"] == 404

    async def test_same_millisecond_notes_still_list_newest_first(
        self, client, tenant, app, clock, monkeypatch
    ):
        class OneMillisecond:
            def time_ns(self) -> int:
                return 1_780_000_000_000 * 1_000_000

        monkeypatch.setattr(ids, "time", OneMillisecond())
        made = await make_notes(app, clock, tenant, 10)
        assert [n["id"] for n in (await list_notes(client, tenant))["items"]] == made[::-1]

    async def test_idempotency_key_reused_for_another_notification_is_422(
        self, client, tenant, app, clock
    ):
        a, b = await make_notes(app, clock, tenant, 2)
        headers = tenant.headers | {"Idempotency-Key": "read-1"}
        r = await client.post(f"{API}/notifications/{a}/read", headers=headers)
        assert r.status_code == 200
        r = await client.post(f"{API}/notifications/{b}/read", headers=headers)
        assert fields(r) == {"Idempotency-Key"}


# The paths of API.md's tables that this service implements, by method.
CONTRACT = {
    ("get", "/accounts"),
    ("post", "/accounts"),
    ("get", "/accounts/{}"),
    ("patch", "/accounts/{}"),
    ("delete", "/accounts/{}"),
    ("post", "/pools"),
    ("get", "/pools"),
    ("get", "/pools/{}"),
    ("patch", "/pools/{}"),
    ("delete", "/pools/{}"),
    ("post", "/pools/{}/slots"),
    ("patch", "/pools/{}/slots/{}"),
    ("delete", "/pools/{}/slots/{}"),
    ("post", "/pools/{}/slots/{}/fire"),
    ("get", "/pools/{}/schedule"),
    ("get", "/pools/{}/firings"),
    ("post", "/pools/{}/videos"),
    ("get", "/pools/{}/videos"),
    ("get", "/pools/{}/videos/{}"),
    ("patch", "/pools/{}/videos/{}"),
    ("delete", "/pools/{}/videos/{}"),
    ("post", "/pools/{}/videos/requeue"),
    ("get", "/usage"),
    ("get", "/notifications"),
    ("post", "/notifications/{}/read"),
    ("get", "/webhooks"),
    ("post", "/webhooks"),
    ("delete", "/webhooks/{}"),
}


@pytest.fixture
async def docs_client(tmp_path) -> AsyncIterator[httpx.AsyncClient]:  # type: ignore[no-untyped-def]
    """The served documents need no database: one run, no lifespan."""
    app = create_app(
        Settings(  # type: ignore[call-arg]
            _env_file=None,
            env="test",
            data_dir=tmp_path,
            database_url=f"sqlite:///{tmp_path / 'unused.db'}",
            secret_key="x" * 40,
        ),
        run_background=False,
    )
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
        yield c


async def openapi(client) -> dict:  # type: ignore[no-untyped-def]
    r = await client.get("/openapi.json")
    assert r.status_code == 200
    return r.json()


class TestServedDocuments:
    async def test_openapi_lists_every_contract_path(self, docs_client):
        doc = await openapi(docs_client)
        served = {
            (method, re.sub(r"\{[^}]+\}", "{}", path.removeprefix(API)))
            for path, ops in doc["paths"].items()
            if path.startswith(API)
            for method in ops
        }
        assert CONTRACT - served == set()

    async def test_enqueue_documents_json_and_multipart(self, docs_client):
        doc = await openapi(docs_client)
        body = doc["paths"][f"{API}/pools/{{pool_id}}/videos"]["post"]["requestBody"]
        assert {"application/json", "multipart/form-data"} <= set(body["content"])

    async def test_openapi_declares_bearer_auth(self, docs_client):
        doc = await openapi(docs_client)
        schemes = doc.get("components", {}).get("securitySchemes", {})
        bearer = {n for n, s in schemes.items() if s.get("scheme", "").lower() == "bearer"}
        assert bearer
        for path, ops in doc["paths"].items():
            for method, op in ops.items():
                declared = op.get("security", doc.get("security", []))
                assert any(set(req) & bearer for req in declared), (method, path)

    async def test_docs_page_answers(self, docs_client):
        r = await docs_client.get("/docs")
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/html")
        assert "/openapi.json" in r.text
