"""The `uploadpools` command."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from uploadpools.config import Settings
from uploadpools.kit.clock import SystemClock, clock_for
from uploadpools.kit.crypto import generate_password, hash_password_blocking
from uploadpools.kit.memory import limit_malloc_arenas
from uploadpools.ops.logs import configure_logging

app = typer.Typer(
    help="Upload Pools: post short videos from FIFO pools on a fixed rhythm.", no_args_is_help=True
)
users_app = typer.Typer(help="Manage users.", no_args_is_help=True)
keys_app = typer.Typer(help="Manage API keys.", no_args_is_help=True)
app.add_typer(users_app, name="users")
app.add_typer(keys_app, name="api-keys")

FIRST_USER_EMAIL = "admin@localhost"
CREDENTIALS_FILE = "initial-credentials.json"


def _run(coro: Any) -> Any:
    return asyncio.run(coro)


async def _with_session(settings: Settings, fn: Any) -> Any:
    from uploadpools.store.engine import create_engine, create_sessionmaker, session_scope

    engine = create_engine(settings)
    try:
        async with session_scope(create_sessionmaker(engine)) as session:
            return await fn(session)
    finally:
        await engine.dispose()


def _write_private(path: Path, content: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(content)


async def _bootstrap(
    settings: Settings, password: str | None = None, password_hash: str | None = None
) -> dict[str, str] | None:
    """On an empty database: a first user, their workspace and an API key."""
    from sqlalchemy import func, select

    from uploadpools.auth.service import create_api_key, create_user
    from uploadpools.models import User

    async def go(session: Any) -> dict[str, str] | None:
        if await session.scalar(select(func.count()).select_from(User)):
            return None
        now = SystemClock().now()
        if password is None:
            pw, pw_hash = generate_password(), None
        else:
            pw, pw_hash = password, password_hash
        user, ws = await create_user(
            session,
            email=FIRST_USER_EMAIL,
            password=pw,
            password_hash=pw_hash,
            now=now,
            quota=settings.default_free_quota,
        )
        _key, full = await create_api_key(
            session, workspace_id=ws.id, user_id=user.id, name="first start", now=now
        )
        return {"email": user.email, "password": pw, "api_key": full}

    result: dict[str, str] | None = await _with_session(settings, go)
    return result


@app.command()
def migrate() -> None:
    """Bring the database schema up to date."""
    from uploadpools.store.migrate import run_upgrade

    settings = Settings()
    run_upgrade(settings)
    typer.echo("database is up to date")


NEEDS_FIRST_USER = 3


def prepare() -> None:
    """`serve`'s first step, in a child process: migrate, and bootstrap an empty database.

    Reads `{"password", "password_hash"}` for the first user from stdin; exits with
    NEEDS_FIRST_USER when the database has no user and none was given.
    """
    from sqlalchemy import func, select

    from uploadpools.models import User
    from uploadpools.store.migrate import run_upgrade

    first = json.loads(sys.stdin.read() or "{}")
    settings = Settings()
    run_upgrade(settings)
    if "password_hash" not in first:

        async def count(session: Any) -> int:
            return int(await session.scalar(select(func.count()).select_from(User)) or 0)

        if not _run(_with_session(settings, count)):
            raise SystemExit(NEEDS_FIRST_USER)
        return
    created = _run(_bootstrap(settings, first["password"], first["password_hash"]))
    if created is not None:
        _write_private(settings.data_dir / CREDENTIALS_FILE, json.dumps(created, indent=2) + "\n")


def _prepare_in_child(first_user: dict[str, str] | None = None) -> int:
    return subprocess.run(
        [sys.executable, "-c", "from uploadpools.cli import prepare; prepare()"],
        input=json.dumps(first_user or {}).encode(),
        check=False,
    ).returncode


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to bind.")] = 8000,
    no_engine: Annotated[
        bool, typer.Option("--no-engine", help="Serve API and web UI only.")
    ] = False,
) -> None:
    """Serve the API and web UI (and run the engine), migrating an empty data dir first."""
    settings = Settings()
    configure_logging(settings)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    settings.secret()  # generated into the data dir on first start
    # Before any thread starts (argon2 runs in crypto's threads, the first user's too).
    limit_malloc_arenas()
    # Migrating (alembic, SQLAlchemy, the models) runs in a child process that exits
    # before the server starts, and the first user's password is hashed (argon2: 64 MiB,
    # mapped and unmapped at once) while this process is still small and that child is
    # not running: the peak memory of first start stays below the server's own.
    status = _prepare_in_child()
    if status == NEEDS_FIRST_USER:
        password = generate_password()
        status = _prepare_in_child(
            {"password": password, "password_hash": hash_password_blocking(password)}
        )
    if status:
        raise typer.Exit(status)

    import uvicorn

    from uploadpools.app import create_app

    creds_path = settings.data_dir / CREDENTIALS_FILE
    base = f"http://{host}:{port}"
    typer.echo("")
    typer.echo(f"  Upload Pools  {base}")
    typer.echo(f"  API docs      {base}/docs")
    if creds_path.exists():
        creds = json.loads(creds_path.read_text())
        typer.echo(f"  Login         {creds['email']}")
        typer.echo(f"  Password      {creds['password']}")
        typer.echo(f"  API key       {creds['api_key']}")
        typer.echo(f"  (kept in {creds_path}, readable only by you; delete it once noted)")
    else:
        typer.echo("  New API key:  uploadpools api-keys create --email EMAIL")
    typer.echo("")
    from uploadpools.engine.worker import freeze_heap

    application = create_app(settings, run_background=not no_engine)
    freeze_heap()
    uvicorn.run(
        application,
        host=host,
        port=port,
        log_level=settings.log_level.lower(),
        log_config=None,  # configure_logging's handler; our middleware logs access lines
        access_log=False,
    )


async def _worker_main(settings: Settings) -> None:
    import signal

    import httpx

    from uploadpools.engine.worker import Engine, freeze_heap
    from uploadpools.media.service import MediaFetcher, storage_for
    from uploadpools.store.engine import create_engine, create_sessionmaker
    from uploadpools.store.migrate import current_revision, head_revision

    engine = create_engine(settings)
    if await current_revision(engine) != head_revision():
        await engine.dispose()
        typer.echo("error: the database schema is not current; run `uploadpools migrate`", err=True)
        raise typer.Exit(1)
    maker = create_sessionmaker(engine)
    clock = clock_for(settings.clock_offset_file)
    storage = storage_for(settings)
    async with httpx.AsyncClient(timeout=httpx.Timeout(30.0, connect=10.0)) as http:
        fetcher = MediaFetcher(maker, settings, clock, storage, http)
        runner = Engine(maker, settings, clock, storage, http, fetcher, role="worker")
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        freeze_heap()
        await runner.start()
        typer.echo(f"worker {runner.node} running; SIGTERM finishes or releases in-flight posts")
        await stop.wait()
        await runner.stop()
    if hasattr(storage, "aclose"):
        await storage.aclose()
    await engine.dispose()


@app.command()
def worker(
    metrics_port: Annotated[
        int | None,
        typer.Option(help="Serve this worker's Prometheus counters on this port (GET /metrics)."),
    ] = None,
    metrics_host: Annotated[str, typer.Option(help="Interface for --metrics-port.")] = "127.0.0.1",
) -> None:
    """Run the engine alone (any number of these against one PostgreSQL database)."""
    settings = Settings()
    configure_logging(settings)
    if metrics_port is not None:
        from prometheus_client import start_http_server

        from uploadpools.ops.metrics import REGISTRY

        start_http_server(metrics_port, addr=metrics_host, registry=REGISTRY)
    _run(_worker_main(settings))


@app.command()
def audit(
    from_: Annotated[str, typer.Option("--from", help="Start (ISO date or datetime, UTC).")],
    to: Annotated[str, typer.Option("--to", help="End, exclusive (ISO date or datetime, UTC).")],
    pool: Annotated[str | None, typer.Option(help="Only this pool.")] = None,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="List every occurrence.")
    ] = False,
) -> None:
    """For every expected (slot, local date) in a range: its one record; flags duplicates and gaps."""
    from datetime import UTC, datetime

    from uploadpools.engine.audit import audit as run_audit

    def parse(v: str) -> datetime:
        dt = datetime.fromisoformat(v)
        return dt if dt.tzinfo else dt.replace(tzinfo=UTC)

    settings = Settings()
    start, end = parse(from_), parse(to)

    async def go(session: Any) -> Any:
        return await run_audit(
            session, start, end, clock_for(settings.clock_offset_file).now(), pool_id=pool
        )

    report = _run(_with_session(settings, go))
    for e in report.entries:
        if verbose or e.verdict in ("duplicate", "gap"):
            recs = ",".join(f"{fid}:{outcome}" for fid, outcome in e.records) or "-"
            typer.echo(
                f"{e.verdict:9} pool={e.pool_id} slot={e.slot_id} date={e.local_date} "
                f"at={e.expected_at.isoformat()} records={recs}"
            )
    typer.echo(report.summary)
    if report.count("duplicate") or report.count("gap"):
        raise typer.Exit(2)


@app.command()
def status() -> None:
    """Engine processes: role, loops, state, last heartbeat age and posts in flight."""
    from sqlalchemy import func, select

    from uploadpools.engine.worker import STALE_AFTER_SECONDS
    from uploadpools.models import Delivery, EngineNode

    settings = Settings()

    async def go(session: Any) -> Any:
        nodes = (
            await session.scalars(select(EngineNode).order_by(EngineNode.heartbeat_at.desc()))
        ).all()
        inflight = dict(
            (
                await session.execute(
                    select(Delivery.lease_owner, func.count())
                    .where(Delivery.status == "in_progress")
                    .group_by(Delivery.lease_owner)
                )
            ).all()
        )
        return nodes, inflight

    now = clock_for(settings.clock_offset_file).now()
    nodes, inflight = _run(_with_session(settings, go))
    if not nodes:
        typer.echo("no engine has run against this database")
        return
    typer.echo(
        f"{'NODE':40} {'ROLE':7} {'LOOPS':25} {'STATE':8} {'LAST BEAT':>10} {'IN FLIGHT':>9}"
    )
    for n in nodes:
        age = (now - n.heartbeat_at).total_seconds()
        state = "stopped" if n.stopped_at else ("alive" if age < STALE_AFTER_SECONDS else "silent")
        typer.echo(
            f"{n.id:40} {n.role:7} {n.roles or '-':25} {state:8} {f'{age:.0f}s ago':>10} "
            f"{inflight.get(n.id, 0):>9}"
        )


@users_app.command("create")
def users_create(
    email: str,
    password: Annotated[
        str | None, typer.Option(help="Generated and printed when omitted.")
    ] = None,
    plan: Annotated[str, typer.Option(help="free or paid")] = "free",
    quota: Annotated[int | None, typer.Option(help="Monthly uploads on the free plan.")] = None,
) -> None:
    """Create a user with a workspace of their own."""
    from uploadpools.auth.service import create_user
    from uploadpools.exceptions import UploadPoolsError

    settings = Settings()
    pw = password or generate_password()

    async def go(session: Any) -> Any:
        return await create_user(
            session,
            email=email,
            password=pw,
            now=SystemClock().now(),
            plan=plan,
            quota=settings.default_free_quota if quota is None else quota,
        )

    try:
        user, ws = _run(_with_session(settings, go))
    except UploadPoolsError as exc:
        typer.echo(f"error: {exc.detail}", err=True)
        raise typer.Exit(1)
    typer.echo(f"created {user.email} (plan {user.plan}) with workspace {ws.id}")
    if password is None:
        typer.echo(f"password: {pw}")


@keys_app.command("create")
def api_keys_create(
    email: Annotated[str, typer.Option(help="The user the key acts for.")],
    name: Annotated[str, typer.Option(help="A label for the key.")] = "cli",
) -> None:
    """Create an API key for the user's workspace; the key is printed once."""
    from uploadpools.auth.service import create_api_key, owned_workspace, user_by_email
    from uploadpools.exceptions import UploadPoolsError

    settings = Settings()

    async def go(session: Any) -> str:
        user = await user_by_email(session, email)
        ws = await owned_workspace(session, user)
        _key, full = await create_api_key(
            session, workspace_id=ws.id, user_id=user.id, name=name, now=SystemClock().now()
        )
        return full

    try:
        full = _run(_with_session(settings, go))
    except UploadPoolsError as exc:
        typer.echo(f"error: {exc.detail}", err=True)
        raise typer.Exit(1)
    typer.echo(full)


def main() -> None:
    app()
