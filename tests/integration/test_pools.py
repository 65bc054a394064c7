from __future__ import annotations

from datetime import UTC, datetime

import pytest

from apihelpers import fields, make_account, make_pool

pytestmark = pytest.mark.asyncio


class TestCreate:
    async def test_new_pool_is_paused_with_no_next_firing(self, client, tenant):
        acc = await make_account(client, tenant)
        pool = await make_pool(client, tenant, acc)
        assert pool["state"] == "paused"
        assert pool["next_fire_at"] is None
        assert pool["grace_minutes"] == 15
        assert pool["slots"][0]["days"] == ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
        assert pool["queued_count"] == 0

    async def test_active_pool_gets_next_fire_at_in_utc(self, client, tenant):
        acc = await make_account(client, tenant)
        # 2026-03-02 12:00Z is 13:00 in Berlin: 09:00 today has passed, so tomorrow 08:00Z.
        pool = await make_pool(client, tenant, acc, state="active")
        assert pool["next_fire_at"] == "2026-03-03T08:00:00Z"
        assert pool["slots"][0]["next_fire_at"] == "2026-03-03T08:00:00Z"

    async def test_weekdays_are_respected(self, client, tenant):
        acc = await make_account(client, tenant)
        pool = await make_pool(
            client,
            tenant,
            acc,
            state="active",
            slots=[{"time": "09:00", "days": ["fri"], "account_ids": [acc]}],
        )
        assert pool["next_fire_at"] == "2026-03-06T08:00:00Z"

    async def test_unknown_timezone_is_named(self, client, tenant):
        acc = await make_account(client, tenant)
        r = await client.post(
            "/api/v1/pools",
            json={
                "name": "x",
                "timezone": "Mars/Base",
                "slots": [{"time": "09:00", "account_ids": [acc]}],
            },
            headers=tenant.headers,
        )
        assert fields(r) == {"timezone"}
        assert "Mars/Base" in r.json()["errors"][0]["message"]

    async def test_bad_time_and_empty_days_are_each_named(self, client, tenant):
        acc = await make_account(client, tenant)
        r = await client.post(
            "/api/v1/pools",
            json={
                "name": "x",
                "timezone": "UTC",
                "slots": [
                    {"time": "25:00", "account_ids": [acc]},
                    {"time": "10:00", "days": [], "account_ids": [acc]},
                ],
            },
            headers=tenant.headers,
        )
        assert fields(r) == {"slots.0.time", "slots.1.days"}

    async def test_empty_slots_refused(self, client, tenant):
        r = await client.post(
            "/api/v1/pools",
            json={"name": "x", "timezone": "UTC", "slots": []},
            headers=tenant.headers,
        )
        assert fields(r) == {"slots"}

    async def test_slot_without_accounts_refused(self, client, tenant):
        r = await client.post(
            "/api/v1/pools",
            json={"name": "x", "timezone": "UTC", "slots": [{"time": "09:00", "account_ids": []}]},
            headers=tenant.headers,
        )
        assert fields(r) == {"slots.0.account_ids"}

    async def test_unknown_account_named(self, client, tenant):
        acc = await make_account(client, tenant)
        r = await client.post(
            "/api/v1/pools",
            json={
                "name": "x",
                "timezone": "UTC",
                "slots": [{"time": "09:00", "account_ids": [acc, "nope"]}],
            },
            headers=tenant.headers,
        )
        assert fields(r) == {"slots.0.account_ids.1"}

    async def test_foreign_account_is_unknown(self, client, tenant, make_tenant):
        other = await make_tenant()
        foreign = await make_account(client, other)
        r = await client.post(
            "/api/v1/pools",
            json={
                "name": "x",
                "timezone": "UTC",
                "slots": [{"time": "09:00", "account_ids": [foreign]}],
            },
            headers=tenant.headers,
        )
        assert fields(r) == {"slots.0.account_ids.0"}

    async def test_nothing_created_on_error(self, client, tenant):
        await client.post(
            "/api/v1/pools",
            json={"name": "x", "timezone": "Nope/Nope", "slots": []},
            headers=tenant.headers,
        )
        r = await client.get("/api/v1/pools", headers=tenant.headers)
        assert r.json()["items"] == []


class TestListAndGet:
    async def test_list_pages_with_cursor(self, client, tenant):
        acc = await make_account(client, tenant)
        ids = [(await make_pool(client, tenant, acc, name=f"p{i}"))["id"] for i in range(5)]
        seen, cursor = [], None
        while True:
            params = {"limit": 2} | ({"cursor": cursor} if cursor else {})
            page = (await client.get("/api/v1/pools", params=params, headers=tenant.headers)).json()
            seen += [p["id"] for p in page["items"]]
            cursor = page["next_cursor"]
            if not cursor:
                break
        assert seen == ids

    async def test_limit_out_of_range(self, client, tenant):
        r = await client.get("/api/v1/pools", params={"limit": 501}, headers=tenant.headers)
        assert fields(r) == {"limit"}

    async def test_bad_cursor(self, client, tenant):
        r = await client.get("/api/v1/pools", params={"cursor": "%%%"}, headers=tenant.headers)
        assert fields(r) == {"cursor"}

    async def test_get_unknown_is_404_problem(self, client, tenant):
        r = await client.get("/api/v1/pools/nope", headers=tenant.headers)
        assert r.status_code == 404
        assert r.headers["content-type"].startswith("application/problem+json")


class TestUpdate:
    async def test_toggle_active_and_paused(self, client, tenant, clock):
        acc = await make_account(client, tenant)
        pool = await make_pool(client, tenant, acc)
        r = await client.patch(
            f"/api/v1/pools/{pool['id']}", json={"state": "active"}, headers=tenant.headers
        )
        assert r.status_code == 200
        assert r.json()["next_fire_at"] == "2026-03-03T08:00:00Z"
        r = await client.patch(
            f"/api/v1/pools/{pool['id']}", json={"state": "paused"}, headers=tenant.headers
        )
        assert r.json()["next_fire_at"] is None
        assert r.json()["slots"][0]["next_fire_at"] is None

    async def test_resume_does_not_catch_up(self, client, tenant, clock):
        acc = await make_account(client, tenant)
        pool = await make_pool(client, tenant, acc)
        clock.set(datetime(2026, 3, 10, 8, 30, tzinfo=UTC))  # 09:30 Berlin, after today's slot
        r = await client.patch(
            f"/api/v1/pools/{pool['id']}", json={"state": "active"}, headers=tenant.headers
        )
        assert r.json()["next_fire_at"] == "2026-03-11T08:00:00Z"

    async def test_timezone_change_reschedules(self, client, tenant):
        acc = await make_account(client, tenant)
        pool = await make_pool(client, tenant, acc, state="active")
        r = await client.patch(
            f"/api/v1/pools/{pool['id']}",
            json={"timezone": "America/New_York"},
            headers=tenant.headers,
        )
        # 12:00Z is 07:00 in New York: 09:00 today is still ahead.
        assert r.json()["next_fire_at"] == "2026-03-02T14:00:00Z"

    async def test_bad_values_named(self, client, tenant):
        acc = await make_account(client, tenant)
        pool = await make_pool(client, tenant, acc)
        r = await client.patch(
            f"/api/v1/pools/{pool['id']}",
            json={"timezone": "Nowhere", "state": "running", "grace_minutes": -1},
            headers=tenant.headers,
        )
        assert fields(r) == {"timezone", "state", "grace_minutes"}

    async def test_rename_and_grace(self, client, tenant):
        acc = await make_account(client, tenant)
        pool = await make_pool(client, tenant, acc)
        r = await client.patch(
            f"/api/v1/pools/{pool['id']}",
            json={"name": "New", "grace_minutes": 30},
            headers=tenant.headers,
        )
        assert (r.json()["name"], r.json()["grace_minutes"]) == ("New", 30)


class TestSlots:
    async def test_add_update_delete_slot(self, client, tenant):
        acc = await make_account(client, tenant)
        pool = await make_pool(client, tenant, acc, state="active")
        r = await client.post(
            f"/api/v1/pools/{pool['id']}/slots",
            json={"time": "18:30", "days": ["mon"], "account_ids": [acc]},
            headers=tenant.headers,
        )
        assert r.status_code == 201, r.text
        slot = r.json()
        assert slot["next_fire_at"] == "2026-03-02T17:30:00Z"
        r = await client.patch(
            f"/api/v1/pools/{pool['id']}/slots/{slot['id']}",
            json={"time": "07:15"},
            headers=tenant.headers,
        )
        assert r.status_code == 200
        assert r.json()["time"] == "07:15"
        assert r.json()["next_fire_at"] == "2026-03-09T06:15:00Z"
        r = await client.delete(
            f"/api/v1/pools/{pool['id']}/slots/{slot['id']}", headers=tenant.headers
        )
        assert r.status_code == 204
        got = (await client.get(f"/api/v1/pools/{pool['id']}", headers=tenant.headers)).json()
        assert [s["id"] for s in got["slots"]] == [pool["slots"][0]["id"]]

    async def test_slot_errors_named(self, client, tenant):
        acc = await make_account(client, tenant)
        pool = await make_pool(client, tenant, acc)
        r = await client.post(
            f"/api/v1/pools/{pool['id']}/slots",
            json={"time": "9am", "days": ["someday"], "account_ids": [acc]},
            headers=tenant.headers,
        )
        assert fields(r) == {"time", "days"}
        r = await client.post(
            f"/api/v1/pools/{pool['id']}/slots",
            json={"time": "09:00", "account_ids": ["x"]},
            headers=tenant.headers,
        )
        assert fields(r) == {"account_ids.0"}

    async def test_unknown_slot_404(self, client, tenant):
        acc = await make_account(client, tenant)
        pool = await make_pool(client, tenant, acc)
        r = await client.patch(
            f"/api/v1/pools/{pool['id']}/slots/nope", json={"time": "10:00"}, headers=tenant.headers
        )
        assert r.status_code == 404


class TestSchedulePreview:
    async def test_empty_queue_shows_null_items(self, client, tenant):
        acc = await make_account(client, tenant)
        pool = await make_pool(client, tenant, acc, state="active")
        r = await client.get(
            f"/api/v1/pools/{pool['id']}/schedule", params={"limit": 3}, headers=tenant.headers
        )
        items = r.json()["items"]
        assert [i["at"] for i in items] == [
            "2026-03-03T08:00:00Z",
            "2026-03-04T08:00:00Z",
            "2026-03-05T08:00:00Z",
        ]
        assert all(i["item_id"] is None and i["account_ids"] == [acc] for i in items)

    async def test_paused_pool_has_no_coming_firings_unless_assumed_active(self, client, tenant):
        acc = await make_account(client, tenant)
        pool = await make_pool(client, tenant, acc)
        r = await client.get(f"/api/v1/pools/{pool['id']}/schedule", headers=tenant.headers)
        assert r.json()["items"] == []
        r = await client.get(
            f"/api/v1/pools/{pool['id']}/schedule",
            params={"assume_active": "true", "limit": 2},
            headers=tenant.headers,
        )
        assert len(r.json()["items"]) == 2

    async def test_new_york_spring_forward_gap_fires_at_three(self, client, tenant, clock):
        clock.set(datetime(2026, 3, 6, 12, tzinfo=UTC))
        acc = await make_account(client, tenant)
        pool = await make_pool(
            client,
            tenant,
            acc,
            timezone="America/New_York",
            state="active",
            slots=[{"time": "02:30", "account_ids": [acc]}],
        )
        r = await client.get(
            f"/api/v1/pools/{pool['id']}/schedule", params={"limit": 4}, headers=tenant.headers
        )
        assert [(i["local_date"], i["at"]) for i in r.json()["items"]] == [
            ("2026-03-07", "2026-03-07T07:30:00Z"),  # EST
            ("2026-03-08", "2026-03-08T07:00:00Z"),  # 02:30 does not exist: fires at 03:00 EDT
            ("2026-03-09", "2026-03-09T06:30:00Z"),  # EDT
            ("2026-03-10", "2026-03-10T06:30:00Z"),
        ]

    async def test_new_york_fall_back_fires_once_at_first_occurrence(self, client, tenant, clock):
        clock.set(datetime(2026, 10, 30, 12, tzinfo=UTC))
        acc = await make_account(client, tenant)
        pool = await make_pool(
            client,
            tenant,
            acc,
            timezone="America/New_York",
            state="active",
            slots=[{"time": "01:30", "account_ids": [acc]}],
        )
        r = await client.get(
            f"/api/v1/pools/{pool['id']}/schedule", params={"limit": 3}, headers=tenant.headers
        )
        assert [(i["local_date"], i["at"]) for i in r.json()["items"]] == [
            ("2026-10-31", "2026-10-31T05:30:00Z"),
            ("2026-11-01", "2026-11-01T05:30:00Z"),  # first 01:30 (EDT), not the second
            ("2026-11-02", "2026-11-02T06:30:00Z"),
        ]

    async def test_berlin_both_changes(self, client, tenant, clock):
        clock.set(datetime(2026, 3, 28, 12, tzinfo=UTC))
        acc = await make_account(client, tenant)
        pool = await make_pool(
            client, tenant, acc, state="active", slots=[{"time": "02:30", "account_ids": [acc]}]
        )
        r = await client.get(
            f"/api/v1/pools/{pool['id']}/schedule", params={"limit": 2}, headers=tenant.headers
        )
        assert [i["at"] for i in r.json()["items"]] == [
            "2026-03-29T01:00:00Z",
            "2026-03-30T00:30:00Z",
        ]
        clock.set(datetime(2026, 10, 24, 12, tzinfo=UTC))
        r = await client.get(
            f"/api/v1/pools/{pool['id']}/schedule", params={"limit": 2}, headers=tenant.headers
        )
        assert [i["at"] for i in r.json()["items"]] == [
            "2026-10-25T00:30:00Z",
            "2026-10-26T01:30:00Z",
        ]

    async def test_two_slots_at_same_instant_take_items_in_slot_order(self, client, tenant):
        a = await make_account(client, tenant, "a")
        b = await make_account(client, tenant, "b")
        pool = await make_pool(
            client,
            tenant,
            a,
            state="active",
            slots=[{"time": "09:00", "account_ids": [a]}, {"time": "09:00", "account_ids": [b]}],
        )
        r = await client.get(
            f"/api/v1/pools/{pool['id']}/schedule", params={"limit": 4}, headers=tenant.headers
        )
        slots = [s["id"] for s in pool["slots"]]
        assert [i["slot_id"] for i in r.json()["items"]] == [slots[0], slots[1], slots[0], slots[1]]


class TestDelete:
    async def test_delete_pool(self, client, tenant):
        acc = await make_account(client, tenant)
        pool = await make_pool(client, tenant, acc)
        assert (
            await client.delete(f"/api/v1/pools/{pool['id']}", headers=tenant.headers)
        ).status_code == 204
        assert (
            await client.get(f"/api/v1/pools/{pool['id']}", headers=tenant.headers)
        ).status_code == 404

    async def test_firings_history_empty(self, client, tenant):
        acc = await make_account(client, tenant)
        pool = await make_pool(client, tenant, acc)
        r = await client.get(f"/api/v1/pools/{pool['id']}/firings", headers=tenant.headers)
        assert r.json() == {"items": [], "next_cursor": None}
