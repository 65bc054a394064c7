"""Fixtures shared by the suite.

Every test that takes `settings` (directly or through `app`/`client`) runs twice: on
SQLite and on PostgreSQL. PostgreSQL comes from UPLOADPOOLS_TEST_POSTGRES_URL; when
UPLOADPOOLS_TEST_REQUIRE_POSTGRES or CI is set and it is missing, the run fails instead of
quietly testing SQLite alone.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import httpx
import pytest

import uploadpools.models  # noqa: F401
from uploadpools.app import create_app
from uploadpools.config import Settings
from uploadpools.kit.clock import FrozenClock
from uploadpools.store.base import Base
from uploadpools.store.migrate import run_upgrade

PG_URL = os.environ.get("UPLOADPOOLS_TEST_POSTGRES_URL", "").strip()
REQUIRE_PG = bool(os.environ.get("UPLOADPOOLS_TEST_REQUIRE_POSTGRES") or os.environ.get("CI"))
SECRET = "test-secret-key-0123456789abcdef-0123456789"
START = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)  # a Monday


def pytest_configure(config: pytest.Config) -> None:
    if REQUIRE_PG and not PG_URL:
        raise pytest.UsageError(
            "PostgreSQL is required here (CI or UPLOADPOOLS_TEST_REQUIRE_POSTGRES is set) "
            "but UPLOADPOOLS_TEST_POSTGRES_URL is empty"
        )


def _pg_admin_url() -> str:
    return PG_URL.replace("postgresql+asyncpg://", "postgresql://")


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """A private database for this run, migrated once, dropped at the end."""
    if not PG_URL:
        pytest.skip("no PostgreSQL (set UPLOADPOOLS_TEST_POSTGRES_URL)")
    name = f"uploadpools_test_{uuid.uuid4().hex[:10]}"
    admin = _pg_admin_url()

    async def create() -> None:
        conn = await asyncpg.connect(admin)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()

    async def drop() -> None:
        conn = await asyncpg.connect(admin)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()

    asyncio.run(create())
    base, _, _ = admin.rpartition("/")
    url = f"{base}/{name}"
    run_upgrade(Settings(_env_file=None, database_url=url, secret_key=SECRET))  # type: ignore[call-arg]
    try:
        yield url
    finally:
        asyncio.run(drop())


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "template.db"
    run_upgrade(Settings(_env_file=None, database_url=f"sqlite:///{path}", secret_key=SECRET))  # type: ignore[call-arg]
    return path


def _truncate(url: str) -> None:
    tables = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)

    async def go() -> None:
        conn = await asyncpg.connect(url)
        try:
            await conn.execute(f"TRUNCATE {tables} CASCADE")
        finally:
            await conn.close()

    asyncio.run(go())


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "postgres":
        url: str = request.getfixturevalue("pg_database")
        _truncate(url)
        return url
    template: Path = request.getfixturevalue("sqlite_template")
    db = tmp_path / "uploadpools.db"
    shutil.copyfile(template, db)
    return f"sqlite:///{db}"


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return Settings(  # type: ignore[call-arg]
        _env_file=None,
        env="test",
        data_dir=tmp_path / "data",
        database_url=database_url,
        secret_key=SECRET,
        public_url="http://testserver",
    )


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(START)


@pytest.fixture
async def app(settings: Settings, clock: FrozenClock) -> AsyncIterator[object]:
    application = create_app(settings, clock=clock, run_background=False)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def client(app: object) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
        yield c


@dataclass
class Tenant:
    email: str
    user_id: str
    workspace_id: str
    key: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


@pytest.fixture
def make_tenant(app: object, clock: FrozenClock):  # type: ignore[no-untyped-def]
    from uploadpools.auth.service import create_api_key, create_user
    from uploadpools.store.engine import session_scope

    counter = iter(range(1000))

    async def make(*, plan: str = "free", quota: int = 13) -> Tenant:
        state = app.state.uploadpools  # type: ignore[attr-defined]
        email = f"user{next(counter)}-{uuid.uuid4().hex[:6]}@example.com"
        async with session_scope(state.maker) as session:
            user, ws = await create_user(
                session, email=email, password="pw-123456", now=clock.now(), plan=plan, quota=quota
            )
            _, key = await create_api_key(
                session, workspace_id=ws.id, user_id=user.id, name="test", now=clock.now()
            )
        return Tenant(email, user.id, ws.id, key)

    return make


@pytest.fixture
async def tenant(make_tenant) -> Tenant:  # type: ignore[no-untyped-def]
    t: Tenant = await make_tenant()
    return t


@pytest.fixture
def allow_loopback(settings: Settings) -> Settings:
    """Let outbound fetches reach this machine's own test servers."""
    settings.private_networks_allowed = ["127.0.0.0/8"]
    return settings


@dataclass
class FileServer:
    root: Path
    port: int

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"


@pytest.fixture
def file_server(tmp_path: Path) -> Iterator[FileServer]:
    """A real HTTP server on 127.0.0.1 serving files from a temp directory."""
    import functools
    import threading
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    root = tmp_path / "served"
    root.mkdir()

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield FileServer(root, server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="session")
def sample_mp4(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from media_samples import make_mp4

    return make_mp4(tmp_path_factory.mktemp("media") / "sample.mp4", seconds=1.0)


@dataclass
class EngineParts:
    ticker: object
    dispatcher: object

    async def run(self) -> None:
        """One pass of the engine at the clock's now: fire what is due, post what is claimable."""
        await self.ticker.tick()  # type: ignore[attr-defined]
        await self.dispatcher.run_until_idle()  # type: ignore[attr-defined]


@pytest.fixture
def engine(app: object, clock: FrozenClock) -> EngineParts:
    from uploadpools.engine.dispatcher import Dispatcher
    from uploadpools.engine.ticker import Ticker

    st = app.state.uploadpools  # type: ignore[attr-defined]
    return EngineParts(
        Ticker(st.maker, st.settings, clock),
        Dispatcher(st.maker, st.settings, clock, st.storage, st.http, node="test-a"),
    )


@dataclass
class Receiver:
    """A real HTTP receiver on 127.0.0.1 that records requests and answers from a script."""

    port: int
    requests: list[dict[str, object]]
    script: list[tuple[int, dict[str, str], bytes]]
    hold: object = None  # a threading.Event: when set, requests block until it is released

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def answer(
        self, status: int, body: bytes = b"{}", headers: dict[str, str] | None = None
    ) -> None:
        self.script.append((status, headers or {}, body))


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    rec = Receiver(0, [], [])

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_POST(self) -> None:
            length = int(self.headers.get("content-length", "0"))
            body = self.rfile.read(length)
            rec.requests.append({"headers": dict(self.headers.items()), "body": body})
            if rec.hold is not None:
                rec.hold.wait(10)  # type: ignore[attr-defined]
            status, headers, out = rec.script.pop(0) if rec.script else (200, {}, b"{}")
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    rec.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield rec
    finally:
        server.shutdown()
        server.server_close()


@dataclass
class S3Server:
    """A local S3-compatible server (moto in server mode) on 127.0.0.1."""

    endpoint: str
    access_key: str = "test-access-key"
    secret_key: str = "test-secret-key"

    def settings_env(self, bucket: str) -> dict[str, str]:
        return {
            "UPLOADPOOLS_STORAGE": "s3",
            "UPLOADPOOLS_S3_ENDPOINT_URL": self.endpoint,
            "UPLOADPOOLS_S3_BUCKET": bucket,
            "UPLOADPOOLS_S3_REGION": "us-east-1",
            "UPLOADPOOLS_S3_ACCESS_KEY_ID": self.access_key,
            "UPLOADPOOLS_S3_SECRET_ACCESS_KEY": self.secret_key,
        }


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    import socket
    import subprocess
    import sys
    import time

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    bin_ = Path(sys.executable).with_name("moto_server")
    proc = subprocess.Popen(
        [str(bin_), "-H", "127.0.0.1", "-p", str(port)],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    try:
        while True:  # waiting for a process to listen, not for time to pass
            try:
                httpx.get(endpoint + "/moto-api/", timeout=1)
                break
            except httpx.TransportError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"moto_server did not start: {log.read_text()[-2000:]}")
                time.sleep(0.1)
        yield S3Server(endpoint)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
def s3_bucket(s3_server: S3Server) -> str:
    """A fresh, empty bucket on the local S3 server (usable from sync and async code)."""
    from concurrent.futures import ThreadPoolExecutor

    from uploadpools.media.s3 import S3Storage

    name = f"media-{uuid.uuid4().hex[:12]}"

    async def create() -> None:
        st = S3Storage(
            bucket=name,
            access_key_id=s3_server.access_key,
            secret_access_key=s3_server.secret_key,
            endpoint_url=s3_server.endpoint,
        )
        await st.ensure_bucket()
        await st.aclose()

    # Its own event loop in a thread: callers may already be inside one.
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, create()).result()
    return name


@pytest.fixture(scope="session")
def platform_mp4(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A short vertical video YouTube, TikTok and Instagram all take: TikTok wants at least
    360 px a side, Instagram Reels at least 3 s, YouTube Shorts vertical or square."""
    from media_samples import make_mp4

    path = tmp_path_factory.mktemp("platforms") / "vertical.mp4"
    return make_mp4(path, seconds=3.2, width=360, height=640)


# The fake platforms (tests/fakes/) on 127.0.0.1, with the app's settings pointed at them.


@pytest.fixture
def google_app(settings: Settings) -> Iterator[object]:
    from fakes.youtube import fake_google

    with fake_google() as fake:
        fake.configure(settings)
        yield fake


@pytest.fixture
def tiktok_app(settings: Settings) -> Iterator[object]:
    from fakes import tiktok
    from platformhelpers import point_tiktok

    with tiktok.running() as fake:
        point_tiktok(settings, fake)
        yield fake


@pytest.fixture
def instagram_app(settings: Settings, clock: FrozenClock) -> Iterator[object]:
    from fakes import instagram
    from platformhelpers import point_instagram

    with instagram.running(instagram.FakeInstagram(clock)) as fake:
        point_instagram(settings, fake)
        yield fake
