from __future__ import annotations

from apihelpers import make_account
from webhelpers import sign_in


async def test_walk(client, tenant, sample_mp4):
    account = await make_account(client, tenant)
    csrf = await sign_in(client, tenant.email)
    for path in [
        "/pools",
        "/pools/new",
        "/accounts",
        "/notifications",
        "/usage",
        "/api-keys",
        "/webhooks",
        "/members",
    ]:
        r = await client.get(path)
        assert r.status_code == 200, (path, r.text[:3000])
    r = await client.post(
        "/pools/new",
        data={
            "csrf": csrf,
            "name": "Daily",
            "timezone": "Europe/Berlin",
            "slot-0-time": "09:00",
            "slot-0-days": ["mon", "tue"],
            "slot-0-accounts": [account],
            "slot-1-time": "18:00",
            "slot-1-days": ["sun"],
            "slot-1-accounts": [account],
        },
    )
    assert r.status_code == 303, r.text[:3000]
    url = r.headers["location"]
    r = await client.get(url)
    assert r.status_code == 200, r.text[:3000]
    with open(sample_mp4, "rb") as f:
        r = await client.post(
            url + "/upload",
            files={"file": ("clip.mp4", f, "video/mp4")},
            headers={"X-CSRF-Token": csrf},
        )
    assert r.status_code == 201, r.text
    r = await client.get(url)
    assert r.status_code == 200, r.text[:3000]
    assert "clip" in r.text
    r = await client.get(url + "/edit")
    assert r.status_code == 200, r.text[:3000]
