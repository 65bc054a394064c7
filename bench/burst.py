"""Burst benchmark: N slots due at one instant; how late is each firing, how fast do they go.

    .venv/bin/python bench/burst.py [--slots N] [--store sqlite|postgres] [--workers W]
        [--postgres-url URL] [--batch-size B] [--history-days D] [--queue-depth Q] [--timeout S]
        [--poll-margin S] [--poll-interval S] [--lanes L] [--no-checkpoint] [--notice S]
        [--profile FILE | --sql-timing] [--against DIR [--runs N]]

Seeds N active pools on a fresh store (SQLite in a temp dir, or a fresh PostgreSQL
database that is dropped afterwards), each with one daily slot at 09:00 UTC on a
fixed day T, one webhook account link, and one ready video queued, so every firing
pops an item and creates a delivery in the same transaction. By default each pool
also has one past day of posted videos (``--history-days``), so the tables are not
empty, as on a service that has been running. Then:

1. The clock of every process is the host clock shifted by a shared offset file
   (``UPLOADPOOLS_CLOCK_OFFSET_FILE``): "now" is T - 3 s when the engines wait for T.
   On PostgreSQL they use those seconds to prepare T's firings ahead and commit them at
   T (``Ticker.prepare``, docs/decisions.md), so the throughput line counts from T - 3 s
   (``--notice S`` gives them S seconds instead).
2. The engine runs the ticker loop only (``engine_roles=["ticker"]``): on SQLite in this
   process (``Engine`` built as ``uploadpools worker`` builds it), on PostgreSQL as W
   ``uploadpools worker`` processes. A few warm-up pools fire before T (connections,
   compiled statements), and are left out of the figures. On PostgreSQL the server is
   then ``CHECKPOINT``ed (``--no-checkpoint`` skips it): on a real server a checkpoint
   has passed since a daily slot's rows were last written.
3. A poller in a separate process reads ``firings`` every ~50 ms and records, for each
   firing, the (offset) clock time it was first visible, i.e. committed with its
   deliveries. Lateness = visible - T.
4. Afterwards: duplicates per (slot, local date), firings that did not happen (or were
   recorded as missed), deliveries, slots left due.

``--against DIR --runs N`` alternates N runs of this code with N of the ``uploadpools``
package under DIR (a detached worktree's ``src``; the worker processes inherit the
``PYTHONPATH``), each a fresh process and store, prints every run's figures, each side's
medians, and the ratio of the p99 medians. The same code's p99 moves by 10 to 20 % from run
to run on these machines.

The last line printed (of a single run) is the summary:

    burst: slots=N store=S workers=W p50=<x>s p99=<y>s dropped=D duplicates=K

See bench/README.md for the figures and how to read them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import multiprocessing
import os
import pstats
import re
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from _common import (
    REPO,
    install_sigterm_as_exit,
    quantiles_ms,
    temporary_postgres_database,
    uploadpools_executable,
)

DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"
DUE = datetime(2026, 6, 1, 9, 0, tzinfo=UTC)  # T: every measured slot falls due here
LEAD_S = 3.0  # "now" is T - LEAD_S when the engines start waiting for T
BEFORE_START = timedelta(minutes=2)  # the clock while things start up: T - 2 min
WARMUP_POOLS = 20
WARMUP_AT = DUE - timedelta(minutes=3)  # due (and 1 min overdue, within grace) at start-up
# Every poll costs the database a count over the last POLL_MARGIN_S of firings (~19,000
# rows at 19,000 firings/s): every 10 ms that took ~2.4 CPU-s of the PostgreSQL server in
# a 6 s burst on 2 cores, CPU the engine needed. Every 50 ms measures a burst as precisely
# (a firing is seen at most one interval late: an overestimate, never less).
POLL_INTERVAL_S = 0.050
# Firing ids are ULIDs whose millisecond part is the writer's host clock when the id was
# made, not at commit. One process makes strictly increasing ids and commits its batches
# in order, but with several writers a row can become visible after rows with larger
# ids. Each poll therefore re-reads every id made up to POLL_MARGIN_S before the newest
# id seen so far (counts per id millisecond drop the repeats); a final full sweep counts
# any it still missed. On PostgreSQL the engines prepare T's firings from T - notice on
# and commit them at T (Ticker.prepare): their ids are up to the notice older than their
# commit, so the default margin adds it (with 1 s alone, a lane committing a moment after
# another was only found by the final sweep, and counted as late as that).
POLL_MARGIN_S = 1.0

GOAL = {"sqlite": (10_000, 1, 1.0), "postgres": (100_000, 2, 3.0)}  # slots, workers, p99 s

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"  # the ids' Crockford base32


class BenchFailed(Exception):
    """The run cannot produce honest figures."""


# -- small helpers ---------------------------------------------------------------------------


def set_fake_now(offset_file: Path, fake: datetime) -> None:
    """Every process reading the offset file now believes it is ``fake``."""
    offset = (fake - datetime.now(UTC)).total_seconds()
    tmp = offset_file.with_name(offset_file.name + ".tmp")
    tmp.write_text(f"{offset:.6f}\n")
    tmp.replace(offset_file)


def id_floor(ms: int) -> str:
    """The smallest id whose millisecond part is ``ms`` (the ids are 26-char ULIDs)."""
    value = max(ms, 0) << 80
    out = []
    for _ in range(26):
        out.append(_ALPHABET[value & 31])
        value >>= 5
    return "".join(reversed(out))


def id_ms(fid: str) -> int:
    """The millisecond part of an id (its first 10 characters are the top 50 bits)."""
    value = 0
    for ch in fid[:10]:
        value = value * 32 + _ALPHABET.index(ch)
    return value


def seconds(ms: dict[str, float], key: str) -> float:
    return ms[key] / 1000.0


@contextlib.contextmanager
def scratch_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="uploadpools-burst-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


# -- seeding ---------------------------------------------------------------------------------


async def seed(settings: Any, slots: int, history_days: int = 0, queue_depth: int = 1) -> list[str]:
    """One paid user and workspace, one webhook account, ``slots`` measured pools
    (``burst-*``) and WARMUP_POOLS warm-up pools (``warmup-*``): each pool one slot, one
    ready media row and one queued item. With ``history_days``, each pool also has that
    many past days of posted videos (item, media, firing, delivery), as a service that
    has been running would. Core inserts in chunks. Returns the warm-up pools' slot ids.

    On PostgreSQL the tables are then analysed (as autovacuum would have done on a
    service that has been running), but only with history: statistics taken while
    ``firings`` is empty make the foreign-key checks of ``deliveries`` cache sequential
    scans of ``firings`` for the connection's lifetime, quadratic in a burst, a state a
    fresh install (never analysed) or a running service does not have. SQLite is never
    analysed: the application does not run ANALYZE or ``PRAGMA optimize``."""
    from sqlalchemy import insert

    from uploadpools.auth.service import create_user
    from uploadpools.kit.crypto import SecretBox
    from uploadpools.kit.ids import new_id
    from uploadpools.models import (
        Account,
        Delivery,
        Firing,
        Media,
        Pool,
        PoolStateChange,
        QueueItem,
        Slot,
        SlotAccount,
    )
    from uploadpools.store.engine import create_engine, create_sessionmaker, session_scope

    now = DUE - timedelta(days=1)
    engine = create_engine(settings)
    maker = create_sessionmaker(engine)
    box = SecretBox(settings.secret())
    warm_slots: list[str] = []
    try:
        async with session_scope(maker) as s:
            _user, ws = await create_user(
                s, email="burst@example.com", password="burst-bench-pw", now=now, plan="paid"
            )
            account = Account(
                workspace_id=ws.id,
                platform="webhook",
                name="sink",
                status="connected",
                credentials=box.encrypt({"url": "http://127.0.0.1:9/never-called", "secret": None}),
                created_at=now,
                updated_at=now,
            )
            s.add(account)
            await s.flush()
            account_id, ws_id = account.id, ws.id

        chunk = max(500, 5000 // (1 + history_days))
        total = slots + WARMUP_POOLS
        for start in range(0, total, chunk):
            rows: dict[Any, list[dict[str, Any]]] = defaultdict(list)
            for i in range(start, min(start + chunk, total)):
                warm = i >= slots
                at = WARMUP_AT if warm else DUE
                name = f"warmup-{i - slots}" if warm else f"burst-{i}"
                pid, sid, mid = new_id(), new_id(), new_id()
                if warm:
                    warm_slots.append(sid)
                rows[Pool].append(
                    dict(
                        id=pid,
                        workspace_id=ws_id,
                        name=name,
                        timezone="UTC",
                        state="active",
                        grace_minutes=15,
                        created_at=now,
                        updated_at=now,
                    )
                )
                rows[PoolStateChange].append(dict(id=new_id(), pool_id=pid, state="active", at=now))
                rows[Slot].append(
                    dict(
                        id=sid,
                        pool_id=pid,
                        rank=0,
                        time=at.strftime("%H:%M"),
                        days_mask=127,
                        next_fire_at=at,
                        next_local_date=at.date(),
                        created_at=now,
                        schedule_changed_at=now,
                    )
                )
                rows[SlotAccount].append(dict(slot_id=sid, account_id=account_id, rank=0))
                rows[Media].append(
                    dict(
                        id=mid,
                        workspace_id=ws_id,
                        state="ready",
                        storage_key=f"{ws_id}/{mid[-2:]}/{mid}",
                        size=1000,
                        sha256="0" * 64,
                        content_type="video/mp4",
                        duration_s=1.0,
                        width=64,
                        height=64,
                        created_at=now,
                    )
                )
                rows[QueueItem].append(
                    dict(
                        id=new_id(),
                        workspace_id=ws_id,
                        pool_id=pid,
                        media_id=mid,
                        status="queued",
                        seq=(history_days + 1) << 20,
                        title=name,
                        caption="",
                        options={},
                        enqueued_at=now,
                    )
                )
                for k in range(1, queue_depth):  # the rest of the queue, behind the head
                    rows[QueueItem].append(
                        {
                            **rows[QueueItem][-1],
                            "id": new_id(),
                            "seq": (history_days + 1 + k) << 20,
                            "title": f"{name}-{k}",
                        }
                    )
                for d in range(1, history_days + 1):
                    past = at - timedelta(days=d)
                    hmid, hiid, hfid = new_id(), new_id(), new_id()
                    rows[Media].append({**rows[Media][-1], "id": hmid})
                    rows[QueueItem].append(
                        dict(
                            id=hiid,
                            workspace_id=ws_id,
                            pool_id=pid,
                            media_id=hmid,
                            status="dispatched",
                            seq=(history_days + 1 - d) << 20,
                            title=f"{name}-d{d}",
                            caption="",
                            options={},
                            enqueued_at=now - timedelta(days=history_days),
                            dispatched_at=past,
                            finished_at=past,
                        )
                    )
                    rows[Firing].append(
                        dict(
                            id=hfid,
                            pool_id=pid,
                            slot_id=sid,
                            kind="scheduled",
                            local_date=past.date(),
                            scheduled_for=past,
                            fired_at=past,
                            outcome="dispatched",
                            covers_until=None,
                            missed_count=0,
                            item_id=hiid,
                        )
                    )
                    rows[Delivery].append(
                        dict(
                            id=new_id(),
                            firing_id=hfid,
                            item_id=hiid,
                            account_id=account_id,
                            platform="webhook",
                            status="posted",
                            attempts=1,
                            lease_token=1,
                            job={},
                            remote_id="x",
                            created_at=past,
                            finished_at=past,
                        )
                    )
            async with session_scope(maker) as s:
                for model in (
                    Pool,
                    PoolStateChange,
                    Slot,
                    SlotAccount,
                    Media,
                    QueueItem,
                    Firing,
                    Delivery,
                ):
                    if rows[model]:
                        await s.execute(insert(model.__table__), rows[model])
        if engine.dialect.name == "postgresql" and history_days > 0:
            from sqlalchemy import text

            async with engine.connect() as conn:
                conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
                await conn.execute(text("ANALYZE"))
    finally:
        await engine.dispose()
    return warm_slots


# -- the poller (a separate process) -----------------------------------------------------------


def poller_main(
    conn: Connection,
    store: str,
    url: str,
    offset_file: str,
    warm_slots: list[str],
    expected: int,
    timeout_s: float,
    margin_s: float,
    interval_s: float,
) -> None:
    try:
        asyncio.run(
            _poll(
                conn,
                store,
                url,
                Path(offset_file),
                set(warm_slots),
                expected,
                timeout_s,
                margin_s,
                interval_s,
            )
        )
    except BaseException:
        with contextlib.suppress(Exception):
            conn.send(("error", traceback.format_exc()))
        raise


async def _poll(
    conn: Connection,
    store: str,
    url: str,
    offset_file: Path,
    warm: set[str],
    expected: int,
    timeout_s: float,
    margin_s: float,
    interval_s: float,
) -> None:
    from uploadpools.kit.clock import OffsetClock

    clock = OffsetClock(offset_file)
    # One row per id millisecond (the first 10 characters of an id), counted by the
    # database: a poll re-reads the last `margin_s` of ids, but sends back a few counts,
    # not thousands of rows, so measuring does not take the CPU the engine needs.
    day = DUE.date().isoformat()
    warm_list = sorted(warm)
    if store == "sqlite":
        import sqlite3

        db = sqlite3.connect(url, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA busy_timeout=30000")
        marks = ", ".join("?" * len(warm_list)) or "''"
        q = (
            "SELECT substr(id, 1, 10), count(*) FROM firings WHERE id > ? AND local_date = ? "
            f"AND kind = 'scheduled' AND slot_id NOT IN ({marks}) GROUP BY 1"
        )

        async def fetch(floor: str) -> list[tuple[str, int]]:
            return db.execute(q, (floor, day, *warm_list)).fetchall()

        async def close() -> None:
            db.close()
    else:
        import asyncpg

        pg = await asyncpg.connect(url)
        q = (
            "SELECT substr(id, 1, 10), count(*) FROM firings WHERE id > $1 AND local_date = $2 "
            "AND kind = 'scheduled' AND slot_id <> ALL($3::text[]) GROUP BY 1"
        )
        the_day = DUE.date()

        async def fetch(floor: str) -> list[tuple[str, int]]:
            return [(r[0], r[1]) for r in await pg.fetch(q, floor, the_day, warm_list)]

        async def close() -> None:
            await pg.close()

    counts: dict[str, int] = {}  # firings seen per id millisecond
    times: list[float] = []  # when each firing seen was first visible
    cpu0 = time.process_time()
    polls = 0
    slowest = 0.0
    margin_ms = int(margin_s * 1000)
    newest_ms = time.time_ns() // 1_000_000  # nothing measured is older than this
    ready_sent = False
    try:
        while True:
            started = time.perf_counter()
            visible = (clock.now() - DUE).total_seconds()
            rows = await fetch(id_floor(newest_ms - margin_ms))
            polls += 1
            for prefix, n in rows:
                new = n - counts.get(prefix, 0)
                if new > 0:
                    counts[prefix] = n
                    times.extend([visible] * new)
                    newest_ms = max(newest_ms, id_ms(prefix))
            took = time.perf_counter() - started
            slowest = max(slowest, took)
            if not ready_sent:
                conn.send(("ready", None))
                ready_sent = True
            if len(times) >= expected or visible > timeout_s or conn.poll():
                break
            await asyncio.sleep(max(0.0, interval_s - took))
    finally:
        await close()
    conn.send(
        (
            "done",
            {
                "seen": times,
                "polls": polls,
                "slowest_poll_s": slowest,
                "poller_cpu_s": time.process_time() - cpu0,
            },
        )
    )


def start_poller(
    store: str,
    url: str,
    offset_file: Path,
    warm_slots: list[str],
    expected: int,
    timeout_s: float,
    margin_s: float,
    interval_s: float = POLL_INTERVAL_S,
) -> tuple[multiprocessing.process.BaseProcess, Connection]:
    ctx = multiprocessing.get_context("spawn")
    ours, theirs = ctx.Pipe()
    proc = ctx.Process(
        target=poller_main,
        args=(
            theirs,
            store,
            url,
            str(offset_file),
            warm_slots,
            expected,
            timeout_s,
            margin_s,
            interval_s,
        ),
        name="burst-poller",
        daemon=True,
    )
    proc.start()
    theirs.close()
    if not ours.poll(60):
        raise BenchFailed("the poller did not start within 60 s")
    try:
        kind, payload = ours.recv()
    except EOFError:
        raise BenchFailed(f"the poller exited with {proc.exitcode} while starting") from None
    if kind != "ready":
        raise BenchFailed(f"the poller failed:\n{payload}")
    return proc, ours


def poller_result(conn: Connection, wait_s: float) -> dict[str, Any]:
    if not conn.poll(wait_s):
        raise BenchFailed("the poller did not report")
    try:
        kind, payload = conn.recv()
    except EOFError:
        raise BenchFailed("the poller exited without reporting") from None
    if kind != "done":
        raise BenchFailed(f"the poller failed:\n{payload}")
    result: dict[str, Any] = payload
    return result


# -- checks after the burst ----------------------------------------------------------------


async def verify(settings: Any) -> dict[str, Any]:
    from sqlalchemy import text

    from uploadpools.kit.clock import clock_for
    from uploadpools.store.engine import create_engine

    clock = clock_for(settings.clock_offset_file)

    engine = create_engine(settings)
    burst = "JOIN pools p ON p.id = f.pool_id WHERE p.name LIKE 'burst-%' AND f.local_date = :day"
    sqlite = engine.dialect.name == "sqlite"
    day = {"day": DUE.date().isoformat() if sqlite else DUE.date()}
    try:
        async with engine.connect() as conn:
            swept_late = (clock.now() - DUE).total_seconds()
            ids = {
                r[0]
                for r in await conn.execute(
                    text(f"SELECT f.id FROM firings f {burst} AND f.kind = 'scheduled'"), day
                )
            }
            outcomes = dict(
                (
                    await conn.execute(
                        text(
                            f"SELECT f.outcome, count(*) FROM firings f {burst} "
                            "AND f.kind = 'scheduled' GROUP BY f.outcome"
                        ),
                        day,
                    )
                ).all()
            )
            fired_pairs = await conn.scalar(
                text(
                    "SELECT count(*) FROM (SELECT DISTINCT f.slot_id, f.local_date "
                    f"FROM firings f {burst} AND f.kind = 'scheduled' "
                    "AND f.outcome <> 'missed') x"
                ),
                day,
            )
            duplicates = (
                await conn.execute(
                    text(
                        "SELECT slot_id, local_date, count(*) FROM firings WHERE kind = 'scheduled' "
                        "GROUP BY slot_id, local_date HAVING count(*) > 1"
                    )
                )
            ).all()
            deliveries = await conn.scalar(
                text(
                    "SELECT count(*) FROM deliveries d JOIN firings f ON f.id = d.firing_id "
                    f"{burst}"
                ),
                day,
            )
            items_taken = await conn.scalar(
                text(
                    "SELECT count(DISTINCT q.id) FROM queue_items q JOIN firings f "
                    f"ON f.item_id = q.id {burst} AND q.status <> 'queued'"
                ),
                day,
            )
            still_due = await conn.scalar(
                text(
                    "SELECT count(*) FROM slots s JOIN pools p ON p.id = s.pool_id "
                    "WHERE p.name LIKE 'burst-%' AND s.next_fire_at <= :due"
                ),
                {"due": DUE.replace(tzinfo=None) if sqlite else DUE},
            )
    finally:
        await engine.dispose()
    return {
        "ids": ids,
        "swept_late": swept_late,
        "outcomes": outcomes,
        "fired_pairs": int(fired_pairs or 0),
        "duplicates": len(duplicates),
        "deliveries": int(deliveries or 0),
        "items_taken": int(items_taken or 0),
        "still_due": int(still_due or 0),
    }


# -- running the engine ------------------------------------------------------------------------


class CpuWatch:
    """How much CPU the rest of the machine used while the burst ran: total busy CPU time
    minus that of this benchmark's processes and the PostgreSQL server's."""

    def __init__(self, pids: list[int]) -> None:
        import psutil

        self.psutil = psutil
        self.pids = pids

    def _ours(self) -> dict[int, float]:
        out: dict[int, float] = {}
        procs = []
        for pid in self.pids:
            with contextlib.suppress(self.psutil.Error):
                procs.append(self.psutil.Process(pid))
        procs += [p for p in self.psutil.process_iter(["name"]) if p.info["name"] == "postgres"]
        for proc in procs:
            with contextlib.suppress(self.psutil.Error):
                t = proc.cpu_times()
                out[proc.pid] = t.user + t.system
        return out

    def _busy(self) -> float:
        t = self.psutil.cpu_times()
        return float(sum(t) - t.idle - getattr(t, "iowait", 0.0))

    def start(self) -> None:
        self.t0, self.busy0, self.ours0 = time.monotonic(), self._busy(), self._ours()
        self.times0 = self.psutil.cpu_times()

    def stop(self, also_mine: float = 0.0) -> tuple[float, float, float, float]:
        """(CPU seconds used by other processes, as a share of the machine's capacity,
        the wall time watched, CPU seconds of the PostgreSQL server);
        ``also_mine``: CPU time of our processes that have exited meanwhile."""
        wall, busy, ours = time.monotonic() - self.t0, self._busy() - self.busy0, self._ours()
        t1 = self.psutil.cpu_times()
        self.kinds = {
            k: getattr(t1, k) - getattr(self.times0, k)
            for k in ("user", "system", "softirq", "irq", "steal", "iowait")
            if hasattr(t1, k)
        }
        # A process started meanwhile (a PostgreSQL backend for a new connection) counts
        # whole: its life is inside the window.
        used = {p: v - self.ours0.get(p, 0.0) for p, v in ours.items()}
        mine = also_mine + sum(used.values())
        server = sum(v for p, v in used.items() if p not in self.pids)
        others = max(0.0, busy - mine)
        return others, others / max(wall * (os.cpu_count() or 1), 1e-9), wall, server


class StatementTimer:
    """Wall time of every SQL statement the engine runs (first 90 chars as the key)."""

    def __init__(self) -> None:
        self.stats: dict[str, list[float]] = defaultdict(lambda: [0, 0.0])

    def attach(self, engine: Any) -> None:
        from sqlalchemy import event

        @event.listens_for(engine.sync_engine, "before_cursor_execute")
        def _before(conn: Any, cursor: Any, statement: str, *a: Any) -> None:
            conn.info.setdefault("_burst_t0", []).append(time.perf_counter())

        @event.listens_for(engine.sync_engine, "after_cursor_execute")
        def _after(conn: Any, cursor: Any, statement: str, *a: Any) -> None:
            t0 = conn.info["_burst_t0"].pop()
            key = " ".join(statement.split())[:90]
            s = self.stats[key]
            s[0] += 1
            s[1] += time.perf_counter() - t0

    def report(self, top: int = 15) -> None:
        rows = sorted(self.stats.items(), key=lambda kv: -kv[1][1])[:top]
        total = sum(v[1] for v in self.stats.values())
        print(
            f"  SQL wall time in the engine: {total:.2f} s over {sum(int(v[0]) for v in self.stats.values())} executions"
        )
        for key, (n, t) in rows:
            print(f"    {t:7.3f} s {int(n):6d}x  {key}")


async def drive_in_process(
    settings: Any,
    offset_file: Path,
    poller: Connection,
    wait_s: float,
    profile: Path | None,
    sql_timing: bool,
) -> dict[str, Any]:
    """SQLite: the engine in this process, built like `uploadpools worker` builds it."""
    import httpx

    from uploadpools.engine.worker import Engine, freeze_heap
    from uploadpools.kit.clock import clock_for
    from uploadpools.media.service import MediaFetcher, storage_for
    from uploadpools.store.engine import create_engine, create_sessionmaker

    engine = create_engine(settings)
    timer = StatementTimer() if profile or sql_timing else None
    if timer:
        timer.attach(engine)
    maker = create_sessionmaker(engine)
    clock = clock_for(settings.clock_offset_file)
    storage = storage_for(settings)
    prof = cProfile.Profile() if profile else None
    try:
        async with httpx.AsyncClient(timeout=httpx.Timeout(30.0, connect=10.0)) as http:
            fetcher = MediaFetcher(maker, settings, clock, storage, http)
            runner = Engine(maker, settings, clock, storage, http, fetcher, role="worker")
            set_fake_now(offset_file, DUE - timedelta(seconds=LEAD_S))
            freeze_heap()
            await runner.start()
            cpu0 = time.process_time()
            try:
                if prof:
                    # Let the warm-up firings go first: profile only the burst.
                    await asyncio.sleep(LEAD_S - 0.5)
                    prof.enable()
                result = await asyncio.to_thread(poller_result, poller, wait_s)
                result["engine_cpu_s"] = time.process_time() - cpu0
            finally:
                if prof:
                    prof.disable()
                await runner.stop()
    finally:
        await engine.dispose()
    if prof and profile:
        prof.dump_stats(str(profile))
        print(f"\nprofile of the burst (cProfile, main thread) written to {profile}")
        st = pstats.Stats(prof)
        st.sort_stats("cumulative").print_stats(30)
        st.sort_stats("tottime").print_stats(25)
    if timer:
        timer.report()
    return result


class Workers:
    """W `uploadpools worker` processes (ticker role only), stopped with SIGTERM."""

    def __init__(self, n: int, env: dict[str, str], workdir: Path) -> None:
        self.n = n
        self.env = env
        self.workdir = workdir
        self.procs: list[subprocess.Popen[bytes]] = []
        self.logs: list[Path] = []

    def start(self) -> None:
        exe = uploadpools_executable()
        for i in range(self.n):
            log = self.workdir / f"worker-{i}.log"
            self.logs.append(log)
            with log.open("wb") as out:
                self.procs.append(
                    subprocess.Popen(
                        [exe, "worker"],
                        cwd=self.workdir,
                        env=self.env,
                        stdin=subprocess.DEVNULL,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                )

    def cpu_seconds(self) -> float:
        import psutil

        total = 0.0
        for p in self.procs:
            with contextlib.suppress(psutil.Error):
                t = psutil.Process(p.pid).cpu_times()
                total += t.user + t.system
        return total

    def check_alive(self) -> None:
        for i, p in enumerate(self.procs):
            if p.poll() is not None:
                raise BenchFailed(f"worker {i} exited with {p.returncode}:\n{self.tail(i)}")

    def tail(self, i: int, lines: int = 30) -> str:
        try:
            return "\n".join(self.logs[i].read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def problems(self) -> list[str]:
        marks = ("WARNING", "ERROR", "CRITICAL", "Traceback")
        out = []
        for log in self.logs:
            with contextlib.suppress(OSError):
                out += [
                    ln
                    for ln in log.read_text(errors="replace").splitlines()
                    if any(m in ln for m in marks)
                ]
        return out

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(10)


def wait_workers_ready(workers: Workers, pg_url: str, timeout_s: float = 90.0) -> None:
    """Every worker has registered its heartbeat and the warm-up pools have fired."""
    import asyncpg

    async def counts() -> tuple[int, int]:
        conn = await asyncpg.connect(pg_url)
        try:
            nodes = await conn.fetchval(
                "SELECT count(*) FROM engine_nodes WHERE stopped_at IS NULL AND pid = ANY($1::int[])",
                [p.pid for p in workers.procs],
            )
            warm = await conn.fetchval(
                "SELECT count(*) FROM firings f JOIN pools p ON p.id = f.pool_id "
                "WHERE p.name LIKE 'warmup-%'"
            )
            return int(nodes), int(warm)
        finally:
            await conn.close()

    deadline = time.monotonic() + timeout_s
    while True:
        workers.check_alive()
        nodes, warm = asyncio.run(counts())
        if nodes >= workers.n and warm >= WARMUP_POOLS:
            return
        if time.monotonic() > deadline:
            raise BenchFailed(
                f"workers not ready after {timeout_s:g} s: {nodes}/{workers.n} heartbeats, "
                f"{warm}/{WARMUP_POOLS} warm-up firings\n" + workers.tail(0)
            )
        time.sleep(0.2)


def notify_wakeup(pg_url: str) -> None:
    """Wake the sleeping tickers (they recompute their sleep from the moved clock)."""
    import asyncpg

    from uploadpools.engine.wakeup import CHANNEL

    async def go() -> None:
        conn = await asyncpg.connect(pg_url)
        try:
            await conn.execute(f"NOTIFY {CHANNEL}")
        finally:
            await conn.close()

    asyncio.run(go())


def checkpoint(pg_url: str) -> str | None:
    """``CHECKPOINT`` the server; None, or why it could not (it needs a superuser or the
    ``pg_checkpoint`` role)."""
    import asyncpg

    async def go() -> None:
        conn = await asyncpg.connect(pg_url)
        try:
            await conn.execute("CHECKPOINT")
        finally:
            await conn.close()

    try:
        asyncio.run(go())
    except asyncpg.PostgresError as error:
        return str(error)
    return None


def wal_counters(pg_url: str) -> tuple[int, int, int, str] | None:
    """The server's WAL records, full-page images and bytes so far (``pg_stat_wal``,
    PostgreSQL 14+; cluster-wide) and its insert position, or None where they cannot be
    read."""
    import asyncpg

    async def go() -> tuple[int, int, int, str]:
        conn = await asyncpg.connect(pg_url)
        try:
            row = await conn.fetchrow(
                "SELECT wal_records, wal_fpi, wal_bytes, pg_current_wal_insert_lsn()::text"
                " FROM pg_stat_wal"
            )
            return int(row[0]), int(row[1]), int(row[2]), row[3]
        finally:
            await conn.close()

    try:
        return asyncio.run(go())
    except (asyncpg.PostgresError, OSError):
        return None


# -- the run -----------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> int:
    from uploadpools.config import Settings
    from uploadpools.store.migrate import run_upgrade

    # Only what this benchmark sets reaches the settings (in this process and the workers).
    for k in [k for k in os.environ if k.startswith("UPLOADPOOLS_")]:
        del os.environ[k]
    store, n, w = args.store, args.slots, args.workers
    timeout_s = args.timeout or (120.0 if store == "sqlite" else 300.0)
    secret = secrets.token_urlsafe(48)
    print(f"burst: {n:,} slots due at {DUE.isoformat()} on {store}, {w} engine process(es)")

    with contextlib.ExitStack() as stack:
        workdir = stack.enter_context(scratch_dir())
        data = workdir / "data"
        offset_file = workdir / "clock-offset"
        set_fake_now(offset_file, DUE - BEFORE_START)
        if store == "postgres":
            db_url = stack.enter_context(temporary_postgres_database(args.postgres_url))
            poll_url = db_url
        else:
            db_path = data / "uploadpools.db"
            db_url = f"sqlite:///{db_path}"
            poll_url = str(db_path)
        extra: dict[str, Any] = {}
        if args.batch_size:
            extra["engine_batch_size"] = args.batch_size
        settings = Settings(
            _env_file=None,
            env="test",
            data_dir=data,
            database_url=db_url,
            secret_key=secret,
            engine_roles=["ticker"],
            clock_offset_file=offset_file,
            **extra,
        )  # type: ignore[call-arg]
        print(
            f"  ticker batch size {settings.engine_batch_size}, history {args.history_days} day(s), "
            f"data in {workdir}"
        )

        t0 = time.perf_counter()
        run_upgrade(settings)
        warm_slots = asyncio.run(seed(settings, n, args.history_days, args.queue_depth))
        print(
            f"  migrated and seeded {n + WARMUP_POOLS:,} pools in {time.perf_counter() - t0:.1f} s"
        )

        workers: Workers | None = None
        if store == "postgres":
            env = {k: v for k, v in os.environ.items() if not k.startswith("UPLOADPOOLS_")}
            env.update(
                {
                    "UPLOADPOOLS_ENV": "test",
                    "UPLOADPOOLS_ENGINE_ROLES": "ticker",
                    "UPLOADPOOLS_DATABASE_URL": db_url,
                    "UPLOADPOOLS_SECRET_KEY": secret,
                    "UPLOADPOOLS_DATA_DIR": str(data),
                    "UPLOADPOOLS_CLOCK_OFFSET_FILE": str(offset_file),
                    "PYTHONUNBUFFERED": "1",
                }
            )
            if args.batch_size:
                env["UPLOADPOOLS_ENGINE_BATCH_SIZE"] = str(args.batch_size)
            if args.lanes:
                env["UPLOADPOOLS_TICKER_CONCURRENCY"] = str(args.lanes)
            workers = Workers(w, env, workdir)
            stack.callback(workers.stop)
            workers.start()
            wait_workers_ready(workers, db_url)
            print(f"  {w} worker(s) up, warm-up pools fired")

        poller, conn = start_poller(
            store,
            poll_url,
            offset_file,
            warm_slots,
            n,
            timeout_s,
            args.poll_margin if args.poll_margin is not None else POLL_MARGIN_S + args.notice,
            args.poll_interval,
        )
        watch = CpuWatch(
            [os.getpid(), poller.pid or 0, *(p.pid for p in (workers.procs if workers else []))]
        )
        watch.start()
        stack.callback(lambda: poller.is_alive() and poller.terminate())
        wait_s = timeout_s + args.notice + 60
        if store == "sqlite":
            result = asyncio.run(
                drive_in_process(settings, offset_file, conn, wait_s, args.profile, args.sql_timing)
            )
        else:
            assert workers is not None
            if args.checkpoint:
                # A slot fires once a day: by then a checkpoint has passed since its rows
                # were last written, so the burst's first change to each page logs the
                # page whole (full_page_writes). Seeded just now, the rows would not, or
                # only some would, as a checkpoint happened to fall during the seeding:
                # both cheaper than a real day and varying from run to run.
                failed = checkpoint(db_url)
                print(
                    "  CHECKPOINT before the burst"
                    + (f": not possible ({failed}); figures will vary" if failed else "")
                )
            wal0 = wal_counters(db_url)
            cpu0 = workers.cpu_seconds()
            set_fake_now(offset_file, DUE - timedelta(seconds=args.notice))
            notify_wakeup(db_url)
            result = poller_result(conn, wait_s)
            workers.check_alive()
            result["engine_cpu_s"] = workers.cpu_seconds() - cpu0
            wal1 = wal_counters(db_url)
            if wal0 and wal1:
                result["wal"] = tuple(b - a for a, b in zip(wal0[:3], wal1[:3], strict=True))
                result["wal_range"] = (wal0[3], wal1[3])
        poller.join(10)
        result["others"] = watch.stop(also_mine=result["poller_cpu_s"])
        result["cpu_kinds"] = watch.kinds
        if workers:
            workers.stop()  # nothing fires after the poller stopped looking
        problems = workers.problems() if workers else []
        checks = asyncio.run(verify(settings))

    return report(args, result, checks, problems)


def report(
    args: argparse.Namespace, result: dict[str, Any], checks: dict[str, Any], problems: list[str]
) -> int:
    n, store, w = args.slots, args.store, args.workers
    seen: list[float] = result["seen"]
    # Firings the poller did not see (committed with an id older than its margin, or
    # after it stopped): counted, at the time of the final sweep (an upper bound).
    unseen = max(0, len(checks["ids"]) - len(seen))
    lateness = seen + [checks["swept_late"]] * unseen
    fired = checks["fired_pairs"]
    dropped = n - fired
    q = quantiles_ms(lateness)
    first, last = (min(lateness), max(lateness)) if lateness else (0.0, 0.0)
    # From T - LEAD_S: the engines may prepare the instant's firings before it
    # (Ticker.prepare), so its work starts when the clock says T is that near.
    notice = args.notice if store == "postgres" else LEAD_S
    rate = len(lateness) / (last + notice) if last + notice > 0 else float("nan")
    span = last - first
    print("")
    print(
        f"  firings visible: {len(seen):,} seen by the poller ({result['polls']} polls, "
        f"slowest {result['slowest_poll_s'] * 1000:.0f} ms)"
        + (f", {unseen:,} only in the final sweep" if unseen else "")
    )
    print(
        f"  outcomes: {dict(sorted(checks['outcomes'].items()))}; deliveries {checks['deliveries']:,}; "
        f"items taken {checks['items_taken']:,}; slots still due {checks['still_due']}"
    )
    print(f"  first commit T+{first:.3f} s, last T+{last:.3f} s (span {span:.3f} s)")
    print(
        f"  throughput: {rate:,.0f} firings/s from T - {notice:g} s (when the engines may "
        "start preparing the instant's firings) to the last commit"
    )
    print(
        "  lateness: p50 {:.3f} s  p90 {:.3f} s  p99 {:.3f} s  max {:.3f} s".format(
            seconds(q, "p50"), seconds(q, "p90"), seconds(q, "p99"), seconds(q, "max")
        )
    )
    goal_n, goal_w, goal_p99 = GOAL[store]
    if n == goal_n and w == goal_w:
        ok = seconds(q, "p99") <= goal_p99 and dropped == 0 and checks["duplicates"] == 0
        print(
            f"  goal: p99 <= {goal_p99:g} s for {goal_n:,} on {store} with {goal_w} process(es): "
            + ("met" if ok else "NOT met")
        )
    cpu = result.get("engine_cpu_s")
    if cpu is not None and lateness:
        print(
            f"  engine CPU during the burst: {cpu:.2f} s "
            f"({cpu / len(lateness) * 1e6:.0f} µs per firing; database server not included)"
        )
    wal = result.get("wal")
    if wal is not None and lateness:
        records, fpi, nbytes = wal
        start, end = result["wal_range"]
        print(
            f"  WAL written during the burst: {nbytes / 2**20:.1f} MiB; per firing "
            f"{records / len(lateness):.1f} records, {fpi / len(lateness):.2f} full-page images, "
            f"{nbytes / len(lateness):,.0f} bytes (by record type: pg_waldump -s {start} -e {end} "
            "--stats=record, before the WAL is recycled)"
        )
    other_s, other_share, watched, server_s = result["others"]
    print(
        f"  measuring: the poller used {result['poller_cpu_s']:.2f} CPU-s"
        + (
            f"; the PostgreSQL server {server_s:.2f} CPU-s (engine and poller)"
            if store == "postgres"
            else ""
        )
    )
    print(
        f"  other processes on this {os.cpu_count()}-CPU host used {other_s:.1f} CPU-s in the "
        f"{watched:.1f} s around the burst ({other_share:.0%} of the host)"
        + ("  <- disturbed: figures are pessimistic" if other_share > 0.1 else "")
    )
    print(
        "  the whole host in that time, CPU-s by kind: "
        + ", ".join(f"{k} {v:.2f}" for k, v in result["cpu_kinds"].items())
    )
    if problems:
        print(f"  worker log problems ({len(problems)}):")
        for line in problems[:10]:
            print(f"    {line}")
    print(
        f"burst: slots={n} store={store} workers={w} p50={seconds(q, 'p50'):.2f}s "
        f"p99={seconds(q, 'p99'):.2f}s dropped={dropped} duplicates={checks['duplicates']}"
    )
    return 0


_SUMMARY = re.compile(
    r"^burst: slots=\d+ .*? p50=([\d.]+)s p99=([\d.]+)s dropped=(\d+) duplicates=(\d+)"
)
_ENGINE_CPU = re.compile(r"engine CPU during the burst: ([\d.]+) s")
_SERVER_CPU = re.compile(r"the PostgreSQL server ([\d.]+) CPU-s")


def _without(argv: list[str], *options: str) -> list[str]:
    """`argv` without the given options and their values."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg in options:
            skip = True
        elif not arg.startswith(tuple(f"{o}=" for o in options)):
            out.append(arg)
    return out


def compare(against: Path, runs: int, argv: list[str]) -> int:
    """`runs` bursts of this code alternated with `runs` of the package under `against`
    (``PYTHONPATH``, which the worker processes inherit), each a fresh process and store;
    every run's figures, then each side's medians and the ratio of the p99 medians."""
    sides = {"this": REPO / "src", "against": against.resolve()}
    got: dict[str, dict[str, list[float]]] = {
        side: {"p50": [], "p99": [], "engine": [], "server": []} for side in sides
    }
    for i in range(runs):
        for side, src in sides.items():
            env = dict(os.environ, PYTHONPATH=str(src))
            proc = subprocess.run(
                [sys.executable, str(Path(__file__).resolve()), *argv],
                env=env,
                capture_output=True,
                text=True,
            )
            found = {
                name: next(filter(None, map(rx.search, proc.stdout.splitlines())), None)
                for name, rx in (("s", _SUMMARY), ("e", _ENGINE_CPU), ("v", _SERVER_CPU))
            }
            summary = found["s"]
            if proc.returncode or summary is None:
                tail = (proc.stdout + proc.stderr).strip().splitlines()[-15:]
                print(f"run {i + 1} {side} failed:", *tail, sep="\n  ")
                return 1
            got[side]["p50"].append(float(summary[1]))
            got[side]["p99"].append(float(summary[2]))
            line = (
                f"run {i + 1} {side:>7}: p50 {summary[1]} s, p99 {summary[2]} s, "
                f"dropped {summary[3]}, duplicates {summary[4]}"
            )
            for key, label in (("e", "engine"), ("v", "server")):
                if found[key] is not None:
                    got[side][label].append(float(found[key][1]))
                    line += f", {label} {found[key][1]} CPU-s"
            print(line, flush=True)
    for side, src in sides.items():
        medians = ", ".join(f"{k} {statistics.median(v):.2f}" for k, v in got[side].items() if v)
        print(f"{side} ({src}): medians {medians}")
    ratio = statistics.median(got["this"]["p99"]) / statistics.median(got["against"]["p99"])
    print(f"p99: this / against = {ratio:.3f} (medians of {runs} runs each)")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--slots", type=int, default=10_000, help="slots due at T (default 10000)")
    parser.add_argument("--store", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--workers", type=int, default=1, help="worker processes (postgres)")
    parser.add_argument(
        "--postgres-url",
        default=DEFAULT_POSTGRES_URL,
        help="an existing database; a fresh one is created next to it and dropped",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="engine_batch_size (default: the settings default)",
    )
    parser.add_argument(
        "--lanes",
        type=int,
        default=None,
        help="PostgreSQL: ticker_concurrency of each worker (default: the settings default)",
    )
    parser.add_argument(
        "--history-days",
        type=int,
        default=1,
        help="past days of posted videos per pool (default 1; 0: a fresh install)",
    )
    parser.add_argument(
        "--queue-depth",
        type=int,
        default=1,
        help="videos queued in each pool (default 1: the one the burst posts)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=None,
        help="seconds after T to wait for all firings (120 sqlite, 300 postgres)",
    )
    parser.add_argument(
        "--poll-margin",
        type=float,
        default=None,
        help="seconds of ids the poller re-reads behind the newest it saw "
        f"(default {POLL_MARGIN_S:g} + the notice)",
    )
    parser.add_argument(
        "--notice",
        type=float,
        default=LEAD_S,
        help="postgres: seconds before T at which the clock jumps close to T, i.e. how long "
        "the workers have to prepare T's firings ahead (Ticker.prepare)",
    )
    parser.add_argument(
        "--poll-interval",
        type=float,
        default=POLL_INTERVAL_S,
        help="seconds between the poller's looks at the firings (each costs the database a "
        "count over the margin)",
    )
    parser.add_argument(
        "--no-checkpoint",
        dest="checkpoint",
        action="store_false",
        help="postgres: do not CHECKPOINT the server right before the burst (see bench/README)",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        default=None,
        help="sqlite only: cProfile the burst into this file, time SQL statements",
    )
    parser.add_argument(
        "--sql-timing",
        action="store_true",
        help="sqlite only: time the engine's SQL statements (no cProfile)",
    )
    parser.add_argument(
        "--against",
        type=Path,
        default=None,
        help="alternate runs of this code with the uploadpools package under DIR",
    )
    parser.add_argument("--runs", type=int, default=3, help="runs of each side (--against)")
    args = parser.parse_args()
    if args.against:
        return compare(args.against, args.runs, _without(sys.argv[1:], "--against", "--runs"))
    if args.slots < 1 or args.workers < 1:
        parser.error("--slots and --workers must be at least 1")
    if args.store == "sqlite" and args.workers != 1:
        parser.error("sqlite runs one engine, in this process: --workers must be 1")
    if (args.profile or args.sql_timing) and args.store != "sqlite":
        parser.error("--profile and --sql-timing are for the in-process sqlite run")
    install_sigterm_as_exit()
    try:
        return run(args)
    except BenchFailed as exc:
        print(f"burst: FAILED: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
