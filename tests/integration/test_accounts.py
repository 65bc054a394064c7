from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text, update

from apihelpers import fields, make_account, make_pool
from uploadpools.kit.crypto import SecretBox
from uploadpools.models import Account

pytestmark = pytest.mark.asyncio

# A public address as an IP literal: creating checks the URL's DNS, and this machine may be
# offline. No request is ever sent on create.
HOOK_URL = "https://93.184.216.34/hook"
HOOK_SECRET = "whsec-s3cr3t-0123456789abcdef"
ACCOUNT_FIELDS = {"id", "platform", "name", "status", "created_at"}


async def create(client, tenant, body):  # type: ignore[no-untyped-def]
    return await client.post("/api/v1/accounts", json=body, headers=tenant.headers)


async def make_webhook(client, tenant, name="hook", url=HOOK_URL, secret=HOOK_SECRET):  # type: ignore[no-untyped-def]
    config = {"url": url} | ({"secret": secret} if secret else {})
    r = await create(client, tenant, {"platform": "webhook", "name": name, "config": config})
    assert r.status_code == 201, r.text
    return r.json()


async def raw_credentials(app, account_id: str) -> bytes:  # type: ignore[no-untyped-def]
    """The `accounts.credentials` column exactly as stored."""
    async with app.state.uploadpools.maker() as s:
        value = await s.scalar(
            text("SELECT credentials FROM accounts WHERE id = :id"), {"id": account_id}
        )
    assert value is not None
    return bytes(value)


async def stored_config(app, account_id: str) -> dict:  # type: ignore[no-untyped-def]
    box = SecretBox(app.state.uploadpools.settings.secret())
    return box.decrypt(await raw_credentials(app, account_id))


async def list_ids(client, tenant):  # type: ignore[no-untyped-def]
    r = await client.get("/api/v1/accounts", headers=tenant.headers)
    assert r.status_code == 200, r.text
    return [a["id"] for a in r.json()["items"]]


def is_problem(r, status: int) -> None:  # type: ignore[no-untyped-def]
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["status"] == status


class TestCreate:
    async def test_webhook_account_is_connected_and_shows_no_config(self, client, tenant):
        acc = await make_webhook(client, tenant)
        assert set(acc) == ACCOUNT_FIELDS
        assert (acc["platform"], acc["name"], acc["status"]) == ("webhook", "hook", "connected")
        assert acc["created_at"] == "2026-03-02T12:00:00Z"
        r = await client.get(f"/api/v1/accounts/{acc['id']}", headers=tenant.headers)
        assert r.status_code == 200
        assert r.json() == acc

    async def test_webhook_secret_is_optional(self, client, tenant, app):
        acc = await make_webhook(client, tenant, secret=None)
        assert await stored_config(app, acc["id"]) == {"url": HOOK_URL, "secret": None}

    async def test_folder_account(self, client, tenant, app):
        r = await create(
            client, tenant, {"platform": "folder", "name": "Archive", "config": {"path": "a/b"}}
        )
        assert r.status_code == 201, r.text
        assert set(r.json()) == ACCOUNT_FIELDS
        assert (r.json()["platform"], r.json()["status"]) == ("folder", "connected")
        assert await stored_config(app, r.json()["id"]) == {"path": "a/b"}

    async def test_folder_path_is_normalised_inside_the_root(self, client, tenant, app):
        r = await create(
            client,
            tenant,
            {"platform": "folder", "name": "x", "config": {"path": "a/../b/./c"}},
        )
        assert r.status_code == 201, r.text
        assert await stored_config(app, r.json()["id"]) == {"path": "b/c"}


def webhook(**config):  # type: ignore[no-untyped-def]
    return {"platform": "webhook", "name": "x", "config": config}


def folder(**config):  # type: ignore[no-untyped-def]
    return {"platform": "folder", "name": "x", "config": config}


# (case, body, the one field named, a phrase its message must contain)
BAD_CREATES: list[tuple[str, dict, str, str | None]] = [
    ("unknown platform", {"platform": "myspace", "name": "x", "config": {}}, "platform", None),
    ("missing platform", {"name": "x", "config": {}}, "platform", None),
    ("oauth youtube", {"platform": "youtube", "name": "x"}, "platform", "/connect/youtube"),
    ("oauth tiktok", {"platform": "tiktok", "name": "x"}, "platform", "/connect/tiktok"),
    ("webhook url missing", webhook(), "config.url", None),
    ("webhook url not a url", webhook(url="not a url"), "config.url", None),
    ("webhook url ftp", webhook(url="ftp://93.184.216.34/x"), "config.url", None),
    ("webhook url loopback", webhook(url="http://127.0.0.1/x"), "config.url", "loopback"),
    (
        "webhook url cloud metadata",
        webhook(url="http://169.254.169.254/"),
        "config.url",
        "link-local",
    ),
    ("webhook url private", webhook(url="http://10.1.2.3/x"), "config.url", "private"),
    ("webhook secret too short", webhook(url=HOOK_URL, secret="short"), "config.secret", None),
    ("webhook unknown key", webhook(url=HOOK_URL, token="t"), "config.token", None),
    ("folder path missing", folder(), "config.path", None),
    ("folder path climbs out", folder(path="../../etc"), "config.path", "inside"),
    ("folder path absolute outside", folder(path="/etc"), "config.path", "inside"),
    ("folder unknown key", folder(path="out", mode="0777"), "config.mode", None),
    ("config not an object", {"platform": "folder", "name": "x", "config": "out"}, "config", None),
    ("name missing", {"platform": "folder", "config": {"path": "out"}}, "name", None),
    ("name empty", folder(path="out") | {"name": ""}, "name", None),
    ("unknown top-level field", folder(path="out") | {"colour": "red"}, "colour", None),
]


class TestValidation:
    async def test_each_bad_account_is_422_naming_the_field(self, client, tenant):
        wrong = []
        for case, body, field, says in BAD_CREATES:
            r = await create(client, tenant, body)
            if r.status_code != 422 or not r.headers["content-type"].startswith(
                "application/problem+json"
            ):
                wrong.append(f"{case}: {r.status_code} {r.headers['content-type']} {r.text}")
                continue
            errors = r.json()["errors"]
            if {e["field"] for e in errors} != {field} or r.json()["status"] != 422:
                wrong.append(f"{case}: named {errors}, not {field!r}")
            elif says is not None and says not in errors[0]["message"]:
                wrong.append(f"{case}: message {errors[0]['message']!r} lacks {says!r}")
        assert wrong == []
        assert await list_ids(client, tenant) == []

    async def test_schema_and_config_errors_are_named_together(self, client, tenant):
        r = await create(
            client, tenant, {"platform": "webhook", "config": {"url": "http://127.0.0.1/x"}}
        )
        assert fields(r) == {"name", "config.url"}


class TestList:
    async def test_pages_with_limit_and_cursor(self, client, tenant):
        ids = [await make_account(client, tenant, f"acc{i}") for i in range(5)]
        seen, sizes, cursor = [], [], None
        while True:
            params = {"limit": 2} | ({"cursor": cursor} if cursor else {})
            r = await client.get("/api/v1/accounts", params=params, headers=tenant.headers)
            assert r.status_code == 200, r.text
            page = r.json()
            sizes.append(len(page["items"]))
            seen += [a["id"] for a in page["items"]]
            cursor = page["next_cursor"]
            if not cursor:
                break
        assert sizes == [2, 2, 1]
        assert sorted(seen) == sorted(ids)
        assert len(set(seen)) == 5

    async def test_default_page_holds_everything_without_cursor(self, client, tenant):
        ids = [await make_account(client, tenant, f"acc{i}") for i in range(3)]
        r = await client.get("/api/v1/accounts", headers=tenant.headers)
        assert sorted(a["id"] for a in r.json()["items"]) == sorted(ids)
        assert r.json()["next_cursor"] is None
        assert all(set(a) == ACCOUNT_FIELDS for a in r.json()["items"])

    async def test_limit_out_of_range_and_bad_cursor_named(self, client, tenant):
        for limit in (0, 501):
            r = await client.get(
                "/api/v1/accounts", params={"limit": limit}, headers=tenant.headers
            )
            assert fields(r) == {"limit"}
        r = await client.get("/api/v1/accounts", params={"cursor": "%%%"}, headers=tenant.headers)
        assert fields(r) == {"cursor"}

    async def test_only_this_workspaces_accounts_are_listed(self, client, tenant, make_tenant):
        other = await make_tenant()
        mine = await make_account(client, tenant)
        await make_account(client, other)
        assert await list_ids(client, tenant) == [mine]


class TestUpdate:
    async def test_rename(self, client, tenant):
        acc = await make_webhook(client, tenant)
        r = await client.patch(
            f"/api/v1/accounts/{acc['id']}", json={"name": "Renamed"}, headers=tenant.headers
        )
        assert r.status_code == 200, r.text
        assert r.json() == acc | {"name": "Renamed"}
        got = await client.get(f"/api/v1/accounts/{acc['id']}", headers=tenant.headers)
        assert got.json()["name"] == "Renamed"

    async def test_config_patch_merges_into_stored_credentials(self, client, tenant, app):
        acc = await make_webhook(client, tenant)
        r = await client.patch(
            f"/api/v1/accounts/{acc['id']}",
            json={"config": {"url": "https://93.184.216.35/new"}},
            headers=tenant.headers,
        )
        assert r.status_code == 200, r.text
        assert set(r.json()) == ACCOUNT_FIELDS
        assert await stored_config(app, acc["id"]) == {
            "url": "https://93.184.216.35/new",
            "secret": HOOK_SECRET,
        }

    async def test_bad_config_patch_is_named_and_changes_nothing(self, client, tenant, app):
        acc = await make_webhook(client, tenant)
        r = await client.patch(
            f"/api/v1/accounts/{acc['id']}",
            json={"name": "New", "config": {"url": "http://127.0.0.1/x"}},
            headers=tenant.headers,
        )
        assert fields(r) == {"config.url"}
        assert "loopback" in r.json()["errors"][0]["message"]
        assert await stored_config(app, acc["id"]) == {"url": HOOK_URL, "secret": HOOK_SECRET}
        got = await client.get(f"/api/v1/accounts/{acc['id']}", headers=tenant.headers)
        assert got.json()["name"] == "hook"

    async def test_folder_path_patch_cannot_climb_out(self, client, tenant, app):
        acc_id = await make_account(client, tenant, "out")
        r = await client.patch(
            f"/api/v1/accounts/{acc_id}",
            json={"config": {"path": "../../etc"}},
            headers=tenant.headers,
        )
        assert fields(r) == {"config.path"}
        assert await stored_config(app, acc_id) == {"path": "out"}

    async def test_disable_and_reconnect(self, client, tenant):
        acc = await make_webhook(client, tenant)
        url = f"/api/v1/accounts/{acc['id']}"
        r = await client.patch(url, json={"status": "disabled"}, headers=tenant.headers)
        assert r.json()["status"] == "disabled"
        assert (await client.get(url, headers=tenant.headers)).json()["status"] == "disabled"
        r = await client.patch(url, json={"status": "connected"}, headers=tenant.headers)
        assert r.json()["status"] == "connected"

    async def test_new_config_clears_needs_reauth(self, client, tenant, app):
        acc = await make_webhook(client, tenant)
        async with app.state.uploadpools.maker() as s:
            await s.execute(
                update(Account).where(Account.id == acc["id"]).values(status="needs_reauth")
            )
            await s.commit()
        url = f"/api/v1/accounts/{acc['id']}"
        assert (await client.get(url, headers=tenant.headers)).json()["status"] == "needs_reauth"
        r = await client.patch(
            url, json={"config": {"secret": "a-brand-new-secret-value"}}, headers=tenant.headers
        )
        assert r.json()["status"] == "connected"

    async def test_bad_patch_fields_named(self, client, tenant):
        acc = await make_webhook(client, tenant)
        r = await client.patch(
            f"/api/v1/accounts/{acc['id']}",
            json={"name": "", "status": "needs_reauth", "platform": "folder"},
            headers=tenant.headers,
        )
        assert fields(r) == {"name", "status", "platform"}

    async def test_unknown_account_is_404_problem(self, client, tenant):
        url = "/api/v1/accounts/nope"
        is_problem(await client.get(url, headers=tenant.headers), 404)
        is_problem(await client.patch(url, json={"name": "x"}, headers=tenant.headers), 404)
        is_problem(await client.delete(url, headers=tenant.headers), 404)


class TestDelete:
    async def test_delete_unused_account(self, client, tenant):
        acc = await make_webhook(client, tenant)
        r = await client.delete(f"/api/v1/accounts/{acc['id']}", headers=tenant.headers)
        assert r.status_code == 204
        assert r.content == b""
        is_problem(await client.get(f"/api/v1/accounts/{acc['id']}", headers=tenant.headers), 404)
        assert await list_ids(client, tenant) == []

    async def test_account_used_by_a_slot_is_409_and_stays(self, client, tenant):
        acc = await make_account(client, tenant)
        pool = await make_pool(client, tenant, acc)
        r = await client.delete(f"/api/v1/accounts/{acc}", headers=tenant.headers)
        is_problem(r, 409)
        assert "force=true" in r.json()["detail"]
        assert (
            await client.get(f"/api/v1/accounts/{acc}", headers=tenant.headers)
        ).status_code == 200
        got = (await client.get(f"/api/v1/pools/{pool['id']}", headers=tenant.headers)).json()
        assert got["slots"][0]["account_ids"] == [acc]

    async def test_force_removes_it_from_the_slots(self, client, tenant):
        keep = await make_account(client, tenant, "keep")
        gone = await make_account(client, tenant, "gone")
        pool = await make_pool(
            client,
            tenant,
            keep,
            slots=[
                {"time": "09:00", "account_ids": [gone, keep]},
                {"time": "18:00", "account_ids": [keep]},
            ],
        )
        r = await client.delete(
            f"/api/v1/accounts/{gone}", params={"force": "true"}, headers=tenant.headers
        )
        assert r.status_code == 204, r.text
        is_problem(await client.get(f"/api/v1/accounts/{gone}", headers=tenant.headers), 404)
        got = (await client.get(f"/api/v1/pools/{pool['id']}", headers=tenant.headers)).json()
        assert [s["account_ids"] for s in got["slots"]] == [[keep], [keep]]
        assert await list_ids(client, tenant) == [keep]

    async def test_force_removing_a_slots_last_account_unschedules_the_slot(self, client, tenant):
        acc = await make_account(client, tenant)
        pool = await make_pool(client, tenant, acc, state="active")
        assert pool["slots"][0]["next_fire_at"] == "2026-03-03T08:00:00Z"
        r = await client.delete(
            f"/api/v1/accounts/{acc}", params={"force": "true"}, headers=tenant.headers
        )
        assert r.status_code == 204
        got = (await client.get(f"/api/v1/pools/{pool['id']}", headers=tenant.headers)).json()
        assert got["slots"][0]["account_ids"] == []
        assert got["slots"][0]["next_fire_at"] is None
        assert got["next_fire_at"] is None


class TestCredentials:
    async def test_never_in_any_response(self, client, tenant):
        created = await create(
            client,
            tenant,
            {
                "platform": "webhook",
                "name": "n",
                "config": {"url": HOOK_URL, "secret": HOOK_SECRET},
            },
        )
        assert created.status_code == 201
        url = f"/api/v1/accounts/{created.json()['id']}"
        responses = [
            created,
            await client.get(url, headers=tenant.headers),
            await client.get("/api/v1/accounts", headers=tenant.headers),
            await client.patch(url, json={"name": "n"}, headers=tenant.headers),
            await client.patch(
                url,
                json={"config": {"secret": HOOK_SECRET + "-2"}},
                headers=tenant.headers,
            ),
        ]
        for r in responses:
            assert r.status_code in (200, 201), r.text
            for secret in (HOOK_SECRET, "93.184.216.34", "/hook", "config", "credentials"):
                assert secret not in r.text

    async def test_encrypted_at_rest(self, client, tenant, app, settings):
        acc = await make_webhook(client, tenant)
        raw = await raw_credentials(app, acc["id"])
        for plain in (HOOK_URL, "93.184.216.34", HOOK_SECRET, "s3cr3t"):
            assert plain.encode() not in raw
        # ... and it is really the config, under the server's secret key.
        assert await stored_config(app, acc["id"]) == {"url": HOOK_URL, "secret": HOOK_SECRET}
        if settings.is_sqlite:  # nowhere in the database file either (nor its WAL)
            db = Path(settings.resolved_database_url.split(":///", 1)[1])
            blobs = [p.read_bytes() for p in (db, db.with_name(db.name + "-wal")) if p.exists()]
            assert blobs
            assert not any(HOOK_SECRET.encode() in b for b in blobs)

    async def test_patched_credentials_are_encrypted_too(self, client, tenant, app):
        acc = await make_webhook(client, tenant)
        new_secret = "another-s3cr3t-abcdef0123"
        await client.patch(
            f"/api/v1/accounts/{acc['id']}",
            json={"config": {"secret": new_secret}},
            headers=tenant.headers,
        )
        raw = await raw_credentials(app, acc["id"])
        assert new_secret.encode() not in raw
        assert HOOK_URL.encode() not in raw
        assert (await stored_config(app, acc["id"]))["secret"] == new_secret
