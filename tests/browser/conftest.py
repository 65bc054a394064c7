"""A real server and a real browser: uvicorn on a free 127.0.0.1 port in a thread (with the
engine running in-process on an injected clock), driven by Playwright with Debian's
Chromium. Never downloads a browser: `make test` installs the chromium package."""

from __future__ import annotations

import asyncio
import shutil
import socket
import threading
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
import uvicorn
from playwright.sync_api import expect

from uploadpools.app import create_app
from uploadpools.config import Settings
from uploadpools.kit.clock import FrozenClock

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-output" / "screenshots"
T = TypeVar("T")


def run_async(fn: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine on its own loop in its own thread, clear of Playwright's loop."""
    out: list[T] = []
    errors: list[BaseException] = []

    def target() -> None:
        try:
            out.append(asyncio.run(fn()))
        except BaseException as exc:
            errors.append(exc)

    t = threading.Thread(target=target)
    t.start()
    t.join()
    if errors:
        raise errors[0]
    return out[0]


@pytest.fixture
def browser(live: Live) -> Iterator[Any]:
    """Per test, and only once the server is up: while Playwright's sync API is running,
    this thread counts as inside an event loop, so every `asyncio.run` of the database
    fixtures must already have happened."""
    if not Path(CHROMIUM).exists() and not shutil.which("chromium"):
        pytest.fail("chromium is missing: `make test` installs it (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@dataclass
class Live:
    url: str
    settings: Settings
    clock: FrozenClock

    def seed(self, fn: Callable[..., Coroutine[Any, Any, T]]) -> T:
        """Run `fn(session)` in one committed transaction against the server's database."""
        from uploadpools.store.engine import create_engine, create_sessionmaker, session_scope

        async def go() -> T:
            engine = create_engine(self.settings)
            try:
                async with session_scope(create_sessionmaker(engine)) as session:
                    return await fn(session)
            finally:
                await engine.dispose()

        return run_async(go)

    def user(self, email: str, password: str = "pw-123456") -> str:
        from uploadpools.auth.service import create_user

        async def make(session: Any) -> str:
            _user, ws = await create_user(
                session, email=email, password=password, now=self.clock.now()
            )
            return str(ws.id)

        return self.seed(make)


@pytest.fixture
def live(settings: Settings, clock: FrozenClock) -> Iterator[Live]:
    app = create_app(settings, clock=clock, run_background=True)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)  # connections wait in the backlog until the server accepts them
    port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(app, lifespan="on", ws="none", log_level="warning", access_log=False)
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        yield Live(f"http://127.0.0.1:{port}", settings, clock)
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()


@pytest.fixture
def page(live: Live, browser: Any) -> Iterator[Any]:
    context = browser.new_context(
        base_url=live.url, timezone_id="Europe/Berlin", viewport={"width": 1280, "height": 900}
    )
    context.set_default_timeout(15_000)
    expect.set_options(timeout=15_000)
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        yield pg
    finally:
        context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


def shot(page: Any, name: str, *, full_page: bool = True) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=full_page)
