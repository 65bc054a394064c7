"""`/healthz` and `/readyz`: the database going away and coming back, migrations, heartbeats."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path

import asyncpg
import httpx
from sqlalchemy import text

from conftest import SECRET
from uploadpools.app import create_app
from uploadpools.config import Settings
from uploadpools.kit.clock import FrozenClock
from uploadpools.models import EngineNode
from uploadpools.store.engine import session_scope


@asynccontextmanager
async def serving(settings: Settings, clock: FrozenClock) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings, clock=clock, run_background=False)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
            c.app = app  # type: ignore[attr-defined]
            yield c


@asynccontextmanager
async def database_away(settings: Settings, tmp_path: Path) -> AsyncIterator[None]:
    """Make the database unreachable for new connections, then bring it back."""
    url = settings.database_url or ""
    if url.startswith("sqlite"):
        db_dir = Path(url.split(":///", 1)[1]).parent
        away = tmp_path / "db-away"
        db_dir.rename(away)
        try:
            yield
        finally:
            away.rename(db_dir)
        return
    admin = url.replace("postgresql+asyncpg://", "postgresql://")
    base, _, name = admin.rpartition("/")
    conn = await asyncpg.connect(f"{base}/postgres")
    try:
        await conn.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        await conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = $1 AND pid <> pg_backend_pid()",
            name,
        )
        try:
            yield
        finally:
            await conn.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
    finally:
        await conn.close()


def own_dir_settings(settings: Settings, tmp_path: Path) -> Settings:
    """The test database, moved into a directory of its own when it is SQLite."""
    url = settings.database_url or ""
    if url.startswith("sqlite"):
        src = Path(url.split(":///", 1)[1])
        (tmp_path / "db").mkdir()
        dst = tmp_path / "db" / "uploadpools.db"
        shutil.copyfile(src, dst)
        url = f"sqlite:///{dst}"
    return Settings(  # type: ignore[call-arg]
        _env_file=None, env="test", data_dir=settings.data_dir, database_url=url, secret_key=SECRET
    )


class TestHealthz:
    async def test_healthz_answers_without_the_database(
        self, settings: Settings, clock: FrozenClock, tmp_path: Path
    ) -> None:
        s = own_dir_settings(settings, tmp_path)
        async with serving(s, clock) as client, database_away(s, tmp_path):
            r = await client.get("/healthz")
            assert r.status_code == 200
            assert r.json() == {"status": "ok"}


class TestReadyz:
    async def test_fails_while_the_database_is_gone_and_recovers(
        self, settings: Settings, clock: FrozenClock, tmp_path: Path
    ) -> None:
        s = own_dir_settings(settings, tmp_path)
        async with serving(s, clock) as client:
            r = await client.get("/readyz")
            assert r.status_code == 200, r.text
            assert r.json()["status"] == "ready"
            assert r.json()["checks"]["engine"]["ok"]  # skipped: no engine ever ran

            async with database_away(s, tmp_path):
                r = await client.get("/readyz")
                assert r.status_code == 503
                body = r.json()
                assert body["status"] == "unavailable"
                assert body["failed"] == ["database"]
                assert body["checks"]["database"]["error"]

            r = await client.get("/readyz")
            assert r.status_code == 200, r.text

    async def test_fails_when_migrations_are_behind(self, client: httpx.AsyncClient, app) -> None:  # type: ignore[no-untyped-def]
        engine = app.state.uploadpools.engine
        async with engine.begin() as conn:
            head = (await conn.execute(text("SELECT version_num FROM alembic_version"))).scalar()
            await conn.execute(text("UPDATE alembic_version SET version_num = '0001'"))
        try:
            r = await client.get("/readyz")
            assert r.status_code == 503
            assert r.json()["failed"] == ["migrations"]
            assert r.json()["checks"]["migrations"]["current"] == "0001"
        finally:
            async with engine.begin() as conn:
                await conn.execute(text("UPDATE alembic_version SET version_num = :v"), {"v": head})

    async def test_engine_heartbeat_must_be_fresh_once_an_engine_exists(
        self,
        client: httpx.AsyncClient,
        app,
        clock: FrozenClock,  # type: ignore[no-untyped-def]
    ) -> None:
        now = clock.now()
        async with session_scope(app.state.uploadpools.maker) as s:
            s.add(
                EngineNode(
                    id="host:1",
                    hostname="host",
                    pid=1,
                    role="worker",
                    started_at=now - timedelta(minutes=5),
                    heartbeat_at=now - timedelta(seconds=5),
                )
            )
        r = await client.get("/readyz")
        assert r.status_code == 200, r.text
        assert r.json()["checks"]["engine"]["live_nodes"] == 1

        clock.advance(minutes=2)
        r = await client.get("/readyz")
        assert r.status_code == 503
        assert r.json()["failed"] == ["engine"]
        assert "heartbeat" in r.json()["checks"]["engine"]["error"]
