"""CPU time per JSON enqueue, in-process: a steadier guide than wall-clock rates.

Drives the ASGI app through ``httpx.ASGITransport`` (no sockets, no HTTP parser) on a
fresh SQLite (or PostgreSQL) store, one request at a time (or `--concurrency C`), and prints the process CPU
time (``time.process_time``) per request over the measured part. With ``--profile FILE``
the measured part runs under cProfile (slower; for finding where the time goes).
Run it against another checkout with ``PYTHONPATH=<checkout>/src`` for a baseline.

    .venv/bin/python bench/enqueue_cpu.py [--requests 1000] [--pool-state active]
        [--concurrency 32] [--asgi] [--multipart small.mp4]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import json
import os
import pstats
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from sqlalchemy import event

from uploadpools.app import create_app
from uploadpools.auth.service import create_api_key, create_user
from uploadpools.config import Settings
from uploadpools.kit.clock import SystemClock
from uploadpools.store.engine import session_scope
from uploadpools.store.migrate import run_upgrade


async def measure(args: argparse.Namespace, data_dir: Path) -> None:
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None,
        env="test",
        data_dir=data_dir,
        database_url=args.database_url or f"sqlite:///{data_dir / 'db.sqlite'}",
        secret_key="bench-secret-key-0123456789abcdef-0123456789",
        private_networks_allowed=["127.0.0.1/32"],
    )
    await asyncio.to_thread(run_upgrade, settings)
    app = create_app(settings, run_background=False)
    async with app.router.lifespan_context(app):
        state = app.state.uploadpools
        now = SystemClock().now()
        async with session_scope(state.maker) as session:
            user, ws = await create_user(
                session, email="bench@example.com", password="pw-123456", now=now
            )
            _, key = await create_api_key(
                session, workspace_id=ws.id, user_id=user.id, name="bench", now=now
            )
        headers = {"Authorization": f"Bearer {key}"}
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://testserver", headers=headers
        ) as c:
            r = await c.post(
                "/api/v1/accounts",
                json={"platform": "folder", "name": "bench", "config": {"path": "bench"}},
            )
            r.raise_for_status()
            r = await c.post(
                "/api/v1/pools",
                json={
                    "name": "bench",
                    "timezone": "UTC",
                    "state": args.pool_state,
                    "slots": [{"time": "09:00", "account_ids": [r.json()["id"]]}],
                },
            )
            r.raise_for_status()
            path = f"/api/v1/pools/{r.json()['id']}/videos"

            video = (
                await asyncio.to_thread(Path(args.multipart).read_bytes) if args.multipart else None
            )

            auth = [(b"authorization", f"Bearer {key}".encode())]

            async def direct(i: int) -> None:
                """One JSON enqueue handed straight to the ASGI app (no HTTP client)."""
                body = json.dumps(
                    {"video_url": "http://127.0.0.1:9/v.mp4", "title": f"b{i}"}
                ).encode()
                scope = {
                    "type": "http",
                    "asgi": {"version": "3.0"},
                    "http_version": "1.1",
                    "method": "POST",
                    "scheme": "http",
                    "path": path,
                    "raw_path": path.encode(),
                    "query_string": b"",
                    "root_path": "",
                    "headers": [*auth, (b"content-type", b"application/json")],
                    "client": ("127.0.0.1", 1),
                    "server": ("testserver", 80),
                }
                messages = [{"type": "http.request", "body": body, "more_body": False}]
                status: list[int] = []

                async def receive() -> dict[str, object]:
                    if messages:
                        return messages.pop()
                    await asyncio.Event().wait()  # no disconnect: the request is answered
                    raise AssertionError

                async def send(message: dict[str, object]) -> None:
                    if message["type"] == "http.response.start":
                        status.append(int(message["status"]))  # type: ignore[call-overload]

                await app(scope, receive, send)  # type: ignore[arg-type]
                if status != [201]:
                    raise SystemExit(f"enqueue answered {status}")

            async def one(i: int) -> None:
                if args.asgi and video is None:
                    await direct(i)
                    return
                if video is not None:
                    r = await c.post(
                        path,
                        files={"file": ("v.mp4", video, "video/mp4")},
                        data={"title": f"b{i}"},
                    )
                else:
                    r = await c.post(
                        path, json={"video_url": "http://127.0.0.1:9/v.mp4", "title": f"b{i}"}
                    )
                if r.status_code != 201:
                    raise SystemExit(f"enqueue answered {r.status_code}: {r.text}")

            for i in range(args.warmup):
                await one(i)
            # As `serve` does at start-up (engine.worker.freeze_heap): full collections
            # then skip the long-lived heap instead of walking it for tens of ms.
            gc.collect()
            gc.freeze()
            if args.sql:
                statements: list[str] = []

                def note(_conn, _cur, statement, *_a: object) -> None:  # type: ignore[no-untyped-def]
                    statements.append(" ".join(statement.split())[:110])

                sync_engine = state.engine.sync_engine
                event.listen(sync_engine, "before_cursor_execute", note)
                await one(-1)
                event.remove(sync_engine, "before_cursor_execute", note)
                print(f"one enqueue ran {len(statements)} SQL statements:")
                for st in statements:
                    print("   ", st)
            prof = cProfile.Profile() if args.profile else None
            if args.callgrind:
                subprocess.run(["callgrind_control", "-i", "on", str(os.getpid())], check=True)  # noqa: ASYNC221
            cpu0, wall0 = time.process_time(), time.perf_counter()
            if prof:
                prof.enable()
            if args.concurrency == 1:
                for i in range(args.requests):
                    await one(i)
            else:
                todo = iter(range(args.requests))

                async def lane() -> None:
                    for i in todo:
                        await one(i)

                await asyncio.gather(*(lane() for _ in range(args.concurrency)))
            if prof:
                prof.disable()
            if args.callgrind:
                subprocess.run(["callgrind_control", "-i", "off", str(os.getpid())], check=True)  # noqa: ASYNC221
            cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    n = args.requests
    print(f"{n} enqueues: {cpu / n * 1e6:.0f} us CPU and {wall / n * 1e6:.0f} us wall per request")
    if prof:
        prof.dump_stats(args.profile)
        pstats.Stats(prof).sort_stats("cumulative").print_stats(40)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    p.add_argument("--requests", type=int, default=1000)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--concurrency", type=int, default=1, help="requests in flight at once")
    p.add_argument("--pool-state", choices=("paused", "active"), default="paused")
    p.add_argument("--database-url", help="default: a SQLite file in a temp dir")
    p.add_argument("--sql", action="store_true", help="list the SQL of one enqueue")
    p.add_argument(
        "--asgi",
        action="store_true",
        help="hand JSON enqueues straight to the ASGI app instead of through httpx's"
        " ASGITransport, so the client's ~0.3-1 ms per request is not counted",
    )
    p.add_argument(
        "--multipart", metavar="MP4", help="upload this file (the multipart path) instead"
    )
    p.add_argument(
        "--callgrind",
        action="store_true",
        help="run under `valgrind --tool=callgrind --instr-atstart=no`: instrument only the"
        " measured part, so the instruction count (callgrind_annotate) is per N requests",
    )
    p.add_argument("--profile", metavar="FILE", help="cProfile the measured part into FILE")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="uploadpools-cpu-") as tmp:
        asyncio.run(measure(args, Path(tmp)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
