"""Web routes: another workspace's object is a 404 page and stays untouched; every change
needs the session's CSRF token; every page needs a session.

`WEB_ROUTES` names every web route that takes an id; `test_table_covers_every_id_route`
fails when one is added without a row here."""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import func, select

from integration.test_tenancy import build_world, snapshot
from uploadpools.auth.service import create_api_key
from uploadpools.models import ApiKey, Membership, WebhookDelivery, WebhookEndpoint
from uploadpools.store.engine import session_scope
from uploadpools.web.members import add_member
from uploadpools.web.webhooks import create_webhook, send_test
from webhelpers import sign_in

MULTIPART = object()

# (method, path, form). Placeholders as in the API's tenancy test, plus A's {a_key},
# {a_webhook}, {a_delivery}, {a_member} and {a_workspace}.
WEB_ROUTES: list[tuple[str, str, Any]] = [
    ("GET", "/pools/{a_pool}", None),
    ("GET", "/pools/{a_pool}/edit", None),
    (
        "POST",
        "/pools/{a_pool}/edit",
        {
            "name": "taken",
            "timezone": "UTC",
            "slot-0-time": "10:00",
            "slot-0-days": "mon",
            "slot-0-accounts": "{b_account}",
        },
    ),
    ("POST", "/pools/{a_pool}/state", {"to": "active"}),
    ("POST", "/pools/{a_pool}/delete", {}),
    ("POST", "/pools/{a_pool}/slots/{a_slot}/fire", {}),
    ("POST", "/pools/{b_pool}/slots/{a_slot}/fire", {}),
    ("POST", "/pools/{a_pool}/upload", MULTIPART),
    ("POST", "/pools/{a_pool}/items/{a_item}/move", {"to": "bottom"}),
    ("POST", "/pools/{b_pool}/items/{a_item}/move", {"to": "0"}),
    ("POST", "/pools/{a_pool}/items/{a_item}/edit", {"title": "taken"}),
    ("POST", "/pools/{b_pool}/items/{a_item}/edit", {"title": "taken"}),
    ("POST", "/pools/{a_pool}/items/{a_item}/remove", {}),
    ("POST", "/pools/{b_pool}/items/{a_item}/remove", {}),
    ("POST", "/pools/{a_pool}/items/{a_skipped}/requeue", {"to": "front"}),
    ("POST", "/pools/{b_pool}/items/{a_skipped}/requeue", {"to": "front"}),
    ("POST", "/pools/{a_pool}/requeue", {"to": "front"}),
    ("POST", "/accounts/{a_account}/delete", {"force": "1"}),
    ("POST", "/notifications/{a_note}/read", {}),
    ("POST", "/api-keys/{a_key}/revoke", {}),
    ("POST", "/webhooks/{a_webhook}/delete", {}),
    ("POST", "/webhooks/{a_webhook}/rotate", {}),
    ("POST", "/webhooks/{a_webhook}/test", {}),
    ("GET", "/webhooks/{a_webhook}/deliveries", None),
    ("POST", "/webhooks/{a_webhook}/deliveries/{a_delivery}/resend", {}),
    ("POST", "/members/{a_member}/remove", {}),
    ("POST", "/workspace", {"workspace_id": "{a_workspace}"}),
]
# Changes without an id in the path (CSRF and sign-in are checked on these too).
OTHER_POSTS: list[tuple[str, Any]] = [
    ("/pools/new", {"name": "x", "timezone": "UTC"}),
    ("/accounts", {"platform": "folder", "name": "x", "path": "x"}),
    ("/api-keys", {"name": "x"}),
    ("/webhooks", {"url": "https://93.184.216.34/h", "events": "pool.empty"}),
    ("/members", {"email": "new@example.com"}),
    ("/password", {"current": "pw-123456", "new": "0123456789abc"}),
    ("/signout", {}),
]
PAGES = [
    "/password",
    "/pools",
    "/pools/new",
    "/accounts",
    "/notifications",
    "/usage",
    "/api-keys",
    "/webhooks",
    "/members",
]


def web_id_routes(app) -> set[tuple[str, str]]:  # type: ignore[no-untyped-def]
    from uploadpools.web.render import is_web_path

    return {
        (method, route.path)
        for route in app.routes
        if "{" in getattr(route, "path", "")
        and is_web_path(route.path)
        and not route.path.startswith("/static")
        for method in (getattr(route, "methods", None) or ())
        if method != "HEAD"
    }


def fill(value: Any, ids: dict[str, str]) -> Any:
    if isinstance(value, str):
        return value.format(**ids)
    if isinstance(value, dict):
        return {k: fill(v, ids) for k, v in value.items()}
    return value


async def build(client, app, make_tenant, clock):  # type: ignore[no-untyped-def]
    world = await build_world(client, app, make_tenant, clock)
    settings = app.state.uploadpools.settings
    async with session_scope(app.state.uploadpools.maker) as s:
        key, _ = await create_api_key(
            s, workspace_id=world.a.workspace_id, user_id=None, name="a", now=clock.now()
        )
        hook, _ = await create_webhook(
            s,
            settings,
            world.a.workspace_id,
            "https://93.184.216.34/h",
            ["pool.empty"],
            clock.now(),
        )
        delivery = await send_test(s, settings, world.a.workspace_id, hook.id, clock.now())
        await add_member(
            s, world.a.workspace_id, "owner", "helper@example.com", "member", clock.now()
        )
        member = await s.scalar(
            select(Membership.id).where(
                Membership.workspace_id == world.a.workspace_id, Membership.role == "member"
            )
        )
    world.ids.update(
        a_key=key.id,
        a_webhook=hook.id,
        a_delivery=delivery.id,
        a_member=str(member),
        a_workspace=world.a.workspace_id,
    )
    return world


async def a_state(client, app, world) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    out = await snapshot(client, world)  # A's key must still work, too
    async with session_scope(app.state.uploadpools.maker) as s:
        for model in (ApiKey, WebhookEndpoint, Membership):
            out[model.__name__] = await s.scalar(
                select(func.count())
                .select_from(model)
                .where(
                    model.workspace_id == world.a.workspace_id,
                    *([ApiKey.revoked_at.is_(None)] if model is ApiKey else []),
                )
            )
        hook = await s.get(WebhookEndpoint, world.ids["a_webhook"])
        out["hook_secret"] = hook.secret if hook else None
        out["deliveries"] = await s.scalar(
            select(func.count())
            .select_from(WebhookDelivery)
            .where(WebhookDelivery.endpoint_id == world.ids["a_webhook"])
        )
    return out


async def send(client, method, path, form, csrf, video):  # type: ignore[no-untyped-def]
    if form is MULTIPART:
        headers = {"X-CSRF-Token": csrf} if csrf else {}
        with video.open("rb") as f:
            return await client.post(
                path, files={"file": ("v.mp4", f, "video/mp4")}, headers=headers
            )
    if method == "GET":
        return await client.get(path)
    data = dict(form)
    if csrf:
        data["csrf"] = csrf
    return await client.post(path, data=data)


class TestOtherWorkspace:
    async def test_every_id_route_is_a_404_page_and_changes_nothing(
        self, client, app, make_tenant, clock, sample_mp4
    ):
        world = await build(client, app, make_tenant, clock)
        before = await a_state(client, app, world)
        csrf = await sign_in(client, world.b.email)
        wrong = []
        for method, template, form in WEB_ROUTES:
            path = template.format(**world.ids)
            r = await send(client, method, path, fill(form, world.ids), csrf, sample_mp4)
            row = f"{method} {template}"
            if r.status_code != 404:
                wrong.append(f"{row}: {r.status_code} {r.text[:200]}")
            elif not r.headers["content-type"].startswith("text/html"):
                wrong.append(f"{row}: 404 as {r.headers['content-type']}")
            elif "<h1>Not found</h1>" not in r.text:
                wrong.append(f"{row}: not the 404 page")
            elif any(v in r.text for k, v in world.ids.items() if k.startswith("a_")):
                wrong.append(f"{row}: the page shows one of A's ids")
        assert wrong == []
        assert await a_state(client, app, world) == before

    async def test_table_covers_every_id_route(self, app):
        covered = {(m, re.sub(r"\{[^}]+\}", "{}", p)) for m, p, _ in WEB_ROUTES}
        routes = {(m, re.sub(r"\{[^}]+\}", "{}", p)) for m, p in web_id_routes(app)}
        assert routes - covered == set(), "add these web routes to WEB_ROUTES"


class TestCsrf:
    async def test_every_change_without_the_token_is_refused(
        self, client, app, make_tenant, clock, sample_mp4
    ):
        world = await build(client, app, make_tenant, clock)
        # A, on A's own objects: everything would succeed with the token.
        ids = {**world.ids, "b_pool": world.ids["a_pool"], "b_account": world.ids["a_account"]}
        before = await a_state(client, app, world)
        await sign_in(client, world.a.email)
        rows = [(m, t, f) for m, t, f in WEB_ROUTES if m == "POST"]
        rows += [("POST", p, f) for p, f in OTHER_POSTS]
        wrong = []
        for method, template, form in rows:
            for token in (None, "not-the-token"):
                r = await send(
                    client, method, template.format(**ids), fill(form, ids), token, sample_mp4
                )
                if r.status_code != 403:
                    wrong.append(f"{template} with {token}: {r.status_code}")
        assert wrong == []
        assert await a_state(client, app, world) == before
        assert (await client.get("/pools")).status_code == 200  # still signed in


class TestSignInRequired:
    async def test_pages_redirect_to_sign_in(self, client):
        for path in ["/", *PAGES, "/pools/01abc", "/pools/01abc/edit"]:
            r = await client.get(path)
            assert r.status_code == 303, path
            assert r.headers["location"].startswith("/signin"), path
        r = await client.get("/pools/01abc/edit")
        assert r.headers["location"] == "/signin?next=/pools/01abc/edit"

    async def test_changes_redirect_to_sign_in(self, client):
        for path, form in [*OTHER_POSTS, ("/pools/x/state", {"to": "active"})]:
            r = await client.post(path, data=form)
            assert r.status_code == 303, path
            assert r.headers["location"] == "/signin"
