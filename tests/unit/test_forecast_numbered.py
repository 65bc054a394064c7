"""`numbered_occurrences` skips whole weeks but must equal stepping through every one."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import islice

from hypothesis import given, settings
from hypothesis import strategies as st

from uploadpools.models import Pool, Slot
from uploadpools.pools import forecast
from uploadpools.pools.repository import SlotView

ZONES = [
    "UTC",
    "America/New_York",
    "Europe/Berlin",
    "Australia/Lord_Howe",  # 30-minute DST
    "America/Havana",  # DST at midnight
    "Pacific/Apia",  # skipped 2011-12-30 entirely
    "America/Santiago",
]


def make(zone: str, slots: list[tuple[str, int]]) -> tuple[Pool, list[SlotView]]:
    pool = Pool(id="p", timezone=zone, state="active")
    views = [
        SlotView(Slot(id=f"s{i}", time=t, days_mask=mask), ["acc"])
        for i, (t, mask) in enumerate(slots)
    ]
    return pool, views


def stepped(pool, views, after, start, count):  # type: ignore[no-untyped-def]
    every = enumerate(forecast.occurrences(pool, views, after))
    return [(n, s.slot.id, o) for n, (s, o) in islice(every, start, start + count)]


def skipped(pool, views, after, start, count):  # type: ignore[no-untyped-def]
    got = forecast.numbered_occurrences(pool, views, after, start)
    return [(n, s.slot.id, o) for n, s, o in islice(got, count)]


times = st.builds(
    lambda h, m: f"{h:02d}:{m:02d}", st.integers(0, 23), st.sampled_from([0, 15, 30, 45, 59])
)
slot_lists = st.lists(st.tuples(times, st.integers(1, 127)), min_size=1, max_size=3)


@settings(max_examples=150, deadline=None)
@given(
    zone=st.sampled_from(ZONES),
    slots=slot_lists,
    after=st.datetimes(
        min_value=datetime(2010, 1, 1), max_value=datetime(2031, 1, 1), timezones=st.just(UTC)
    ),
    start=st.integers(0, 800),
)
def test_same_as_stepping_through(zone, slots, after, start):
    pool, views = make(zone, slots)
    assert skipped(pool, views, after, start, 12) == stepped(pool, views, after, start, 12)


def test_across_a_dst_change_far_ahead():
    pool, views = make("America/New_York", [("09:00", 0b1111111), ("18:30", 0b0011111)])
    after = datetime(2026, 3, 2, 12, tzinfo=UTC)
    for start in (0, 5, 11, 12, 13, 100, 400, 2000):
        assert skipped(pool, views, after, start, 20) == stepped(pool, views, after, start, 20)


def test_expected_at_is_the_rank_th_occurrence():
    pool, views = make("Europe/Berlin", [("10:00", 0b0000001)])  # Mondays
    after = datetime(2026, 3, 2, 12, tzinfo=UTC)  # a Monday, after 10:00 Berlin
    assert forecast.expected_at(pool, views, 0, after) == datetime(2026, 3, 9, 9, tzinfo=UTC)
    # 30 weeks on, in summer time (UTC+2).
    assert forecast.expected_at(pool, views, 30, after) == datetime(
        2026, 3, 9, 9, tzinfo=UTC
    ) + timedelta(weeks=30, hours=-1)
