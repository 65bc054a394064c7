"""What the browser must refuse: another workspace's pool, a form without its CSRF token."""

from __future__ import annotations

from playwright.sync_api import expect

from browser.conftest import shot
from browser.test_getting_started import sign_in


def test_foreign_pool_is_a_404_page_and_csrf_is_required(page, live):  # type: ignore[no-untyped-def]
    from uploadpools.accounts.schemas import AccountCreate
    from uploadpools.accounts.service import AccountService
    from uploadpools.pools.schemas import PoolCreate, SlotIn
    from uploadpools.pools.service import PoolService

    live.user("ana@example.com")
    other_ws = live.user("bo@example.com")

    async def foreign_pool(session):  # type: ignore[no-untyped-def]
        account = await AccountService(session, live.settings).create(
            other_ws,
            AccountCreate(platform="folder", name="Bo", config={"path": "bo"}),
            live.clock.now(),
        )
        slots = [SlotIn(time="09:00", account_ids=[account.id])]
        pool = await PoolService(session, live.settings).create(
            other_ws, PoolCreate(name="Bo's", timezone="UTC", slots=slots), live.clock.now()
        )
        return pool.id

    pool_id = live.seed(foreign_pool)
    sign_in(page, "ana@example.com")

    response = page.goto(f"/pools/{pool_id}")
    assert response is not None and response.status == 404
    expect(page.get_by_role("heading", name="Not found")).to_be_visible()
    expect(page.get_by_role("navigation", name="Main")).to_be_visible()  # still in the app
    shot(page, "not-found")
    assert page.goto("/pools/no-such-pool").status == 404  # type: ignore[union-attr]
    assert page.goto(f"/pools/{pool_id}/edit").status == 404  # type: ignore[union-attr]

    # A forged form (the browser sends the session cookie, but no token) changes nothing.
    page.goto("/pools")
    forged = page.request.post("/pools/new", form={"name": "Forged", "timezone": "UTC"})
    assert forged.status == 403
    wrong = page.request.post(
        "/pools/new", form={"name": "Forged", "timezone": "UTC", "csrf": "guess"}
    )
    assert wrong.status == 403
    page.reload()
    expect(page.get_by_text("No pools yet.")).to_be_visible()
