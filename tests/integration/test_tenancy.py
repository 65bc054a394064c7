"""Nothing crosses workspaces: another workspace's object is 404, never 403, and untouched.

`CROSS_TENANT` names every route that takes an id; `test_table_covers_every_id_route`
fails when a route is added without a row here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update

from apihelpers import fields, make_account, make_pool
from uploadpools.app import create_app
from uploadpools.config import Settings
from uploadpools.kit.crypto import generate_api_key
from uploadpools.models import ApiKey, Firing, QueueItem
from uploadpools.notifications.service import notify
from uploadpools.store.engine import session_scope

pytestmark = pytest.mark.asyncio

API = "/api/v1"
PUBLIC_VIDEO_URL = "https://93.184.216.34/v.mp4"  # never fetched: no background tasks run
PUBLIC_HOOK_URL = "https://93.184.216.34/hook"  # never called: no background tasks run
MULTIPART = object()  # body marker: a multipart upload of the sample video

# (method, path template, body). Placeholders: A's objects ({a_account}, {a_pool}, {a_slot},
# {a_item} queued, {a_skipped}, {a_note}) and B's own ({b_account}, {b_pool}), so that
# A's child ids are also tried under B's own pool.
CROSS_TENANT: list[tuple[str, str, Any]] = [
    ("GET", "/accounts/{a_account}", None),
    ("PATCH", "/accounts/{a_account}", {"name": "taken", "status": "disabled"}),
    ("PATCH", "/accounts/{a_account}", {"config": {"path": "elsewhere"}}),
    ("DELETE", "/accounts/{a_account}", None),
    ("DELETE", "/accounts/{a_account}?force=true", None),
    ("GET", "/pools/{a_pool}", None),
    ("PATCH", "/pools/{a_pool}", {"name": "taken", "state": "active", "grace_minutes": 1}),
    ("DELETE", "/pools/{a_pool}", None),
    ("DELETE", "/pools/{a_pool}?force=true", None),
    ("POST", "/pools/{a_pool}/slots", {"time": "10:00", "account_ids": ["{b_account}"]}),
    ("POST", "/pools/{a_pool}/slots", {"time": "10:00", "account_ids": ["{a_account}"]}),
    ("PATCH", "/pools/{a_pool}/slots/{a_slot}", {"time": "10:00"}),
    ("PATCH", "/pools/{b_pool}/slots/{a_slot}", {"time": "10:00"}),
    ("PATCH", "/pools/{b_pool}/slots/{a_slot}", {"account_ids": ["{b_account}"]}),
    ("DELETE", "/pools/{a_pool}/slots/{a_slot}", None),
    ("DELETE", "/pools/{b_pool}/slots/{a_slot}", None),
    ("POST", "/pools/{a_pool}/slots/{a_slot}/fire", None),
    ("POST", "/pools/{b_pool}/slots/{a_slot}/fire", None),
    ("GET", "/pools/{a_pool}/schedule", None),
    ("GET", "/pools/{a_pool}/schedule?assume_active=true", None),
    ("GET", "/pools/{a_pool}/firings", None),
    ("POST", "/pools/{a_pool}/videos", {"video_url": PUBLIC_VIDEO_URL, "title": "x"}),
    ("POST", "/pools/{a_pool}/videos", MULTIPART),
    ("GET", "/pools/{a_pool}/videos", None),
    ("GET", "/pools/{a_pool}/videos?status=queued", None),
    ("GET", "/pools/{a_pool}/videos?status=skipped", None),
    ("POST", "/pools/{a_pool}/videos/requeue", {"status": "skipped", "to": "front"}),
    ("POST", "/pools/{b_pool}/videos/requeue", {"status": "skipped", "to": "front"}),
    ("GET", "/pools/{a_pool}/videos/{a_item}", None),
    ("GET", "/pools/{b_pool}/videos/{a_item}", None),
    ("PATCH", "/pools/{a_pool}/videos/{a_item}", {"title": "taken", "position": 5}),
    ("PATCH", "/pools/{b_pool}/videos/{a_item}", {"title": "taken"}),
    ("PATCH", "/pools/{a_pool}/videos/{a_skipped}", {"status": "queued", "position": 0}),
    ("PATCH", "/pools/{b_pool}/videos/{a_skipped}", {"status": "queued"}),
    ("DELETE", "/pools/{a_pool}/videos/{a_item}", None),
    ("DELETE", "/pools/{b_pool}/videos/{a_item}", None),
    ("POST", "/notifications/{a_note}/read", None),
    ("DELETE", "/webhooks/{a_webhook}", None),
    ("POST", "/webhooks/{a_webhook}/rotate-secret", None),
    ("POST", "/webhooks/{a_webhook}/test", None),
    ("GET", "/webhooks/{a_webhook}/deliveries", None),
    ("POST", "/webhooks/{a_webhook}/deliveries/{a_webhook_delivery}/resend", None),
    ("POST", "/webhooks/{b_webhook}/deliveries/{a_webhook_delivery}/resend", None),
]

# Rows that B may call on B's own pool: they answer normally but must not touch A.
OWN_POOL_OK = {("POST", "/pools/{b_pool}/videos/requeue")}


def route_key(method: str, path: str) -> tuple[str, str]:
    """`("GET", "/api/v1/pools/{}/videos/{}")`: parameter names and query dropped."""
    return method, re.sub(r"\{[^}]+\}", "{}", path.split("?", 1)[0])


def api_routes(app) -> set[tuple[str, str]]:  # type: ignore[no-untyped-def]
    """Every (method, path) of the app, however the FastAPI version nests included routers."""
    try:
        from fastapi.routing import iter_route_contexts
    except ImportError:  # older FastAPI: included routes are flattened into app.routes
        routes: Any = app.routes
    else:
        routes = iter_route_contexts(app.routes)
    return {
        (method, route.path)
        for route in routes
        if (route.path or "").startswith(API)
        for method in (route.methods or ())
        if method != "HEAD"
    }


@dataclass
class World:
    ids: dict[str, str]
    a: Any
    b: Any

    def path(self, template: str) -> str:
        return API + template.format(**self.ids)

    def body(self, body: Any) -> Any:
        if isinstance(body, str):
            return body.format(**self.ids)
        if isinstance(body, list):
            return [self.body(v) for v in body]
        if isinstance(body, dict):
            return {k: self.body(v) for k, v in body.items()}
        return body


async def build_world(client, app, make_tenant, clock) -> World:  # type: ignore[no-untyped-def]
    a, b = await make_tenant(), await make_tenant()
    a_account = await make_account(client, a, "a-out")
    a_pool = await make_pool(client, a, a_account, name="A's pool")
    b_account = await make_account(client, b, "b-out")
    b_pool = await make_pool(client, b, b_account, name="B's pool")
    items = []
    for title in ("first", "second"):
        r = await client.post(
            f"{API}/pools/{a_pool['id']}/videos",
            json={"video_url": PUBLIC_VIDEO_URL, "title": title},
            headers=a.headers,
        )
        assert r.status_code == 201, r.text
        items.append(r.json()["id"])
    a_item, a_skipped = items
    async with session_scope(app.state.uploadpools.maker) as s:
        await s.execute(
            update(QueueItem)
            .where(QueueItem.id == a_skipped)
            .values(status="skipped", skip_reason="platform_error")
        )
        s.add(
            Firing(
                pool_id=a_pool["id"],
                slot_id=a_pool["slots"][0]["id"],
                kind="scheduled",
                local_date=date(2026, 3, 2),
                scheduled_for=datetime(2026, 3, 2, 8, tzinfo=UTC),
                fired_at=datetime(2026, 3, 2, 8, tzinfo=UTC),
                outcome="skipped",
                item_id=a_skipped,
            )
        )
        note = await notify(
            s,
            workspace_id=a.workspace_id,
            level="warning",
            kind="item.skipped",
            message="second was skipped",
            now=clock.now(),
            pool_id=a_pool["id"],
            item_id=a_skipped,
        )
    hooks = {}
    for name, tenant in (("a_webhook", a), ("b_webhook", b)):
        r = await client.post(
            f"{API}/webhooks",
            json={"url": PUBLIC_HOOK_URL, "events": ["item.queued"]},
            headers=tenant.headers,
        )
        assert r.status_code == 201, r.text
        hooks[name] = r.json()["id"]
    r = await client.post(f"{API}/webhooks/{hooks['a_webhook']}/test", headers=a.headers)
    assert r.status_code == 202, r.text
    ids = {
        **hooks,
        "a_webhook_delivery": r.json()["id"],
        "a_account": a_account,
        "a_pool": a_pool["id"],
        "a_slot": a_pool["slots"][0]["id"],
        "a_item": a_item,
        "a_skipped": a_skipped,
        "a_note": note.id,
        "b_account": b_account,
        "b_pool": b_pool["id"],
    }
    return World(ids, a, b)


async def snapshot(client, world: World) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    """Everything A can read about A's objects."""
    reads = [
        "/accounts/{a_account}",
        "/pools/{a_pool}",  # with its slots
        "/pools/{a_pool}/schedule?assume_active=true&limit=3",
        "/pools/{a_pool}/firings",
        "/pools/{a_pool}/videos",  # every item, whatever its status
        "/pools/{a_pool}/videos?status=queued",  # queue order and positions
        "/notifications",
        "/webhooks",
        "/webhooks/{a_webhook}/deliveries",
    ]
    out = {}
    for template in reads:
        r = await client.get(world.path(template), headers=world.a.headers)
        assert r.status_code == 200, (template, r.text)
        out[template] = r.json()
    return out


async def send(client, world: World, method: str, template: str, body: Any, video: Path):  # type: ignore[no-untyped-def]
    url = world.path(template)
    if body is MULTIPART:
        with video.open("rb") as f:
            return await client.post(
                url,
                files={"file": ("v.mp4", f, "video/mp4")},
                data={"title": "x"},
                headers=world.b.headers,
            )
    kwargs = {} if body is None else {"json": world.body(body)}
    return await client.request(method, url, headers=world.b.headers, **kwargs)


class TestOtherWorkspacesObjects:
    async def test_every_id_route_is_404_and_changes_nothing(
        self, client, app, make_tenant, clock, sample_mp4
    ):
        world = await build_world(client, app, make_tenant, clock)
        before = await snapshot(client, world)
        wrong: list[str] = []
        for method, template, body in CROSS_TENANT:
            r = await send(client, world, method, template, body, sample_mp4)
            row = f"{method} {template}"
            if (method, template.split("?")[0]) in OWN_POOL_OK:
                if r.status_code >= 400:
                    wrong.append(f"{row}: {r.status_code} on B's own pool")
            elif r.status_code != 404:
                wrong.append(f"{row}: {r.status_code} {r.text[:200]}")
            elif not r.headers["content-type"].startswith("application/problem+json"):
                wrong.append(f"{row}: 404 but {r.headers['content-type']}")
            elif r.json()["status"] != 404 or not {"type", "title", "detail"} <= set(r.json()):
                wrong.append(f"{row}: not a problem body {r.json()}")
            elif any(v in r.text for v in world.ids.values()):
                wrong.append(f"{row}: the 404 echoes an id: {r.text}")
            after = await snapshot(client, world)
            # A change corrupts every later row's baseline: stop at the first.
            assert after == before, f"{row} changed workspace A's objects (and: {wrong})"
        assert wrong == []

    async def test_other_workspaces_objects_are_not_listed(self, client, app, make_tenant, clock):
        world = await build_world(client, app, make_tenant, clock)
        b = world.b.headers
        accounts = (await client.get(f"{API}/accounts", headers=b)).json()["items"]
        assert [a["id"] for a in accounts] == [world.ids["b_account"]]
        pools = (await client.get(f"{API}/pools", headers=b)).json()["items"]
        assert [p["id"] for p in pools] == [world.ids["b_pool"]]
        notes = (await client.get(f"{API}/notifications", headers=b)).json()
        assert notes == {"items": [], "next_cursor": None}

    async def test_same_ids_answer_for_their_own_workspace(self, client, app, make_tenant, clock):
        # The 404s above are about ownership, not about the ids being wrong.
        world = await build_world(client, app, make_tenant, clock)
        for template in (
            "/accounts/{a_account}",
            "/pools/{a_pool}",
            "/pools/{a_pool}/videos/{a_item}",
        ):
            r = await client.get(world.path(template), headers=world.a.headers)
            assert r.status_code == 200, template
        r = await client.post(world.path("/notifications/{a_note}/read"), headers=world.a.headers)
        assert r.status_code == 200

    async def test_other_workspaces_accounts_cannot_be_put_in_own_slots(
        self, client, app, make_tenant, clock
    ):
        world = await build_world(client, app, make_tenant, clock)
        b_pool = await client.get(world.path("/pools/{b_pool}"), headers=world.b.headers)
        b_slot = b_pool.json()["slots"][0]["id"]
        r = await client.post(
            world.path("/pools/{b_pool}/slots"),
            json={"time": "10:00", "account_ids": [world.ids["a_account"]]},
            headers=world.b.headers,
        )
        assert fields(r) == {"account_ids.0"}
        r = await client.patch(
            world.path("/pools/{b_pool}") + f"/slots/{b_slot}",
            json={"account_ids": [world.ids["b_account"], world.ids["a_account"]]},
            headers=world.b.headers,
        )
        assert fields(r) == {"account_ids.1"}
        after = await client.get(world.path("/pools/{b_pool}"), headers=world.b.headers)
        assert after.json() == b_pool.json()


class TestRouteTable:
    async def test_table_covers_every_id_route(self, tmp_path):
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
        # `{platform}` is a platform name, not another workspace's object.
        routes = {route_key(m, p) for m, p in api_routes(app) if "{" in p.replace("{platform}", "")}
        assert len(routes) >= 15  # the route listing itself works
        table = {route_key(m, API + t) for m, t, _ in CROSS_TENANT}
        assert routes - table == set(), "routes without a cross-tenant row"
        assert table - routes == set(), "rows for routes that do not exist"


class TestAuthentication:
    @staticmethod
    def assert_401(r) -> None:  # type: ignore[no-untyped-def]
        assert r.status_code == 401, r.text
        assert r.headers["content-type"].startswith("application/problem+json")
        assert r.headers["www-authenticate"] == "Bearer"
        assert r.json()["status"] == 401
        assert {"type", "title", "detail"} <= set(r.json())

    async def test_every_api_route_needs_a_key(self, client, app):
        for method, path in sorted(api_routes(app)):
            r = await client.request(method, re.sub(r"\{[^}]+\}", "x", path))
            assert r.status_code == 401, (method, path, r.status_code, r.text)
            self.assert_401(r)

    async def test_missing_authorization(self, client):
        self.assert_401(await client.get(f"{API}/pools"))

    async def test_malformed_key(self, client):
        for authorization in (
            "",
            "Bearer",
            "Bearer ",
            "Basic dXNlcjpwYXNzd29yZA==",
            "Token up_0123456789ab_abc",
            "Bearer not-a-key",
            "Bearer up_short_abc",
            "Bearer up_0123456789ab_",
        ):
            r = await client.get(f"{API}/pools", headers={"Authorization": authorization})
            self.assert_401(r)

    async def test_unknown_key_and_wrong_secret_look_the_same(self, client, tenant):
        unknown, _, _ = generate_api_key()
        head, _, secret = tenant.key.rpartition("_")
        wrong_secret = f"{head}_{secret[::-1]}" if secret[::-1] != secret else f"{head}_x"
        assert wrong_secret != tenant.key
        answers = []
        for key in (unknown, wrong_secret, tenant.key + "x", tenant.key[:-1]):
            r = await client.get(f"{API}/pools", headers={"Authorization": f"Bearer {key}"})
            self.assert_401(r)
            answers.append(r.json())
        # Never a hint that the key's prefix exists.
        assert all(a == answers[0] for a in answers)

    async def test_revoked_key(self, client, tenant, app, clock):
        assert (await client.get(f"{API}/pools", headers=tenant.headers)).status_code == 200
        async with session_scope(app.state.uploadpools.maker) as s:
            await s.execute(
                update(ApiKey)
                .where(ApiKey.workspace_id == tenant.workspace_id)
                .values(revoked_at=clock.now())
            )
        # A verified key is trusted for `api_key_cache_seconds` (see test_auth_cache.py).
        clock.advance(seconds=app.state.uploadpools.settings.api_key_cache_seconds)
        self.assert_401(await client.get(f"{API}/pools", headers=tenant.headers))

    async def test_scheme_is_case_insensitive(self, client, tenant):
        r = await client.get(f"{API}/pools", headers={"Authorization": f"bearer {tenant.key}"})
        assert r.status_code == 200
