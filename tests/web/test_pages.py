"""The web pages over httpx: sessions, forms, inline errors, and the shown-once secrets."""

from __future__ import annotations

import re
from datetime import timedelta

from apihelpers import make_account, make_pool
from webhelpers import PASSWORD, csrf_of, sign_in


class TestSession:
    async def test_sign_out_ends_the_session_even_for_a_copied_cookie(self, client, tenant):
        csrf = await sign_in(client, tenant.email)
        cookie = client.cookies.get("up_session")
        r = await client.post("/signout", data={"csrf": csrf})
        assert r.status_code == 303 and r.headers["location"] == "/signin"
        client.cookies.set("up_session", cookie)  # replayed after sign-out
        r = await client.get("/pools")
        assert r.status_code == 303 and r.headers["location"].startswith("/signin")

    async def test_cookie_is_httponly_lax_and_secure_behind_https(self, client, tenant, settings):
        r = await client.get("/signin")
        r = await client.post(
            "/signin", data={"email": tenant.email, "password": PASSWORD, "csrf": csrf_of(r.text)}
        )
        cookie = r.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=lax" in cookie and "secure" not in cookie
        settings.public_url = "https://pools.example.com"
        client.cookies.clear()
        r = await client.get("/signin")
        r = await client.post(
            "/signin", data={"email": tenant.email, "password": PASSWORD, "csrf": csrf_of(r.text)}
        )
        assert "; secure" in r.headers["set-cookie"].lower()

    async def test_wrong_password_and_missing_form_token(self, client, tenant):
        r = await client.get("/signin")
        token = csrf_of(r.text)
        r = await client.post(
            "/signin", data={"email": tenant.email, "password": "nope", "csrf": token}
        )
        assert r.status_code == 400 and "do not match" in r.text
        r = await client.post("/signin", data={"email": tenant.email, "password": PASSWORD})
        assert r.status_code == 403
        assert "up_session" not in client.cookies

    async def test_unknown_email_is_refused_like_a_wrong_password(self, client):
        r = await client.get("/signin")
        r = await client.post(
            "/signin",
            data={"email": "nobody@example.com", "password": "nope", "csrf": csrf_of(r.text)},
        )
        assert r.status_code == 400 and "do not match" in r.text
        assert "up_session" not in client.cookies

    async def test_repeated_failures_are_throttled_until_the_window_passes(
        self, client, tenant, clock
    ):
        token = csrf_of((await client.get("/signin")).text)
        for _ in range(5):
            r = await client.post(
                "/signin", data={"email": tenant.email, "password": "bad", "csrf": token}
            )
            assert r.status_code == 400
        good = {"email": tenant.email, "password": PASSWORD, "csrf": token}
        r = await client.post("/signin", data=good)
        assert r.status_code == 429 and "try again" in r.text
        clock.advance(timedelta(minutes=16))
        r = await client.post("/signin", data=good)
        assert r.status_code == 303

    async def test_next_is_followed_only_on_this_site(self, client, tenant):
        for given, followed in (("//evil.example/x", "/pools"), ("/usage", "/usage")):
            page = (await client.get(f"/signin?next={given}")).text
            assert f'name="next" value="{followed}"' in page
            form = {"email": tenant.email, "password": PASSWORD, "csrf": csrf_of(page)}
            r = await client.post("/signin", data={**form, "next": given})
            assert r.headers["location"] == followed

    async def test_home_redirects(self, client, tenant):
        assert (await client.get("/")).headers["location"] == "/signin"
        await sign_in(client, tenant.email)
        assert (await client.get("/")).headers["location"] == "/pools"


class TestPoolForm:
    async def test_errors_are_shown_next_to_their_fields(self, client, tenant):
        account = await make_account(client, tenant)
        csrf = await sign_in(client, tenant.email)
        r = await client.post(
            "/pools/new",
            data={
                "csrf": csrf,
                "name": "",
                "timezone": "Mars/Olympus",
                "slot-0-time": "25:00",
                "slot-0-days": "mon",
                "slot-0-accounts": account,
                "slot-1-time": "10:00",
                "slot-1-days": "tue",
            },
        )
        assert r.status_code == 422
        for field in ("name", "timezone", "slot-0-time"):
            assert re.search(rf'id="{field}"[^>]*aria-invalid="true"', r.text, re.S), field
        assert 'id="name-error">is required<' in r.text
        assert 'id="slot-1-accounts-error">choose at least one<' in r.text
        assert "slot-0-accounts-error" not in r.text
        # What was typed is kept.
        assert 'value="25:00"' in r.text and 'value="Mars/Olympus"' in r.text
        r = await client.get("/api/v1/pools", headers=tenant.headers)
        assert r.json()["items"] == []

    async def test_edit_updates_adds_and_removes_slots(self, client, tenant):
        account = await make_account(client, tenant)
        pool = await make_pool(client, tenant, account)
        slot = pool["slots"][0]["id"]
        csrf = await sign_in(client, tenant.email)
        r = await client.post(
            f"/pools/{pool['id']}/edit",
            data={
                "csrf": csrf,
                "name": "Renamed",
                "timezone": "America/New_York",
                "slot-0-id": slot,
                "slot-0-time": "07:30",
                "slot-0-days": ["sat", "sun"],
                "slot-0-accounts": account,
                "slot-1-time": "20:00",
                "slot-1-days": "mon",
                "slot-1-accounts": account,
            },
        )
        assert r.status_code == 303, r.text
        got = (await client.get(f"/api/v1/pools/{pool['id']}", headers=tenant.headers)).json()
        assert got["name"] == "Renamed" and got["timezone"] == "America/New_York"
        assert [(s["time"], s["days"]) for s in got["slots"]] == [
            ("07:30", ["sat", "sun"]),
            ("20:00", ["mon"]),
        ]
        assert got["slots"][0]["id"] == slot
        r = await client.post(
            f"/pools/{pool['id']}/edit",
            data={
                "csrf": csrf,
                "name": "Renamed",
                "timezone": "UTC",
                "slot-1-time": "06:00",
                "slot-1-days": "mon",
                "slot-1-accounts": account,
            },
        )
        got = (await client.get(f"/api/v1/pools/{pool['id']}", headers=tenant.headers)).json()
        assert [s["time"] for s in got["slots"]] == ["06:00"]


class TestPoolPage:
    async def test_calendar_marks_forecast_skips_and_accounts_offer_reconnect(
        self, client, app, tenant, clock, sample_mp4
    ):
        from sqlalchemy import update

        from uploadpools.kit.crypto import SecretBox
        from uploadpools.models import Account
        from uploadpools.store.engine import session_scope

        account = await make_account(client, tenant, "Main")
        pool = await make_pool(client, tenant, account, state="active")
        csrf = await sign_in(client, tenant.email)
        with sample_mp4.open("rb") as f:
            r = await client.post(
                f"/pools/{pool['id']}/upload",
                files={"file": ("clip.mp4", f, "video/mp4")},
                headers={"X-CSRF-Token": csrf},
            )
        assert r.status_code == 201
        page = (await client.get(f"/pools/{pool['id']}")).text
        assert "forecast-skip" not in page and "no video (queue empty)" in page
        state = app.state.uploadpools
        async with session_scope(state.maker) as s:
            await s.execute(
                update(Account).where(Account.id == account).values(status="needs_reauth")
            )
            s.add(
                Account(
                    workspace_id=tenant.workspace_id,
                    platform="youtube",
                    name="Channel",
                    status="needs_reauth",
                    credentials=SecretBox(state.settings.secret()).encrypt({}),
                    created_at=clock.now(),
                    updated_at=clock.now(),
                )
            )
        page = (await client.get(f"/pools/{pool['id']}")).text
        assert page.count('class="firing forecast-skip') == 1  # the one video's firing
        assert "“Main” needs to be reconnected" in page
        accounts = (await client.get("/accounts")).text
        assert accounts.count('href="/connect/youtube"') == 1  # Channel's reconnect
        assert 'href="/connect/folder"' not in accounts


class TestQueuePanel:
    async def test_item_edit_with_bad_options_is_refused_inline(self, client, tenant, sample_mp4):
        account = await make_account(client, tenant)
        pool = await make_pool(client, tenant, account)
        csrf = await sign_in(client, tenant.email)
        with sample_mp4.open("rb") as f:
            r = await client.post(
                f"/pools/{pool['id']}/upload",
                files={"file": ("holiday.mp4", f, "video/mp4")},
                headers={"X-CSRF-Token": csrf},
            )
        assert r.status_code == 201 and r.json()["title"] == "holiday"
        item = r.json()["id"]
        r = await client.post(
            f"/pools/{pool['id']}/items/{item}/edit",
            data={"csrf": csrf, "title": "New", "options": "[1]"},
        )
        assert r.status_code == 422
        assert f'id="options-{item}-error"' in r.text
        r = await client.post(
            f"/pools/{pool['id']}/items/{item}/edit",
            data={
                "csrf": csrf,
                "title": "New",
                "caption": "c",
                "options": '{"youtube": {"privacy": "unlisted"}}',
            },
        )
        assert r.status_code == 303
        got = (
            await client.get(f"/api/v1/pools/{pool['id']}/videos/{item}", headers=tenant.headers)
        ).json()
        assert (got["title"], got["options"]) == ("New", {"youtube": {"privacy": "unlisted"}})

    async def test_a_file_that_is_not_a_video_is_refused(self, client, tenant, tmp_path):
        account = await make_account(client, tenant)
        pool = await make_pool(client, tenant, account)
        csrf = await sign_in(client, tenant.email)
        r = await client.post(
            f"/pools/{pool['id']}/upload",
            files={"file": ("notes.mp4", b"not a video at all", "video/mp4")},
            headers={"X-CSRF-Token": csrf},
        )
        assert r.status_code == 422 and "not a playable video" in r.json()["detail"]


class TestWorkspacePages:
    async def test_api_key_is_shown_once_and_revoking_it_locks_it_out(self, client, tenant):
        csrf = await sign_in(client, tenant.email)
        r = await client.post("/api-keys", data={"csrf": csrf, "name": "n8n"})
        key = re.search(r'id="new-key">([^<]+)<', r.text).group(1)
        auth = {"Authorization": f"Bearer {key}"}
        assert (await client.get("/api/v1/pools", headers=auth)).status_code == 200
        page = (await client.get("/api-keys")).text
        assert key not in page
        row = next(r for r in page.split("<tr>") if "<td>n8n</td>" in r)
        key_id = re.search(r"/api-keys/([^/]+)/revoke", row).group(1)
        await client.post(f"/api-keys/{key_id}/revoke", data={"csrf": csrf})
        assert (await client.get("/api/v1/pools", headers=auth)).status_code == 401
        assert (await client.get("/api/v1/pools", headers=tenant.headers)).status_code == 200

    async def test_invited_member_signs_in_with_the_password_shown_once(
        self, client, tenant, make_tenant
    ):
        other = await make_tenant()
        csrf = await sign_in(client, tenant.email)
        r = await client.post("/members", data={"csrf": csrf, "email": "New@Example.com"})
        password = re.search(r'id="initial-password">([^<]+)<', r.text).group(1)
        r = await client.post(
            "/members", data={"csrf": csrf, "email": other.email, "role": "admin"}
        )
        assert "initial-password" not in r.text and other.email in r.text
        r = await client.post("/members", data={"csrf": csrf, "email": other.email})
        assert r.status_code == 422 and "already a member" in r.text
        client.cookies.clear()
        csrf_new = await sign_in(client, "new@example.com", password)
        assert "workspace" in (await client.get("/pools")).text
        # They replace the password someone else saw.
        r = await client.post(
            "/password", data={"csrf": csrf_new, "current": "wrong", "new": "short"}
        )
        assert r.status_code == 422
        assert 'id="current-error"' in r.text and 'id="new-error"' in r.text
        r = await client.post(
            "/password", data={"csrf": csrf_new, "current": password, "new": "a-long-secret"}
        )
        assert r.status_code == 200 and "was changed" in r.text
        client.cookies.clear()
        await sign_in(client, "new@example.com", "a-long-secret")
        # The existing user now has two workspaces and a switcher.
        client.cookies.clear()
        csrf = await sign_in(client, other.email)
        page = (await client.get("/pools")).text
        assert 'id="ws-switch"' in page
        r = await client.post(
            "/workspace", data={"csrf": csrf, "workspace_id": tenant.workspace_id}
        )
        assert r.status_code == 303
        assert "(admin)</option>" in (await client.get("/pools")).text

    async def test_accounts_forms_show_errors_inline(self, client, tenant):
        csrf = await sign_in(client, tenant.email)
        r = await client.post(
            "/accounts", data={"csrf": csrf, "platform": "folder", "name": "x", "path": "../../etc"}
        )
        assert r.status_code == 422 and 'id="folder-path-error"' in r.text
        r = await client.post(
            "/accounts",
            data={"csrf": csrf, "platform": "webhook", "name": "w", "url": "http://127.0.0.1:9/h"},
        )
        assert r.status_code == 422 and 'id="webhook-url-error"' in r.text
        r = await client.post(
            "/accounts", data={"csrf": csrf, "platform": "folder", "name": "Out", "path": "out"}
        )
        assert r.status_code == 303
        assert "Out" in (await client.get("/accounts")).text

    async def test_connect_buttons_only_for_configured_platforms(self, client, tenant, settings):
        from pydantic import SecretStr

        await sign_in(client, tenant.email)
        assert 'href="/connect/' not in (await client.get("/accounts")).text
        settings.youtube_client_id, settings.youtube_client_secret = "abc", SecretStr("s")
        settings.tiktok_client_key, settings.tiktok_client_secret = "k", SecretStr("s")
        settings.instagram_client_id = "only-half-configured"
        page = (await client.get("/accounts")).text
        assert 'href="/connect/youtube"' in page and 'href="/connect/tiktok"' in page
        assert 'href="/connect/instagram"' not in page

    async def test_notifications_mark_read_lowers_the_unread_count(
        self, client, app, tenant, clock
    ):
        from uploadpools.notifications.service import notify
        from uploadpools.store.engine import session_scope

        async with session_scope(app.state.uploadpools.maker) as s:
            note = await notify(
                s,
                workspace_id=tenant.workspace_id,
                level="warning",
                kind="pool.empty",
                message="Daily ran dry",
                now=clock.now(),
            )
        csrf = await sign_in(client, tenant.email)
        page = (await client.get("/notifications")).text
        assert "Daily ran dry" in page and 'aria-label="1 unread"' in page
        await client.post(f"/notifications/{note.id}/read", data={"csrf": csrf})
        assert "unread" not in (await client.get("/notifications")).text.split("<main")[0]

    async def test_webhooks_secret_shown_once_then_listed_and_deleted(self, client, tenant):
        csrf = await sign_in(client, tenant.email)
        r = await client.post(
            "/webhooks",
            data={
                "csrf": csrf,
                "url": "https://93.184.216.34/h",
                "events": ["pool.empty", "item.skipped"],
            },
        )
        assert "whsec_" in r.text
        page = (await client.get("/webhooks")).text
        assert "whsec_" not in page and "https://93.184.216.34/h" in page
        hook = re.search(r"/webhooks/([^/]+)/delete", page).group(1)
        await client.post(f"/webhooks/{hook}/delete", data={"csrf": csrf})
        assert "No webhooks." in (await client.get("/webhooks")).text

    async def test_usage_shows_used_of_limit(self, client, tenant):
        await sign_in(client, tenant.email)
        page = (await client.get("/usage")).text
        assert re.search(r'id="used">0</strong> of <strong>13<', page)


class TestErrors:
    async def test_api_keeps_problem_json_and_pages_get_html(self, client, tenant):
        r = await client.get("/api/v1/pools/nope", headers=tenant.headers)
        assert r.status_code == 404
        assert r.headers["content-type"].startswith("application/problem+json")
        r = await client.get("/api/v1/nowhere")
        assert r.headers["content-type"].startswith("application/problem+json")
        await sign_in(client, tenant.email)
        r = await client.get("/nowhere")
        assert r.status_code == 404 and r.headers["content-type"].startswith("text/html")


class TestPostNextNow:
    async def test_posts_the_head_and_links_only_web_urls(
        self, client, tenant, allow_loopback, receiver, engine, sample_mp4
    ):
        r = await client.post(
            "/api/v1/accounts",
            json={"platform": "webhook", "name": "Hook", "config": {"url": receiver.url}},
            headers=tenant.headers,
        )
        account = r.json()["id"]
        pool = await make_pool(client, tenant, account)
        csrf = await sign_in(client, tenant.email)
        for name in ("one", "two"):
            with sample_mp4.open("rb") as f:
                r = await client.post(
                    f"/pools/{pool['id']}/upload",
                    files={"file": (f"{name}.mp4", f, "video/mp4")},
                    headers={"X-CSRF-Token": csrf},
                )
            assert r.status_code == 201
        receiver.answer(200, b'{"id": "p1", "url": "javascript:alert(1)"}')
        receiver.answer(200, b'{"id": "p2", "url": "https://example.com/p2"}')
        slot = pool["slots"][0]["id"]
        for _ in range(2):
            r = await client.post(f"/pools/{pool['id']}/slots/{slot}/fire", data={"csrf": csrf})
            assert r.status_code == 303
            await engine.run()
        page = (await client.get(f"/pools/{pool['id']}")).text
        assert "javascript:" not in page
        assert 'href="https://example.com/p2"' in page
        assert [r["body"] for r in receiver.requests] and len(receiver.requests) == 2
        assert page.count('<span class="badge status-dispatched">dispatched</span>') == 2
        assert "The queue is empty." in page
