"""Prove nothing was lost or doubled: every expected (slot, local date) has one record.

Expected occurrences are those of each slot's current schedule while its pool was
active (from the pool's state log) and after the slot's last schedule change. A
`missed` record covers the dates from its `local_date` through `covers_until`.
Occurrences still inside their grace window are `pending`, not gaps.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from uploadpools import schedule
from uploadpools.models import Firing, Pool, PoolStateChange, Slot
from uploadpools.models.firing import SCHEDULED
from uploadpools.pools import forecast


@dataclass
class AuditEntry:
    pool_id: str
    slot_id: str
    local_date: date
    expected_at: datetime
    records: list[tuple[str, str]]  # (firing id, outcome)
    verdict: str  # ok | duplicate | gap | pending


@dataclass
class AuditReport:
    entries: list[AuditEntry] = field(default_factory=list)

    def count(self, verdict: str) -> int:
        return sum(e.verdict == verdict for e in self.entries)

    @property
    def summary(self) -> str:
        return (
            f"audit: expected={len(self.entries)} ok={self.count('ok')} "
            f"duplicates={self.count('duplicate')} gaps={self.count('gap')} "
            f"pending={self.count('pending')}"
        )


def _active_intervals(
    changes: list[PoolStateChange], start: datetime, end: datetime
) -> list[tuple[datetime, datetime]]:
    out: list[tuple[datetime, datetime]] = []
    since: datetime | None = None
    for c in changes:
        if c.state == "active" and since is None:
            since = c.at
        elif c.state != "active" and since is not None:
            out.append((since, c.at))
            since = None
    if since is not None:
        out.append((since, end))
    return [(max(a, start), min(b, end)) for a, b in out if min(b, end) > max(a, start)]


async def audit(
    session: AsyncSession,
    start: datetime,
    end: datetime,
    now: datetime,
    *,
    pool_id: str | None = None,
) -> AuditReport:
    report = AuditReport()
    q = select(Slot, Pool).join(Pool, Pool.id == Slot.pool_id).order_by(Pool.id, Slot.rank, Slot.id)
    if pool_id:
        q = q.where(Pool.id == pool_id)
    rows = (await session.execute(q)).all()
    pool_ids = {p.id for _, p in rows}
    changes: dict[str, list[PoolStateChange]] = defaultdict(list)
    if pool_ids:
        for c in (
            await session.scalars(
                select(PoolStateChange)
                .where(PoolStateChange.pool_id.in_(pool_ids))
                .order_by(PoolStateChange.at, PoolStateChange.id)
            )
        ).all():
            changes[c.pool_id].append(c)
    for slot, pool in rows:
        tz = schedule.load_zone(pool.timezone)
        grace = timedelta(minutes=pool.grace_minutes)
        lo = max(start, slot.schedule_changed_at)
        hi = min(end, now)
        expected: list[schedule.Occurrence] = []
        for a, b in _active_intervals(changes[pool.id], lo, hi):
            # Resuming fires from the next occurrence strictly after the resume.
            expected += [
                o
                for o in schedule.occurrences_between(
                    schedule.parse_time(slot.time),
                    forecast.days_from_mask(slot.days_mask),
                    tz,
                    a,
                    b,
                )
                if o.at > a
            ]
        if not expected:
            continue
        firings = (
            await session.scalars(
                select(Firing).where(
                    Firing.slot_id == slot.id,
                    Firing.kind == SCHEDULED,
                    Firing.local_date <= expected[-1].local_date,
                )
            )
        ).all()
        by_date: dict[date, list[tuple[str, str]]] = defaultdict(list)
        for f in firings:
            last = f.covers_until or f.local_date
            d = f.local_date
            while d <= last:
                by_date[d].append((f.id, f.outcome))
                d += timedelta(days=1)
        for occ in expected:
            records = by_date.get(occ.local_date, [])
            if len(records) == 1:
                verdict = "ok"
            elif len(records) > 1:
                verdict = "duplicate"
            elif occ.at + grace > now:
                verdict = "pending"
            else:
                verdict = "gap"
            report.entries.append(
                AuditEntry(pool.id, slot.id, occ.local_date, occ.at, records, verdict)
            )
    return report
