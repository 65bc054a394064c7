"""Property: the engine fires exactly one firing per eligible local date, at the instant
the DST rules give, across many zones (including gaps, overlaps, 30- and 45-minute
offsets and a skipped day), 2000-2040, with the clock moved from due instant to due
instant."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from apihelpers import make_account, make_pool
from uploadpools.models import Firing

pytestmark = pytest.mark.asyncio

ZONES = [
    "America/New_York",
    "Europe/Berlin",
    "Australia/Lord_Howe",
    "Asia/Kathmandu",
    "Pacific/Apia",
    "America/Santiago",
    "Europe/London",
    "America/St_Johns",
]
DAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
WINDOW_DAYS = 21

# Windows around real transitions (and Apia's skipped 2011-12-30), plus anywhere.
HOTSPOTS = [
    date(2026, 3, 1),
    date(2026, 10, 20),
    date(2011, 12, 20),
    date(2007, 3, 5),
    date(2026, 4, 1),
    date(2026, 9, 20),
    date(2015, 10, 1),
    date(2039, 3, 25),
]


def expected(
    tz: ZoneInfo, at: time, days: set[int], start: datetime, end: datetime
) -> list[tuple[date, datetime]]:
    """Brute force, independent of the scheduler: for each local date, the first minute
    whose local wall time on that date is at or after the slot time."""
    out = []
    d = (start - timedelta(days=2)).astimezone(tz).date()
    last = (end + timedelta(days=2)).astimezone(tz).date()
    while d <= last:
        if d.weekday() in days:
            probe = datetime(d.year, d.month, d.day, tzinfo=UTC) - timedelta(hours=15)
            found = None
            for m in range(0, 54 * 60):
                inst = probe + timedelta(minutes=m)
                local = inst.astimezone(tz)
                if local.date() == d and local.time().replace(tzinfo=None) >= at:
                    found = inst
                    break
                if local.date() > d:
                    break
            if found is not None and start < found <= end:
                out.append((d, found))
        d += timedelta(days=1)
    return out


def _transitions(zone: str) -> list[datetime]:
    """UTC instants (to the hour) where the zone's offset changes, 2000-2040."""
    tz = ZoneInfo(zone)
    out = []
    t = datetime(2000, 1, 1, tzinfo=UTC)
    prev = t.astimezone(tz).utcoffset()
    while t.year < 2041:
        nxt = t + timedelta(hours=6)
        off = nxt.astimezone(tz).utcoffset()
        if off != prev:
            lo = t
            while (nxt - lo) > timedelta(minutes=15):
                mid = lo + (nxt - lo) / 2
                if mid.astimezone(tz).utcoffset() == prev:
                    lo = mid
                else:
                    nxt = mid
            out.append(nxt)
            prev = off
        t += timedelta(hours=6)
    return out


TRANSITIONS = {z: _transitions(z) for z in ZONES}


@st.composite
def cases(draw):  # type: ignore[no-untyped-def]
    zone = draw(st.sampled_from(ZONES))
    days = draw(st.sets(st.integers(0, 6), min_size=1))
    if TRANSITIONS[zone] and draw(st.booleans()):
        # Aim at a real transition: a slot time near its local wall time, a window around it.
        moment = draw(st.sampled_from(TRANSITIONS[zone]))
        before = (moment - timedelta(minutes=1)).astimezone(ZoneInfo(zone))
        shift = draw(st.sampled_from([-60, -30, -15, 0, 15, 29, 30, 45, 59, 60]))
        wall = datetime.combine(
            date(2000, 1, 2), before.time().replace(second=0, microsecond=0)
        ) + timedelta(minutes=shift + 1)
        at = wall.time()
        start = moment - timedelta(days=draw(st.integers(1, 10)), hours=draw(st.integers(0, 23)))
        return zone, at, days, start
    hour = draw(st.one_of(st.integers(0, 3), st.integers(0, 23)))
    minute = draw(st.sampled_from([0, 15, 29, 30, 45, 59]))
    base = draw(st.one_of(st.sampled_from(HOTSPOTS), st.dates(date(2000, 1, 1), date(2040, 12, 1))))
    start = datetime(base.year, base.month, base.day, tzinfo=UTC) + timedelta(
        hours=draw(st.integers(0, 47))
    )
    return zone, time(hour, minute), days, start


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(case=cases())
@example(case=("America/New_York", time(2, 30), set(range(7)), datetime(2026, 3, 5, tzinfo=UTC)))
@example(case=("America/New_York", time(1, 30), set(range(7)), datetime(2026, 10, 29, tzinfo=UTC)))
@example(
    case=("Australia/Lord_Howe", time(2, 15), set(range(7)), datetime(2026, 9, 30, tzinfo=UTC))
)
@example(case=("Pacific/Apia", time(10, 0), set(range(7)), datetime(2011, 12, 25, tzinfo=UTC)))
@example(case=("Europe/Berlin", time(2, 30), {6}, datetime(2026, 3, 20, tzinfo=UTC)))
async def test_one_firing_per_eligible_local_date(client, make_tenant, engine, clock, app, case):  # type: ignore[no-untyped-def]
    zone, at, days, start = case
    clock.set(start)
    tenant = await make_tenant()
    acc = await make_account(client, tenant)
    pool = await make_pool(
        client,
        tenant,
        acc,
        timezone=zone,
        state="active",
        slots=[
            {
                "time": at.strftime("%H:%M"),
                "days": [DAYS[d] for d in sorted(days)],
                "account_ids": [acc],
            }
        ],
    )
    end = start + timedelta(days=WINDOW_DAYS)
    while True:
        nd = await engine.ticker.next_due()
        if nd is None or nd > end:
            break
        assert nd >= clock.now()
        clock.set(nd)
        await engine.ticker.tick()
    async with app.state.uploadpools.maker() as s:
        got = (
            await s.execute(
                select(Firing.local_date, Firing.scheduled_for, Firing.outcome)
                .where(Firing.pool_id == pool["id"])
                .order_by(Firing.scheduled_for)
            )
        ).all()
    assert {o for _, _, o in got} <= {"empty"}  # fired on time: never missed
    assert [(d, t) for d, t, _ in got] == expected(ZoneInfo(zone), at, days, start, end)
    # Leave nothing due for the next example.
    await client.patch(
        f"/api/v1/pools/{pool['id']}", json={"state": "paused"}, headers=tenant.headers
    )
