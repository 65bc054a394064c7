"""Usage per member: each queue item records who added it (the API key's user, or the
signed-in web user); the quota unit its post reserves is counted for that member."""

from __future__ import annotations

import re

from sqlalchemy import select

from apihelpers import make_pool
from uploadpools.models import QueueItem
from uploadpools.store.engine import session_scope
from uploadpools.web.members import add_member
from webhelpers import sign_in


async def test_two_members_each_enqueue_and_usage_counts_each(
    client, app, tenant, clock, allow_loopback, receiver, engine, sample_mp4
):
    r = await client.post(
        "/api/v1/accounts",
        json={"platform": "webhook", "name": "Hook", "config": {"url": receiver.url}},
        headers=tenant.headers,
    )
    pool = await make_pool(client, tenant, r.json()["id"])
    async with session_scope(app.state.uploadpools.maker) as s:
        member, password = await add_member(
            s, tenant.workspace_id, "owner", "helper@example.com", "member", clock.now()
        )
    # The owner through the API (their key), the member through the web drop zone.
    with sample_mp4.open("rb") as f:
        r = await client.post(
            f"/api/v1/pools/{pool['id']}/videos",
            files={"file": ("a.mp4", f, "video/mp4")},
            headers=tenant.headers,
        )
    assert r.status_code == 201, r.text
    csrf = await sign_in(client, "helper@example.com", password)
    with sample_mp4.open("rb") as f:
        r = await client.post(
            f"/pools/{pool['id']}/upload",
            files={"file": ("b.mp4", f, "video/mp4")},
            headers={"X-CSRF-Token": csrf},
        )
    assert r.status_code == 201, r.text
    async with app.state.uploadpools.maker() as s:
        added = (await s.scalars(select(QueueItem.added_by).order_by(QueueItem.seq))).all()
    assert added == [tenant.user_id, member.id]

    slot = pool["slots"][0]["id"]
    for _ in range(2):
        r = await client.post(f"/pools/{pool['id']}/slots/{slot}/fire", data={"csrf": csrf})
        assert r.status_code == 303
        await engine.run()
    assert len(receiver.requests) == 2

    r = await client.get("/api/v1/usage", headers=tenant.headers)
    assert r.status_code == 200
    body = r.json()
    assert body["used"] == 2 and body["limit"] == 13
    assert sorted((m["user_id"], m["email"], m["used"]) for m in body["by_member"]) == sorted(
        [(tenant.user_id, tenant.email, 1), (member.id, "helper@example.com", 1)]
    )
    page = (await client.get("/usage")).text
    rows = dict(re.findall(r"<tr><td>([^<]+)</td><td>(\d+)</td></tr>", page.split("By member")[1]))
    assert rows == {tenant.email: "1", "helper@example.com": "1"}
