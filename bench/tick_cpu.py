"""CPU per firing of one ticker pass, in-process: a steadier guide than wall-clock
lateness on a shared machine.

    .venv/bin/python bench/tick_cpu.py [--slots N] [--store sqlite|postgres]
        [--batch-size B] [--history-days D] [--src DIR] [--profile FILE] [--sql-timing]

Seeds a fresh store as ``burst.py`` does (N pools due at T, warm-up pools fired
first), sets a frozen clock to T and runs ``Ticker.tick()`` once, which fires
everything due, batch after batch. Prints the wall time, this process's CPU time
(event loop plus the SQLite driver thread) and, on PostgreSQL, the CPU time of
the run database's server backends, each per firing. No poller, no other
process: run it twice back to back to compare two versions of the code, e.g.
``--src /tmp/other-checkout/src`` for another checkout (imported instead of this one).
The start-up heap is frozen first, as ``uploadpools worker`` does.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"


def backend_cpu(dbname: str) -> float:
    """CPU seconds used so far by the PostgreSQL backends serving `dbname` (local server)."""
    import psutil

    total = 0.0
    for proc in psutil.process_iter(["name", "cmdline"]):
        cmd = " ".join(proc.info["cmdline"] or [])
        if (proc.info["name"] or "").startswith("postgres") and f" {dbname} " in f"{cmd} ":
            try:
                t = proc.cpu_times()
            except psutil.Error:
                continue
            total += t.user + t.system
    return total


async def measure(
    settings: Any, slots: int, history_days: int, profile: Path | None, sql_timing: bool = False
) -> None:
    import burst

    from uploadpools.engine.ticker import Ticker
    from uploadpools.kit.clock import FrozenClock
    from uploadpools.store.engine import create_engine, create_sessionmaker

    await burst.seed(settings, slots, history_days)
    engine = create_engine(settings)
    clock = FrozenClock(burst.WARMUP_AT + timedelta(seconds=1))
    ticker = Ticker(create_sessionmaker(engine), settings, clock)
    timer = burst.StatementTimer() if sql_timing else None
    try:
        await ticker.tick()  # the warm-up pools: connections, compiled statements
        clock.set(burst.DUE)
        try:
            from uploadpools.engine.worker import freeze_heap

            freeze_heap()
        except ImportError:  # an older checkout
            pass
        dbname = settings.database_url.rsplit("/", 1)[-1]
        pg = engine.dialect.name == "postgresql"
        prof = None
        if profile:
            import cProfile

            prof = cProfile.Profile()
            prof.enable()
        if timer:
            timer.attach(engine)
        b0 = backend_cpu(dbname) if pg else 0.0
        c0, w0 = time.process_time(), time.perf_counter()
        result = await ticker.tick()
        cpu, wall = time.process_time() - c0, time.perf_counter() - w0
        server = backend_cpu(dbname) - b0 if pg else None
        if prof:
            prof.disable()
            prof.dump_stats(str(profile))
    finally:
        await engine.dispose()
    n = max(1, result.total)
    line = (
        f"tick: firings={result.total} batch={settings.engine_batch_size} wall={wall:.2f}s "
        f"cpu={cpu:.2f}s ({cpu / n * 1e6:.0f} µs/firing)"
    )
    if server is not None:
        line += f" server={server:.2f}s ({server / n * 1e6:.0f} µs/firing)"
    print(line)
    if timer:
        timer.report()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--slots", type=int, default=10_000)
    parser.add_argument("--store", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--postgres-url", default=DEFAULT_POSTGRES_URL)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--history-days", type=int, default=1)
    parser.add_argument("--src", type=Path, default=None, help="import uploadpools from here")
    parser.add_argument("--profile", type=Path, default=None, help="cProfile the tick into FILE")
    parser.add_argument(
        "--sql-timing", action="store_true", help="time each SQL statement of the tick (wall)"
    )
    args = parser.parse_args()
    if args.src:
        sys.path.insert(0, str(args.src.resolve()))
    for k in [k for k in os.environ if k.startswith("UPLOADPOOLS_")]:
        del os.environ[k]
    from _common import temporary_postgres_database

    from uploadpools.config import Settings
    from uploadpools.store.migrate import run_upgrade

    extra = {"engine_batch_size": args.batch_size} if args.batch_size else {}
    with tempfile.TemporaryDirectory(prefix="uploadpools-tick-") as tmp:
        store = (
            temporary_postgres_database(args.postgres_url)
            if args.store == "postgres"
            else contextlib.nullcontext(f"sqlite:///{tmp}/uploadpools.db")
        )
        with store as url:
            settings = Settings(  # type: ignore[call-arg]
                _env_file=None,
                env="test",
                data_dir=Path(tmp),
                database_url=url,
                secret_key=secrets.token_urlsafe(48),
                **extra,
            )
            run_upgrade(settings)
            asyncio.run(
                measure(settings, args.slots, args.history_days, args.profile, args.sql_timing)
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
