"""Due slots → firings, set-based: one short transaction per batch of pools, a handful of
statements per batch whatever its size.

Per pool, under its row lock, due occurrences are taken in (instant, slot rank) order,
which keeps FIFO strict when two slots of one pool fall due together. A scheduled
firing is unique on (slot, local date) in the database; under the pool lock the batch
first looks the pairs up, so a slot edited to a later time the same day, a second
ticker or a restart can never fire an occurrence twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from functools import lru_cache
from operator import itemgetter
from typing import Any

from sqlalchemy import Interval, func, literal, select, true, tuple_, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from uploadpools import schedule
from uploadpools.config import Settings
from uploadpools.engine.firing import (
    DELIVERY_KEYS,
    delivery_rows,
    empty_notice,
    low_queue_message,
    notification_row,
    settle,
)
from uploadpools.kit.clock import Clock
from uploadpools.kit.ids import new_ids
from uploadpools.models import (
    Account,
    Delivery,
    EngineNode,
    Firing,
    Media,
    Pool,
    QueueItem,
    Slot,
    SlotAccount,
)
from uploadpools.models.engine_node import STALE_AFTER_SECONDS
from uploadpools.models.firing import SCHEDULED
from uploadpools.models.item import QUEUED, held_by_firing, waiting
from uploadpools.notifications.service import insert_notices
from uploadpools.ops import metrics
from uploadpools.pools import forecast
from uploadpools.store import bulk
from uploadpools.store.engine import session_scope

log = logging.getLogger(__name__)


@dataclass
class TickResult:
    fired: int = 0
    missed: int = 0
    firing_ids: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return self.fired + self.missed


class _PoolRow:
    """The pool columns the ticker reads (plain Core row, not an ORM object: a burst
    loads thousands). `empty_since`/`low_since` are set in memory and written back."""

    __slots__ = (
        "empty_since",
        "grace_minutes",
        "id",
        "low_since",
        "name",
        "state",
        "timezone",
        "workspace_id",
    )

    def __init__(self, row: Any) -> None:  # selected in __slots__ order (and more after)
        (
            self.empty_since,
            self.grace_minutes,
            self.id,
            self.low_since,
            self.name,
            self.state,
            self.timezone,
            self.workspace_id,
        ) = row[:8]


class _SlotRow:
    """A slot as the ticker walks it (its next occurrence advances in memory)."""

    __slots__ = ("days_mask", "id", "next_fire_at", "next_local_date", "pool_id", "rank", "time")

    def __init__(self, row: Any) -> None:  # selected in __slots__ order
        (
            self.days_mask,
            self.id,
            self.next_fire_at,
            self.next_local_date,
            self.pool_id,
            self.rank,
            self.time,
        ) = row


_POOL_COLS = [getattr(Pool, n) for n in _PoolRow.__slots__]
_POOL_ID = _PoolRow.__slots__.index("id")
# The columns of a firing row, in the order the ticker builds its values.
FIRING_KEYS = (
    "id",
    "pool_id",
    "slot_id",
    "kind",
    "local_date",
    "scheduled_for",
    "fired_at",
    "covers_until",
    "missed_count",
    "item_id",
    "outcome",
)
# What the metrics count firings by: (outcome, scheduled_for, fired_at).
_METRIC_KEY = itemgetter(*(FIRING_KEYS.index(k) for k in ("outcome", "scheduled_for", "fired_at")))
_SLOT_COLS = [getattr(Slot, n) for n in _SlotRow.__slots__]


@dataclass
class _Due:
    slot: _SlotRow
    local_date: date
    at: datetime
    missed: list[schedule.Occurrence] | None = None  # a missed record covering these


@lru_cache(maxsize=4096)
def _next_occurrence(
    time: str, days_mask: int, timezone: str, after: datetime
) -> schedule.Occurrence:
    """Memoised: a burst asks the same question (same time, days, zone, instant) for
    every slot due together."""
    return schedule.next_occurrence(
        schedule.parse_time(time),
        forecast.days_from_mask(days_mask),
        schedule.load_zone(timezone),
        after,
    )


def _next(pool: _PoolRow, slot: _SlotRow, after: datetime) -> schedule.Occurrence:
    return _next_occurrence(slot.time, slot.days_mask, pool.timezone, after)


def _plan(
    pool: _PoolRow, slots: list[_SlotRow], links: dict[str, list[str]], now: datetime
) -> list[_Due]:
    """Walk the pool's due occurrences in order, advancing each slot as it is taken."""
    due = [s for s in slots if s.next_fire_at is not None and s.next_fire_at <= now]
    grace = timedelta(minutes=pool.grace_minutes)
    out: list[_Due] = []
    while due:
        slot = due[0] if len(due) == 1 else min(due, key=lambda s: (s.next_fire_at, s.rank, s.id))
        assert slot.next_fire_at is not None and slot.next_local_date is not None
        if pool.state != "active" or not links.get(slot.id):
            slot.next_fire_at = slot.next_local_date = None
            due.remove(slot)
            continue
        at, local_date = slot.next_fire_at, slot.next_local_date
        if now - at > grace:
            occs = schedule.occurrences_between(
                schedule.parse_time(slot.time),
                forecast.days_from_mask(slot.days_mask),
                schedule.load_zone(pool.timezone),
                at,
                now - grace,
            ) or [schedule.Occurrence(local_date, at)]
            out.append(_Due(slot, local_date, at, missed=occs))
            nxt = _next(pool, slot, occs[-1].at)
        else:
            out.append(_Due(slot, local_date, at))
            nxt = _next(pool, slot, at)
        slot.next_fire_at, slot.next_local_date = nxt.at, nxt.local_date
        if nxt.at > now:  # no longer due
            due.remove(slot)
    return out


def _missed_message(pool: _PoolRow, slot: _SlotRow, occs: list[schedule.Occurrence]) -> str:
    n = len(occs)
    when = occs[0].at.isoformat() if n == 1 else f"{occs[0].local_date} to {occs[-1].local_date}"
    return (
        f"Pool “{pool.name}” missed {n} slot time(s) at {slot.time} ({when}) while the service "
        f"was down longer than its {pool.grace_minutes}-minute grace window. No video was "
        "used; the queue is unchanged."
    )


def _coming(
    pool: _PoolRow,
    slots: list[_SlotRow],
    links: dict[str, list[str]],
    now: datetime,
    horizon: datetime,
) -> int:
    """The pool's firings after `now` up to `horizon` (its slots with accounts)."""
    firing = tuple((s.time, s.days_mask) for s in slots if links.get(s.id))
    return _coming_of(firing, pool.timezone, now, horizon)


@lru_cache(maxsize=4096)
def _coming_of(
    slots: tuple[tuple[str, int], ...], timezone: str, now: datetime, horizon: datetime
) -> int:
    """Memoised: the pools fired together mostly share their slots' times and zone."""
    zone = schedule.load_zone(timezone)
    n = 0
    for t, mask in slots:
        days = forecast.days_from_mask(mask)
        for occ in schedule.occurrences(schedule.parse_time(t), days, zone, now):
            if occ.at > horizon:
                break
            n += 1
    return n


# `lead`: the wall seconds per firing a ticker assumes before it has prepared an instant
# (about what two workers and PostgreSQL on two cores take, bench/README.md), the margin
# for committing, and the smallest preparation it learns its speed from.
DEFAULT_SECONDS_PER_FIRING = 100e-6
LEAD_MARGIN_SECONDS = 0.05
LEARN_FROM_FIRINGS = 200


@dataclass
class _Lane:
    session: AsyncSession
    result: TickResult = field(default_factory=TickResult)
    created: list[tuple[Any, ...]] = field(default_factory=list)


class Prepared:
    """The firings of one instant, written ahead by `Ticker.prepare` in open
    transactions (one per lane) that hold their pools' locks until `commit`."""

    def __init__(self, at: datetime) -> None:
        self.at = at
        self._lanes: list[_Lane] = []

    def lane(self, maker: async_sessionmaker[AsyncSession]) -> _Lane:
        lane = _Lane(maker())
        self._lanes.append(lane)
        return lane

    @property
    def result(self) -> TickResult:
        """What the lanes hold (all of it, once committed)."""
        out = TickResult()
        for lane in self._lanes:
            out.fired += lane.result.fired
            out.missed += lane.result.missed
            out.firing_ids += lane.result.firing_ids
        return out

    async def commit(self) -> TickResult:
        """Commit every lane's transaction, each on its own (a lane that fails to commit
        leaves its slots due, for the next tick); what was committed."""
        committed = TickResult()
        lanes, self._lanes = self._lanes, []
        for lane in lanes:
            try:
                await lane.session.commit()
            except Exception:
                log.exception("firings prepared for %s not committed", self.at)
                continue
            finally:
                await lane.session.close()
            committed.fired += lane.result.fired
            committed.missed += lane.result.missed
            committed.firing_ids += lane.result.firing_ids
            if lane.created:
                metrics.firings_created(Counter(map(_METRIC_KEY, lane.created)))
        if committed.total:
            log.info("committed %d firing(s) prepared ahead for %s", committed.total, self.at)
        return committed

    async def close(self) -> None:
        """Roll back whatever was not committed (stopping, or preparing failed)."""
        lanes, self._lanes = self._lanes, []
        for lane in lanes:
            with contextlib.suppress(Exception):
                await lane.session.rollback()
            with contextlib.suppress(Exception):
                await lane.session.close()


class Ticker:
    def __init__(
        self, maker: async_sessionmaker[AsyncSession], settings: Settings, clock: Clock
    ) -> None:
        self.maker = maker
        self.settings = settings
        self.clock = clock
        bind = maker.kw.get("bind")
        self._dialect = bind.dialect.name if bind is not None else "sqlite"
        # Wall seconds this process took per firing it prepared last (see `lead`).
        self.seconds_per_firing = DEFAULT_SECONDS_PER_FIRING

    async def next_due(self) -> datetime | None:
        async with self.maker() as session:
            return await session.scalar(
                select(Slot.next_fire_at)
                .where(Slot.next_fire_at.is_not(None))
                .order_by(Slot.next_fire_at)
                .limit(1)
            )

    async def tick(self) -> TickResult:
        """Fire everything due now, batch after batch until nothing due is left.

        On PostgreSQL `lanes()` batches run at once, each in its own
        transaction on its own connection: while one waits for the database the next is
        built, as with more workers (SKIP LOCKED gives them disjoint pools). SQLite has one
        writer, so one at a time."""
        result = TickResult()
        now = self.clock.now()
        lanes = await self.lanes()
        if lanes == 1:
            await self._drain(now, result)
        else:
            async with asyncio.TaskGroup() as group:
                for _ in range(lanes):
                    group.create_task(self._drain(now, result))
        return result

    async def lead(self, at: datetime) -> float:
        """How many seconds before `at` this ticker starts to prepare it (0: it does not).

        Prepared firings are written ahead in transactions that hold their pools' locks
        and commit at `at` (`prepare`), so a burst is on time however large it is, and
        every change to those pools waits until then. So a ticker starts as late as it
        can: the slots due at `at`, at the speed it measured the last time it prepared,
        shared with the other live tickers, and a margin; at most
        `ticker_lead_max_seconds`. Not on SQLite: its one writer would stop every other
        write for that long."""
        cap = self.settings.ticker_lead_max_seconds
        if self._dialect == "sqlite" or cap <= 0:
            return 0.0
        if (at - self.clock.now()).total_seconds() > cap:
            return cap  # not counted yet: asked again from `at - cap` on
        async with self.maker() as session:
            due = await session.scalar(
                select(func.count()).select_from(Slot).where(Slot.next_fire_at == at)
            )
        if not due:
            return 0.0
        work = due * self.seconds_per_firing / await self._live_tickers()
        return min(cap, LEAD_MARGIN_SECONDS + work)

    async def prepare(self, at: datetime) -> Prepared:
        """Write the firings of the slots due at `at` now, before `at`, and hold them:
        one open transaction per lane, committed by `Prepared.commit` at `at` (the
        engine's ticker loop waits for it). Everything is decided as a tick at `at`
        decides it (`at` is its "now": on time, `fired_at = at`) and under the same pool
        locks, which the transactions keep until they commit: no change to those pools
        (queue, slots, state) can come in between, it waits and lands after the firing.
        Preparing stops when the clock reaches `at`; a tick does the rest."""
        prepared = Prepared(at)
        lanes = await self.lanes()
        started = time.perf_counter()
        try:
            async with asyncio.TaskGroup() as group:
                for _ in range(lanes):
                    lane = prepared.lane(self.maker)
                    group.create_task(self._drain(at, lane.result, lane))
        except BaseException:
            await prepared.close()
            raise
        self.learn(prepared.result.total, time.perf_counter() - started)
        return prepared

    def learn(self, fired: int, seconds: float) -> None:
        """Preparing `fired` firings took this process (all its lanes) `seconds` of wall
        time: half of the next estimate per firing. Too few firings say nothing."""
        if fired >= LEARN_FROM_FIRINGS:
            self.seconds_per_firing = (self.seconds_per_firing + seconds / fired) / 2

    async def lanes(self) -> int:
        """Batches to run at once: 1 on SQLite; `ticker_concurrency` when set; otherwise 2
        while this is the only live ticker process and 1 while others run (their batches
        overlap this one's already; a second lane each only makes the tickers' `SKIP
        LOCKED` reads walk past more locked pools: ~10 % more database CPU, later firings)."""
        if self._dialect == "sqlite":
            return 1
        if self.settings.ticker_concurrency is not None:
            return self.settings.ticker_concurrency
        return 1 if await self._live_tickers() > 1 else 2

    async def _live_tickers(self) -> int:
        """Ticker processes alive now, this one included (at least 1)."""
        # Live: a heartbeat within STALE_AFTER_SECONDS of the newest one, which needs no
        # agreement between this process's clock and the others' (a test clock jumps).
        running = EngineNode.stopped_at.is_(None)
        newest = select(func.max(EngineNode.heartbeat_at)).where(running).scalar_subquery()
        async with self.maker() as session:
            live = await session.scalar(
                select(func.count())
                .select_from(EngineNode)
                .where(
                    running,
                    EngineNode.heartbeat_at
                    >= newest - literal(timedelta(seconds=STALE_AFTER_SECONDS), Interval()),
                    EngineNode.roles.contains("ticker"),
                )
            )
        return max(1, live or 0)

    async def _drain(self, now: datetime, result: TickResult, lane: _Lane | None = None) -> None:
        """Batch after batch, each continuing after the last due slot the one before read
        (keyset on the `(next_fire_at, id)` index): slots passed over were locked by
        another ticker, or are this lane's own. Each batch commits on its own, or, in a
        prepared `lane`, all go into its one transaction, held for `Prepared.commit`."""
        after: tuple[datetime, str] | None = None
        while True:
            if lane is None:
                created: list[tuple[Any, ...]] = []
                async with session_scope(self.maker) as session:
                    handled, after = await self._batch(session, now, result, created, after)
                if created:  # counted once committed
                    metrics.firings_created(Counter(map(_METRIC_KEY, created)))
            else:
                if self.clock.now() >= now:  # the instant has come: commit what is ready
                    return
                handled, after = await self._batch(lane.session, now, result, lane.created, after)
            if not handled:
                return

    async def _batch(
        self,
        session: AsyncSession,
        now: datetime,
        result: TickResult,
        created: list[tuple[Any, ...]],
        after: tuple[datetime, str] | None = None,
    ) -> tuple[int, tuple[datetime, str] | None]:
        """Fire one batch of pools; how many, and the (instant, slot id) to go on after."""
        # The most overdue slots first, through the (next_fire_at, id) index; the pool
        # rows are locked, and LIMIT applies after SKIP LOCKED, so a second ticker takes
        # the next pools instead of finding this batch's pools locked. A pool with two due
        # slots may come twice: it is taken once, with all its due slots.
        # Core rows through the session's connection: the ORM's result machinery costs
        # microseconds per row and these are plain columns.
        conn = await session.connection()
        db = conn.dialect.name
        due = select(*_POOL_COLS, Slot.next_fire_at, Slot.id).join(Slot, Slot.pool_id == Pool.id)
        due = due.where(Slot.next_fire_at <= now)
        if after is not None:
            at, slot_id = after  # bound as the columns' own types (SQLite's stored text)
            due = due.where(
                tuple_(Slot.next_fire_at, Slot.id)
                > tuple_(literal(at, Slot.next_fire_at.type), literal(slot_id, Slot.id.type))
            )
        # Rows are fetched whole (`all()`, not a `fetchone` call each) and read by position.
        rows = (
            await conn.execute(
                due.order_by(Slot.next_fire_at, Slot.id)
                .limit(self.settings.engine_batch_size)
                .with_for_update(of=Pool, skip_locked=True)
            )
        ).all()
        if not rows:
            return 0, after
        pools: dict[str, _PoolRow] = {}
        for row in rows:
            if row[_POOL_ID] not in pools:
                pools[row[_POOL_ID]] = _PoolRow(row)
        after = rows[-1][-2], rows[-1][-1]
        # The pools' slots with their accounts, in one statement: a row per (slot,
        # account), the accounts in slot order; a slot without accounts comes once.
        slots_by_pool: dict[str, list[_SlotRow]] = defaultdict(list)
        before: dict[str, tuple[datetime | None, date | None]] = {}
        links: dict[str, list[str]] = defaultdict(list)
        for row in (
            await conn.execute(
                select(*_SLOT_COLS, SlotAccount.account_id)
                .outerjoin(SlotAccount, SlotAccount.slot_id == Slot.id)
                .where(bulk.any_of(db, Slot.pool_id, pools))
                .order_by(Slot.pool_id, Slot.rank, Slot.id, SlotAccount.rank)
            )
        ).all():
            slot_id = row[1]
            if slot_id not in before:
                slots_by_pool[row[4]].append(_SlotRow(row[:7]))
                before[slot_id] = (row[2], row[3])
            if row[7] is not None:
                links[slot_id].append(row[7])

        plans = {pid: _plan(p, slots_by_pool[pid], links, now) for pid, p in pools.items()}
        wanted = [(d.slot.id, d.local_date) for plan in plans.values() for d in plan]
        taken: set[tuple[str, date]] = set()
        if wanted:
            # Plain IN lists (not row values) so both databases use the unique index.
            rows = await conn.execute(
                select(Firing.slot_id, Firing.local_date).where(
                    Firing.kind == SCHEDULED,
                    bulk.any_of(db, Firing.slot_id, {w[0] for w in wanted}),
                    Firing.local_date.in_({w[1] for w in wanted}),
                )
            )
            wanted_set = set(wanted)
            taken = {(r[0], r[1]) for r in rows.all()} & wanted_set
        need = {
            pid: sum(1 for d in plan if d.missed is None and (d.slot.id, d.local_date) not in taken)
            for pid, plan in plans.items()
        }
        # Running low is judged against the firings coming within the horizon: the head
        # query looks at least that far down the queues that may need it (an upper bound,
        # a slot fires at most once a day; see `_running_low`).
        hours = self.settings.low_queue_hours
        look = max(
            (
                sum(hours // 24 + 2 for s in slots_by_pool[pid] if links.get(s.id))
                for pid, p in pools.items()
                if need[pid] and p.low_since is None
            ),
            default=0,
        )
        heads, front = await self._heads(
            session, db, {pid: n for pid, n in need.items() if n}, look if hours > 0 else 0
        )
        account_ids = {a for ids in links.values() for a in ids}
        accounts = (
            {
                a.id: a
                for a in (
                    await session.scalars(
                        select(Account).where(bulk.any_of(db, Account.id, account_ids))
                    )
                ).all()
            }
            if account_ids
            else {}
        )

        # Rows as tuples of the values of FIRING_KEYS and DELIVERY_KEYS: by the thousand,
        # cheaper to build and to hand to COPY than dicts.
        firing_rows: list[tuple[Any, ...]] = []
        delivery_records: list[tuple[Any, ...]] = []
        heads_taken: dict[str, list[str]] = defaultdict(list)
        notes: list[dict[str, Any]] = []
        settle_now: list[str] = []
        fired_pools: set[str] = set()
        emptied: list[str] = []
        retry_until = now + timedelta(minutes=self.settings.retry_window_minutes)
        # Ids made in bulk: a firing per planned occurrence, a delivery per slot account.
        firing_ids = iter(new_ids(len(wanted)))
        delivery_ids = iter(
            new_ids(sum(len(links[d.slot.id]) for plan in plans.values() for d in plan))
        )
        for pid, plan in plans.items():
            pool = pools[pid]
            queue = list(heads.get(pid, ()))
            for d in plan:
                slot_id = d.slot.id
                if (slot_id, d.local_date) in taken:
                    log.info("slot %s already has a record for %s", slot_id, d.local_date)
                    continue
                fid = next(firing_ids)
                result.firing_ids.append(fid)
                key = fid, pid, slot_id, "scheduled", d.local_date, d.at, now
                if d.missed is not None:
                    firing_rows.append(
                        (*key, d.missed[-1].local_date, len(d.missed), None, "missed")
                    )
                    notes.append(
                        notification_row(
                            pool,  # type: ignore[arg-type]
                            "warning",
                            "firing.missed",
                            _missed_message(pool, d.slot, d.missed),
                            now,
                        )
                    )
                    result.missed += 1
                    continue
                result.fired += 1
                if not queue:
                    firing_rows.append((*key, None, 0, None, "empty"))
                    note = empty_notice(pool, now)  # type: ignore[arg-type]
                    if note is not None:
                        notes.append(note)
                        emptied.append(pid)
                    continue
                item_id = queue.pop(0)
                heads_taken[pid].append(item_id)
                # The firing holds the item: it is now dispatching.
                firing_rows.append((*key, None, 0, item_id, "pending"))
                fired_pools.add(pid)
                rows, final = delivery_rows(
                    fid, item_id, links[slot_id], accounts, now, retry_until, delivery_ids
                )
                delivery_records += rows
                if final:
                    settle_now.append(fid)

        # The advanced slots, grouped by their new occurrence (a burst moves them together).
        moved: dict[tuple[datetime | None, date | None], list[str]] = defaultdict(list)
        for slots in slots_by_pool.values():
            for s in slots:
                nxt = (s.next_fire_at, s.next_local_date)
                if before[s.id] != nxt:
                    moved[nxt].append(s.id)
        for (at, day), ids in moved.items():
            await bulk.update_ids(
                session, Slot.__table__, ids, {"next_fire_at": at, "next_local_date": day}
            )
        if emptied:
            await session.execute(
                update(Pool.__table__)
                .where(bulk.any_of(db, Pool.__table__.c.id, emptied))
                .values(empty_since=now)
            )
        await bulk.insert_records(session, Firing.__table__, FIRING_KEYS, firing_rows, copy=True)
        created.extend(firing_rows)
        await bulk.insert_records(
            session, Delivery.__table__, DELIVERY_KEYS, delivery_records, copy=True
        )
        await insert_notices(session, notes)
        for fid in settle_now:
            firing = await session.get(Firing, fid)
            assert firing is not None
            await settle(session, firing, now)
        if fired_pools and hours > 0:
            await self._running_low(
                session,
                [pools[p] for p in fired_pools],
                slots_by_pool,
                links,
                front,
                heads_taken,
                now,
            )
        return len(pools), after

    async def _heads(
        self, session: AsyncSession, db: str, need: dict[str, int], look: int
    ) -> tuple[dict[str, list[str]], dict[str, tuple[int, bool]]]:
        """The first `need[pool]` ready items waiting in each pool's queue, in queue order;
        and, per pool, the items waiting among the queued rows read (`look` more than it
        needs, at least) and whether those were the whole queue."""
        if not need:
            return {}, {}
        # The queues' first rows first, then their media, by primary key: joining media
        # in the ranking lets SQLite start from the (large) media table, and `state =
        # 'ready'` in SQL lets it pick the state index and read every ready video in the
        # database; so the state is read and compared here.
        slack = 4
        window = max(need.values()) + max(slack, look)
        conn = await session.connection()
        if db == "postgresql":
            # Per pool, its first `window` queued rows only, by the queue index (LATERAL
            # … LIMIT): ranking the whole queue first would read every queued row of
            # every pool, and a pool's queue is often dozens deep.
            head = (
                select(QueueItem.id, QueueItem.media_id, QueueItem.seq)
                .where(QueueItem.pool_id == Pool.id, QueueItem.stored_status == QUEUED)
                .order_by(QueueItem.seq, QueueItem.id)
                .limit(window)
                .lateral("head")
            )
            query = (
                select(head.c.id, Pool.id, Media.state, held_by_firing(head.c.id).is_not(None))
                .select_from(Pool)
                .join(head, true())
                .join(Media, Media.id == head.c.media_id)
                .where(bulk.any_of(db, Pool.id, need))
                .order_by(Pool.id, head.c.seq, head.c.id)
            )
        else:  # SQLite has no LATERAL: rank the queues, keep the first `window` rows
            rn = (
                func.row_number()
                .over(partition_by=QueueItem.pool_id, order_by=(QueueItem.seq, QueueItem.id))
                .label("rn")
            )
            ranked = (
                select(QueueItem.id, QueueItem.pool_id, QueueItem.media_id, rn)
                .where(bulk.any_of(db, QueueItem.pool_id, need), QueueItem.stored_status == QUEUED)
                .subquery()
            )
            query = (
                select(
                    ranked.c.id,
                    ranked.c.pool_id,
                    Media.state,
                    held_by_firing(ranked.c.id).is_not(None),
                )
                .join(Media, Media.id == ranked.c.media_id)
                .where(ranked.c.rn <= window)
                .order_by(ranked.c.pool_id, ranked.c.rn)
            )
        # Whether a pending firing holds each of those rows (dispatching) is read by the
        # same statement, in the same snapshot as the stored status: read apart, a post
        # settling in between (stored `dispatched`, firing no longer pending) would look
        # like a waiting item. A scalar subquery with LIMIT per window row, an index
        # probe each: a `NOT EXISTS` may be planned as a hash over the firing history.
        rows = (await conn.execute(query)).all()
        out: dict[str, list[str]] = defaultdict(list)
        seen: dict[str, int] = defaultdict(int)
        waiting_seen: dict[str, int] = defaultdict(int)
        for item_id, pool_id, state, held in rows:
            seen[pool_id] += 1
            if held:
                continue
            waiting_seen[pool_id] += 1
            if state == "ready" and len(out[pool_id]) < need[pool_id]:
                out[pool_id].append(item_id)
        # A pool whose first rows are all held or wait for their media: look further down.
        for pool_id, n in need.items():
            if len(out[pool_id]) < n and seen[pool_id] >= window:
                more = await session.scalars(
                    select(QueueItem.id)
                    .join(Media, Media.id == QueueItem.media_id)
                    .where(
                        QueueItem.pool_id == pool_id,
                        waiting(QueueItem),
                        Media.state == "ready",
                    )
                    .order_by(QueueItem.seq, QueueItem.id)
                    .limit(n)
                )
                out[pool_id] = list(more.all())
        return out, {p: (waiting_seen[p], seen[p] < window) for p in need}

    async def _running_low(
        self,
        session: AsyncSession,
        pools: list[_PoolRow],
        slots_by_pool: dict[str, list[_SlotRow]],
        links: dict[str, list[str]],
        front: dict[str, tuple[int, bool]],
        taken: dict[str, list[str]],
        now: datetime,
    ) -> None:
        """Tell the workspace once when a pool holds fewer videos than the firings coming
        within `low_queue_hours`. What the head query read of the queue answers it (it
        reads more rows than can be coming); a queue is counted whole only when held items
        among those rows left too few waiting to tell."""
        candidates = [p for p in pools if p.low_since is None and p.state == "active"]
        horizon = now + timedelta(hours=self.settings.low_queue_hours)
        coming: dict[str, int] = {}
        left: dict[str, int] = {}
        unknown: list[_PoolRow] = []
        for pool in candidates:
            waiting_read, whole = front.get(pool.id, (0, True))
            n = waiting_read - len(taken.get(pool.id, ()))
            if whole and n == 0:
                continue  # the empty-queue notice will speak when it matters
            coming[pool.id] = _coming(pool, slots_by_pool[pool.id], links, now, horizon)
            if whole or n >= coming[pool.id]:
                left[pool.id] = n
            else:
                unknown.append(pool)
        if unknown:
            left.update(
                (
                    await session.execute(
                        select(QueueItem.pool_id, func.count())
                        .where(QueueItem.pool_id.in_([p.id for p in unknown]), waiting(QueueItem))
                        .group_by(QueueItem.pool_id)
                    )
                ).all()
            )
        notes = []
        lowered: list[str] = []
        for pool in candidates:
            n = int(left.get(pool.id, 0))
            if n == 0:
                continue
            if n < coming[pool.id]:
                pool.low_since = now
                lowered.append(pool.id)
                notes.append(
                    notification_row(
                        pool,  # type: ignore[arg-type]
                        "info",
                        "pool.running_low",
                        low_queue_message(pool, n, coming[pool.id], self.settings),
                        now,
                    )
                )
        if notes:
            await session.execute(
                update(Pool.__table__).where(Pool.__table__.c.id.in_(lowered)).values(low_since=now)
            )
            await insert_notices(session, notes)
