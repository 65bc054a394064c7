"""Small API helpers shared by the integration tests."""

from __future__ import annotations

import httpx


async def make_account(client: httpx.AsyncClient, tenant, name: str = "out") -> str:  # type: ignore[no-untyped-def]
    r = await client.post(
        "/api/v1/accounts",
        json={"platform": "folder", "name": name, "config": {"path": name}},
        headers=tenant.headers,
    )
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


async def make_pool(client, tenant, account_id, **over):  # type: ignore[no-untyped-def]
    body = {
        "name": "Daily",
        "timezone": "Europe/Berlin",
        "slots": [{"time": "09:00", "account_ids": [account_id]}],
    }
    body.update(over)
    r = await client.post("/api/v1/pools", json=body, headers=tenant.headers)
    assert r.status_code == 201, r.text
    return r.json()


def fields(r: httpx.Response) -> set[str]:
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    return {e["field"] for e in r.json()["errors"]}


async def upload_n(client, tenant, pool_id, video, n):  # type: ignore[no-untyped-def]
    """Upload the MP4 at `video` n times into a pool's queue (titles v0, v1, ...); the ids."""
    ids = []
    for i in range(n):
        with video.open("rb") as f:
            r = await client.post(
                f"/api/v1/pools/{pool_id}/videos",
                files={"file": ("v.mp4", f, "video/mp4")},
                data={"title": f"v{i}"},
                headers=tenant.headers,
            )
        assert r.status_code == 201, r.text
        ids.append(r.json()["id"])
    return ids
