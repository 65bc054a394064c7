"""CPU per firing of one ticker pass, in-process: a steadier guide than wall-clock
lateness on a shared machine.

    .venv/bin/python bench/tick_cpu.py [--slots N] [--store sqlite|postgres]
        [--batch-size B] [--lanes L] [--history-days D] [--queue-depth Q] [--src DIR] [--profile FILE] [--sql-timing]
        [--sql-cpu] [--against DIR [--runs N]]

Seeds a fresh store as ``burst.py`` does (N pools due at T, warm-up pools fired
first), sets a frozen clock to T and runs ``Ticker.tick()`` once, which fires
everything due, batch after batch. Prints the wall time, this process's CPU time
(event loop plus the SQLite driver thread) and, on PostgreSQL, the CPU time of
the run database's server backends, each per firing. No poller, no other
process: run it twice back to back to compare two versions of the code, e.g.
``--src /tmp/other-checkout/src`` for another checkout (imported instead of this one).
The start-up heap is frozen first, as ``uploadpools worker`` does.

``--against DIR --runs N``: an A/B comparison on a noisy host. N runs of this code (or
``--src``) alternated with N of the ``uploadpools`` package under DIR (e.g. the ``src``
of a detached worktree), each run a fresh process, seeding and database; prints every
run, then the median, mean and minimum of each side's engine and server CPU per firing,
and the ratio of the medians. Single runs on these machines vary by ±10 %.

``--sql-cpu`` (PostgreSQL): the server CPU of each statement, read from its backend's
``/proc/PID/schedstat`` (nanoseconds on CPU) before and after it; the engine's binary
COPYs, which bypass SQLAlchemy's events, are counted as ``COPY <table>``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import secrets
import statistics
import subprocess
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


class StatementCpu:
    """Server CPU per statement (PostgreSQL, local server): the statement's backend's
    on-CPU nanoseconds (``/proc/PID/schedstat``) before and after it."""

    def __init__(self) -> None:
        from collections import defaultdict

        self.stats: dict[str, list[float]] = defaultdict(lambda: [0, 0.0])

    @staticmethod
    def _ns(pid: int) -> int:
        with open(f"/proc/{pid}/schedstat") as f:
            return int(f.read().split()[0])

    def _add(self, key: str, ns: int) -> None:
        s = self.stats[" ".join(key.split())[:90]]
        s[0] += 1
        s[1] += ns / 1e9

    def attach(self, engine: Any) -> None:
        from sqlalchemy import event

        def pid(conn: Any) -> int:
            return int(conn.connection.dbapi_connection.driver_connection.get_server_pid())

        @event.listens_for(engine.sync_engine, "before_cursor_execute")
        def _before(conn: Any, cursor: Any, statement: str, *a: Any) -> None:
            conn.info.setdefault("_cpu_t0", []).append(self._ns(pid(conn)))

        @event.listens_for(engine.sync_engine, "after_cursor_execute")
        def _after(conn: Any, cursor: Any, statement: str, *a: Any) -> None:
            self._add(statement, self._ns(pid(conn)) - conn.info["_cpu_t0"].pop())

        try:
            from uploadpools.store import bulk
        except ImportError:
            return
        copy = getattr(bulk, "_copy", None)
        if copy is None:
            return

        async def timed(conn: Any, table: Any, *a: Any, **k: Any) -> Any:
            raw = await conn.get_raw_connection()
            p = int(raw.driver_connection.get_server_pid())
            t0 = self._ns(p)
            out = await copy(conn, table, *a, **k)
            self._add(f"COPY {table.name}", self._ns(p) - t0)
            return out

        bulk._copy = timed  # type: ignore[attr-defined]

    def report(self, n: int, top: int = 15) -> None:
        rows = sorted(self.stats.items(), key=lambda kv: -kv[1][1])[:top]
        total = sum(v[1] for v in self.stats.values())
        print(
            f"  server CPU of the engine's statements: {total:.3f} s ({total / n * 1e6:.1f} µs/firing)"
        )
        for key, (k, t) in rows:
            print(f"    {t / n * 1e6:6.1f} µs/firing {int(k):5d}x  {key}")


async def measure(
    settings: Any,
    slots: int,
    history_days: int,
    queue_depth: int,
    profile: Path | None,
    sql_timing: bool = False,
    sql_cpu: bool = False,
) -> None:
    import burst

    from uploadpools.engine.ticker import Ticker
    from uploadpools.kit.clock import FrozenClock
    from uploadpools.store.engine import create_engine, create_sessionmaker

    await burst.seed(settings, slots, history_days, queue_depth)
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
        cpu_timer = StatementCpu() if sql_cpu and pg else None
        if cpu_timer:
            cpu_timer.attach(engine)
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
        f"cpu={cpu:.3f}s ({cpu / n * 1e6:.0f} µs/firing)"
    )
    if server is not None:
        line += f" server={server:.3f}s ({server / n * 1e6:.0f} µs/firing)"
    print(line)
    if timer:
        timer.report()
    if cpu_timer:
        cpu_timer.report(n)


_TICK = re.compile(r"^tick: firings=(\d+) .*? cpu=([\d.]+)s .*?(?:server=([\d.]+)s|$)")


def compare(args: argparse.Namespace) -> int:
    """Alternate this code and `--against`'s, `--runs` times each, a process per run."""
    this = (args.src or Path(__file__).resolve().parent.parent / "src").resolve()
    sides = {"this": this, "against": args.against.resolve()}
    common = ["--slots", str(args.slots), "--store", args.store]
    common += ["--postgres-url", args.postgres_url, "--history-days", str(args.history_days)]
    common += ["--queue-depth", str(args.queue_depth)]
    for flag, value in (("--batch-size", args.batch_size), ("--lanes", args.lanes)):
        if value:
            common += [flag, str(value)]
    got: dict[str, dict[str, list[float]]] = {side: {"engine": [], "server": []} for side in sides}
    for i in range(args.runs):
        for side, src in sides.items():
            cmd = [sys.executable, str(Path(__file__).resolve()), *common, "--src", str(src)]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
            match = next(filter(None, map(_TICK.match, out.splitlines())), None)
            if match is None:
                raise SystemExit(f"no tick line from {src}:\n{out}")
            n = max(1, int(match[1]))
            line = f"run {i + 1} {side:>7}: engine {float(match[2]) / n * 1e6:.1f} µs/firing"
            got[side]["engine"].append(float(match[2]) / n * 1e6)
            if match[3]:
                got[side]["server"].append(float(match[3]) / n * 1e6)
                line += f", server {float(match[3]) / n * 1e6:.1f}"
            print(line, flush=True)
    for name in ("engine", "server"):
        if not all(got[side][name] for side in sides):
            continue
        for side in sides:
            values = got[side][name]
            print(
                f"{name} µs/firing, {side} ({sides[side]}): median "
                f"{statistics.median(values):.1f}, mean {statistics.mean(values):.1f}, "
                f"min {min(values):.1f}"
            )
        ratio = statistics.median(got["this"][name]) / statistics.median(got["against"][name])
        print(f"{name}: this / against = {ratio:.3f} (medians of {args.runs} runs each)")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--slots", type=int, default=10_000)
    parser.add_argument("--store", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--postgres-url", default=DEFAULT_POSTGRES_URL)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--history-days", type=int, default=1)
    parser.add_argument(
        "--queue-depth", type=int, default=1, help="videos queued in each pool (default 1)"
    )
    parser.add_argument(
        "--lanes", type=int, default=None, help="ticker_concurrency (default: the setting's)"
    )
    parser.add_argument("--src", type=Path, default=None, help="import uploadpools from here")
    parser.add_argument("--profile", type=Path, default=None, help="cProfile the tick into FILE")
    parser.add_argument(
        "--sql-timing", action="store_true", help="time each SQL statement of the tick (wall)"
    )
    parser.add_argument(
        "--sql-cpu", action="store_true", help="PostgreSQL: server CPU of each statement"
    )
    parser.add_argument(
        "--against", type=Path, default=None, help="compare with the uploadpools under DIR"
    )
    parser.add_argument("--runs", type=int, default=5, help="runs of each side (--against)")
    args = parser.parse_args()
    if args.against:
        if args.profile or args.sql_timing or args.sql_cpu:
            parser.error("--against measures whole ticks only")
        return compare(args)
    if args.src:
        sys.path.insert(0, str(args.src.resolve()))
    for k in [k for k in os.environ if k.startswith("UPLOADPOOLS_")]:
        del os.environ[k]
    from _common import temporary_postgres_database

    from uploadpools.config import Settings
    from uploadpools.store.migrate import run_upgrade

    extra: dict[str, Any] = {"engine_batch_size": args.batch_size} if args.batch_size else {}
    if args.lanes:
        extra["ticker_concurrency"] = args.lanes
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
                measure(
                    settings,
                    args.slots,
                    args.history_days,
                    args.queue_depth,
                    args.profile,
                    args.sql_timing,
                    args.sql_cpu,
                )
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
