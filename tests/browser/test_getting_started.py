"""The seed's "Getting started", as a new user does it, in a real browser."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

from playwright.sync_api import expect

from browser.conftest import shot
from uploadpools.connectors.folder import folder_target_root

EMAIL = "maya@example.com"


def sign_in(page, email: str = EMAIL) -> None:  # type: ignore[no-untyped-def]
    page.goto("/")
    expect(page).to_have_url(re.compile(r"/signin"))
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill("pw-123456")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Upload Pools", level=1)).to_be_visible()


def queue_titles(page):  # type: ignore[no-untyped-def]
    return page.locator("#queue-list .item-title")


def test_getting_started(page, live, sample_mp4, tmp_path):  # type: ignore[no-untyped-def]
    live.user(EMAIL)
    sign_in(page)
    expect(page.get_by_text("No pools yet.")).to_be_visible()
    shot(page, "pools-empty")

    # A folder target to post to: the zero-setup account.
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Accounts").click()
    expect(page.get_by_text("No accounts yet.")).to_be_visible()
    page.get_by_label("Name").first.fill("Archive")
    page.get_by_label("Directory").fill("archive")
    page.get_by_role("button", name="Add folder target").click()
    expect(page.locator(".account")).to_contain_text("Archive")

    # New pool: a name, the browser's timezone, two slots.
    page.get_by_role("link", name="Upload Pools").click()
    page.get_by_role("link", name="New pool").first.click()
    expect(page.get_by_label("Timezone")).to_have_value("Europe/Berlin")
    page.get_by_role("button", name="Create pool").click()  # no name: refused inline
    expect(page.locator("#name-error")).to_have_text("is required")
    expect(page.get_by_label("Name")).to_have_attribute("aria-invalid", "true")
    shot(page, "pool-form-error")
    page.get_by_label("Name").fill("Daily shorts")
    page.get_by_role("button", name="Add slot").click()
    second = page.locator(".slot-row").nth(1)
    second.get_by_label("Time").fill("18:00")
    second.get_by_role("button", name="Every day").click()
    expect(second.locator('input[name$="-days"]:checked')).to_have_count(7)
    expect(second.locator('input[name$="-accounts"]:checked')).to_have_count(1)
    shot(page, "pool-form")
    page.get_by_role("button", name="Create pool").click()
    expect(page.get_by_role("heading", name="Daily shorts")).to_be_visible()
    expect(page.locator(".slot-list > li")).to_have_count(2)
    expect(page.get_by_text("The queue is empty.")).to_be_visible()

    # Three videos through the queue panel, with a progress bar each.
    files = []
    for name in ("first", "second", "third"):
        f = tmp_path / f"{name}.mp4"
        shutil.copyfile(sample_mp4, f)
        files.append(str(f))
    page.locator("#file-input").set_input_files(files)
    expect(page.locator("#uploads li.ok progress")).to_have_count(3)
    for bar in page.locator("#uploads progress").all():
        expect(bar).to_have_js_property("value", 100)
    expect(queue_titles(page)).to_have_text(["first", "second", "third"])

    # Reorder: drag the third to the top, then the keyboard way: "first" to the bottom.
    # The page reloads once the server has the new order; until then the move buttons are
    # off (pressed meanwhile, a move was lost with the page the reload replaced).
    held: list[Any] = []
    page.route("**/items/*/move", lambda route: held.append(route))
    page.locator("#queue-list > li").nth(2).drag_to(page.locator("#queue-list > li").nth(0))
    expect(page.get_by_role("button", name="Move “first” to bottom")).to_be_disabled()
    expect(page.locator("#queue-list")).to_have_attribute("aria-busy", "true")
    with page.expect_navigation():
        held[0].continue_()
    page.unroute("**/items/*/move")
    expect(queue_titles(page)).to_have_text(["third", "first", "second"])
    button = page.get_by_role("button", name="Move “first” to bottom")
    button.focus()
    page.keyboard.press("Enter")
    expect(queue_titles(page)).to_have_text(["third", "second", "first"])

    # Toggle Active: expected times appear.
    page.get_by_role("switch", name="Active").click()
    expect(page.locator("#pool-state")).to_have_text("Active")
    expect(page.locator("#queue-list .expected")).to_have_count(3)
    shot(page, "pool")
    page.get_by_role("link", name="Upload Pools").first.click()
    row = page.locator(".pool-row", has_text="Daily shorts")
    expect(row.locator(".badge")).to_have_text("Active")
    expect(row.locator(".facts")).to_contain_text("Mon 2 Mar 18:00")  # next firing, Berlin
    # Three videos: Mon 18:00, Tue 09:00, Tue 18:00; Wed 09:00 finds the queue empty.
    expect(row.locator(".facts")).to_contain_text("on Wed 4 Mar")
    shot(page, "pools")
    row.get_by_role("link", name="Daily shorts").click()

    # Post next now: the head video goes to the folder account.
    page.locator(".slot-list > li").first.get_by_role("button", name="Post next now").click()
    done = page.locator(".done-list .item", has_text="third")
    expect(done.locator(".item-head .badge")).to_have_text("dispatched")
    expect(done.locator(".deliveries")).to_contain_text("posted")
    expect(queue_titles(page)).to_have_text(["second", "first"])
    expect(page.locator("#history tbody tr")).to_have_count(1)
    folder = folder_target_root(live.settings) / "archive"
    videos = [p for p in folder.rglob("*") if p.suffix == ".mp4"]
    assert len(videos) == 1 and videos[0].stat().st_size == Path(sample_mp4).stat().st_size
    shot(page, "pool-dispatched")

    # Pausing keeps the queue.
    page.get_by_role("switch", name="Active").click()
    expect(page.locator("#pool-state")).to_have_text("Paused")
    expect(queue_titles(page)).to_have_text(["second", "first"])
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Upload Pools").click()
    row = page.locator(".pool-row", has_text="Daily shorts")
    expect(row.locator(".badge")).to_have_text("Paused")
    expect(row.locator(".queue-length")).to_have_text("2 videos")
    shot(page, "pools-paused")

    # The other main pages render.
    for link, name in (
        ("Accounts", "accounts"),
        ("Notifications", "notifications"),
        ("Usage", "usage"),
        ("API keys", "api-keys"),
        ("Webhooks", "webhooks"),
    ):
        page.get_by_role("navigation", name="Main").get_by_role("link", name=link).click()
        expect(page.get_by_role("heading", level=1)).to_contain_text(link.split()[0])
        shot(page, name)

    # Phone width: the menu folds away behind a button.
    page.set_viewport_size({"width": 390, "height": 844})
    page.goto("/pools")
    expect(page.get_by_role("navigation", name="Main")).to_be_hidden()
    page.get_by_role("button", name="Menu").click()
    expect(page.get_by_role("navigation", name="Main")).to_be_visible()
    shot(page, "pools-phone")
