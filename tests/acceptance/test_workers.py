"""Many worker processes on PostgreSQL, killed at random: nothing doubled, nothing lost.

1,000 active pools fire daily at 09:00 UTC for 10 days (10,000 occurrences, all of a
day's due at one instant; every other day the clock comes up to it, so the workers
prepare the firings ahead and commit them at the instant). Three `uploadpools worker` processes run the engine; every
~1.5 s one of them is SIGKILLed and restarted (two kills a day, mid-burst). Time moves through a shared clock-offset
file (a FrozenClock cannot cross processes); the test waits for the processes, it never
sleeps to let time pass.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, insert, select

from conftest import SECRET, Receiver, _truncate
from uploadpools.auth.service import create_user
from uploadpools.config import Settings
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

BIN = Path(sys.executable).with_name("uploadpools")
POOLS = 1000
DAYS = 10
STALL_S = 120  # see the hang guard in the test
DAY0 = datetime(2026, 6, 1, 9, 0, tzinfo=UTC)
pytestmark = [pytest.mark.asyncio, pytest.mark.slow]


def set_fake_now(offset_file: Path, fake: datetime) -> None:
    offset = (fake - datetime.now(UTC)).total_seconds()
    tmp = offset_file.with_suffix(".tmp")
    tmp.write_text(f"{offset:.6f}")
    tmp.replace(offset_file)


async def seed(settings: Settings, webhook_url: str, now: datetime) -> None:
    engine = create_engine(settings)
    maker = create_sessionmaker(engine)
    box = SecretBox(settings.secret())
    async with session_scope(maker) as s:
        user, ws = await create_user(
            s, email="load@example.com", password="pw", now=now, plan="paid"
        )
        account = Account(
            workspace_id=ws.id,
            platform="webhook",
            name="sink",
            status="connected",
            credentials=box.encrypt({"url": webhook_url, "secret": None}),
            created_at=now,
            updated_at=now,
        )
        media = Media(
            workspace_id=ws.id,
            state="ready",
            storage_key=f"{ws.id}/xx/none",
            size=1000,
            sha256="0" * 64,
            content_type="video/mp4",
            duration_s=1.0,
            width=64,
            height=64,
            created_at=now,
        )
        s.add_all([account, media])
        await s.flush()
        pools, slots, links, items, logs = [], [], [], [], []
        for p in range(POOLS):
            pid, sid = new_id(), new_id()
            pools.append(
                dict(
                    id=pid,
                    workspace_id=ws.id,
                    name=f"p{p}",
                    timezone="UTC",
                    state="active",
                    grace_minutes=15,
                    created_at=now,
                    updated_at=now,
                )
            )
            logs.append(dict(id=new_id(), pool_id=pid, state="active", at=now))
            slots.append(
                dict(
                    id=sid,
                    pool_id=pid,
                    rank=0,
                    time="09:00",
                    days_mask=127,
                    next_fire_at=DAY0,
                    next_local_date=DAY0.date(),
                    created_at=now,
                    schedule_changed_at=now,
                )
            )
            links.append(dict(slot_id=sid, account_id=account.id, rank=0))
            for i in range(DAYS):
                items.append(
                    dict(
                        id=new_id(),
                        workspace_id=ws.id,
                        pool_id=pid,
                        media_id=media.id,
                        status="queued",
                        seq=(i + 1) << 20,
                        title=f"p{p}-{i}",
                        caption="",
                        options={},
                        enqueued_at=now,
                    )
                )
        for model, rows in (
            (Pool, pools),
            (PoolStateChange, logs),
            (Slot, slots),
            (SlotAccount, links),
            (QueueItem, items),
        ):
            await s.execute(insert(model), rows)
    await engine.dispose()


def start_worker(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [str(BIN), "worker"], env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT
    )


@pytest.fixture
def clean_pg(pg_database: str) -> str:
    _truncate(pg_database)
    return pg_database


async def test_three_workers_killed_at_random_fire_everything_exactly_once(
    clean_pg: str, tmp_path: Path, receiver: Receiver
) -> None:
    pg_database = clean_pg
    offset_file = tmp_path / "clock-offset"
    data = tmp_path / "data"
    settings = Settings(
        _env_file=None, env="test", data_dir=data, database_url=pg_database, secret_key=SECRET
    )  # type: ignore[call-arg]
    set_fake_now(offset_file, DAY0 - timedelta(minutes=1))
    await seed(settings, receiver.url, DAY0 - timedelta(minutes=1))

    env = {k: v for k, v in os.environ.items() if not k.startswith("UPLOADPOOLS_")} | {
        "UPLOADPOOLS_ENV": "test",
        "UPLOADPOOLS_DATABASE_URL": pg_database,
        "UPLOADPOOLS_DATA_DIR": str(data),
        "UPLOADPOOLS_SECRET_KEY": SECRET,
        "UPLOADPOOLS_CLOCK_OFFSET_FILE": str(offset_file),
        "UPLOADPOOLS_PRIVATE_NETWORKS_ALLOWED": "127.0.0.0/8",
        "UPLOADPOOLS_LEASE_SECONDS": "5",
        "UPLOADPOOLS_ENGINE_IDLE_SECONDS": "1",
        "UPLOADPOOLS_DISPATCH_CONCURRENCY": "16",
    }
    logs = tmp_path / "workers.log"
    workers = [start_worker(env, logs) for _ in range(3)]
    engine = create_engine(settings)
    maker = create_sessionmaker(engine)
    rng = random.Random(20261204)
    kills = 0
    try:
        for day in range(DAYS):
            # Odd days: the clock comes up to the instant, so the workers prepare the
            # day's firings ahead and commit them at 09:00 (Ticker.prepare; a kill may
            # fall while they hold them). Even days: the instant has just passed.
            set_fake_now(offset_file, DAY0 + timedelta(days=day, seconds=-2 if day % 2 else 1))
            # A hang guard, not a timing assertion: the day fails only after STALL_S
            # without any firing or delivery moving (a starved host is slow, not stuck).
            day_started = time.monotonic()
            next_kill = time.monotonic() + 1.5
            seen: tuple[int | None, int | None] | None = None
            moved_at = time.monotonic()
            while True:
                async with maker() as s:
                    fired = await s.scalar(select(func.count()).select_from(Firing))
                    open_ = await s.scalar(
                        select(func.count())
                        .select_from(Delivery)
                        .where(Delivery.status.in_(("pending", "in_progress")))
                    )
                if fired == POOLS * (day + 1) and open_ == 0:
                    print(f"day {day}: {time.monotonic() - day_started:.1f}s, kills so far {kills}")
                    break
                if (fired, open_) != seen:
                    seen, moved_at = (fired, open_), time.monotonic()
                assert time.monotonic() - moved_at < STALL_S, (
                    f"day {day}: stuck at {fired} firings, {open_} open deliveries"
                )
                if time.monotonic() >= next_kill and kills < 2 * (day + 1):
                    victim = rng.randrange(len(workers))
                    workers[victim].send_signal(signal.SIGKILL)
                    workers[victim].wait()
                    workers[victim] = start_worker(env, logs)
                    kills += 1
                    next_kill = time.monotonic() + 1.5
                await asyncio.sleep(0.2)  # polling other processes, not moving time
    finally:
        for w in workers:
            w.send_signal(signal.SIGTERM)
        for w in workers:
            try:
                w.wait(timeout=30)
            except subprocess.TimeoutExpired:
                w.kill()

    async with maker() as s:
        firings = (
            await s.execute(
                select(
                    Firing.slot_id, Firing.local_date, Firing.outcome, Firing.item_id, Firing.kind
                )
            )
        ).all()
        deliveries = (
            await s.execute(
                select(Delivery.firing_id, Delivery.account_id, Delivery.status, Delivery.reason)
            )
        ).all()
        items = {i.id: (i.pool_id, i.seq) for i in (await s.scalars(select(QueueItem))).all()}
    await engine.dispose()

    assert kills >= DAYS
    assert "firing(s) prepared ahead for" in logs.read_text(errors="replace")
    assert len(firings) == POOLS * DAYS
    assert max(Counter((f.slot_id, f.local_date) for f in firings).values()) == 1, (
        "duplicate firing"
    )
    assert max(Counter((d.firing_id, d.account_id) for d in deliveries).values()) == 1, (
        "duplicate delivery"
    )
    assert {f.outcome for f in firings} <= {"dispatched", "skipped"}, "missed or empty within grace"
    assert {d.reason for d in deliveries if d.status == "skipped"} <= {"interrupted"}
    # Each webhook id (the delivery) reached the receiver at most once: no double posts.
    received = Counter(r["headers"].get("webhook-id") for r in receiver.requests)
    assert received and max(received.values()) == 1, "a post was sent twice"
    # FIFO: per pool, items went out in queue order, one per local date.
    by_pool: dict[str, list[tuple[date, int]]] = {}
    for f in firings:
        pool_id, seq = items[f.item_id]
        by_pool.setdefault(pool_id, []).append((f.local_date, seq))
    inversions = sum(
        1
        for seqs in by_pool.values()
        for a, b in zip(sorted(seqs), sorted(seqs)[1:], strict=False)
        if a[1] > b[1]
    )
    assert inversions == 0
    # The audit command agrees.
    r = subprocess.run(
        [
            str(BIN),
            "audit",
            "--from",
            DAY0.date().isoformat(),
            "--to",
            (DAY0 + timedelta(days=DAYS)).date().isoformat(),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert f"expected={POOLS * DAYS} ok={POOLS * DAYS} duplicates=0 gaps=0" in r.stdout
