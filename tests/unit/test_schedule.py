"""Tests for the pure schedule maths in ``uploadpools.schedule``."""

from __future__ import annotations

import itertools
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from uploadpools.schedule import (
    WEEKDAYS,
    Occurrence,
    ScheduleError,
    fire_instant,
    format_days,
    format_time,
    load_zone,
    merge_occurrences,
    next_occurrence,
    occurrences,
    occurrences_between,
    parse_days,
    parse_time,
)

ALL_DAYS = frozenset(range(7))
NEW_YORK = ZoneInfo("America/New_York")
BERLIN = ZoneInfo("Europe/Berlin")
APIA = ZoneInfo("Pacific/Apia")


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def fire(zone: str, day: str, at: str) -> datetime | None:
    return fire_instant(date.fromisoformat(day), parse_time(at), ZoneInfo(zone))


class TestParseTime:
    @pytest.mark.parametrize(
        ("text", "expected"),
        [("00:00", time(0, 0)), ("07:05", time(7, 5)), ("23:59", time(23, 59))],
    )
    def test_parses_strict_hh_mm(self, text, expected):
        assert parse_time(text) == expected

    @pytest.mark.parametrize(
        "text",
        ["25:00", "24:00", "7:00", "12:60", "12:00:00", "", " 12:00", "12:00 ", "1200", "12-00"],
    )
    def test_rejects_malformed_or_out_of_range(self, text):
        with pytest.raises(ScheduleError, match="HH:MM"):
            parse_time(text)

    def test_rejects_non_ascii_digits(self):
        with pytest.raises(ScheduleError):
            parse_time("\u0661\u0662:00")  # Arabic-Indic digits

    def test_rejects_non_string(self):
        with pytest.raises(ScheduleError):
            parse_time(1200)  # type: ignore[arg-type]

    def test_schedule_error_is_a_value_error(self):
        with pytest.raises(ValueError):
            parse_time("nope")

    def test_format_pads_to_two_digits(self):
        assert format_time(time(7, 5)) == "07:05"

    def test_format_round_trips_every_minute(self):
        for hour, minute in itertools.product(range(24), range(60)):
            text = f"{hour:02d}:{minute:02d}"
            assert format_time(parse_time(text)) == text


class TestParseDays:
    def test_weekday_index_matches_date_weekday(self):
        monday = date(2026, 3, 2)
        for offset, name in enumerate(WEEKDAYS):
            assert (monday + timedelta(days=offset)).weekday() == WEEKDAYS.index(name)

    def test_names_are_case_insensitive(self):
        assert parse_days(["Mon", "WED", "sun"]) == frozenset({0, 2, 6})

    def test_duplicates_are_fine(self):
        assert parse_days(["fri", "fri", "FRI"]) == frozenset({4})

    def test_empty_is_rejected(self):
        with pytest.raises(ScheduleError, match="at least one day"):
            parse_days([])

    def test_unknown_day_is_named_in_error(self):
        with pytest.raises(ScheduleError, match="'funday'"):
            parse_days(["mon", "funday"])

    def test_single_string_is_rejected(self):
        with pytest.raises(ScheduleError, match="not a single string"):
            parse_days("mon")

    def test_format_uses_mon_to_sun_order(self):
        assert format_days([6, 0, 3, 0]) == ["mon", "thu", "sun"]

    def test_format_rejects_out_of_range_day(self):
        with pytest.raises(ScheduleError, match="7"):
            format_days([7])

    def test_format_round_trips(self):
        assert format_days(parse_days(["sun", "tue"])) == ["tue", "sun"]


class TestLoadZone:
    @pytest.mark.parametrize("name", ["UTC", "America/New_York", "Asia/Kathmandu", "Etc/GMT+5"])
    def test_accepts_iana_names(self, name):
        assert load_zone(name).key == name

    @pytest.mark.parametrize("name", ["Mars/Base", "America/Nowhere", "Utopia"])
    def test_rejects_unknown_zone(self, name):
        with pytest.raises(ScheduleError, match="unknown timezone"):
            load_zone(name)

    def test_rejects_empty_name(self):
        with pytest.raises(ScheduleError, match="empty"):
            load_zone("")

    @pytest.mark.parametrize(
        "name",
        [
            "../etc/passwd",
            "/etc/passwd",
            "America/../Europe/Berlin",
            "./UTC",
            "America\\New_York",
            "UTC\x00",
            " UTC",
            "localtime",
            "posixrules",
            "right/UTC",
            "posix/America/New_York",
            "zone.tab",
        ],
    )
    def test_rejects_path_tricks_and_non_zones(self, name):
        with pytest.raises(ScheduleError, match="timezone"):
            load_zone(name)


class TestFireInstant:
    def test_plain_day_converts_wall_time(self):
        assert fire("America/New_York", "2026-06-15", "09:00") == utc(2026, 6, 15, 13, 0)

    def test_returns_aware_utc(self):
        instant = fire("Europe/Berlin", "2026-06-15", "09:00")
        assert instant is not None
        assert instant.tzinfo is UTC

    def test_new_york_spring_forward_fires_at_transition(self):
        assert fire("America/New_York", "2026-03-08", "02:30") == utc(2026, 3, 8, 7, 0)

    def test_new_york_gap_start_fires_at_transition(self):
        assert fire("America/New_York", "2026-03-08", "02:00") == utc(2026, 3, 8, 7, 0)

    def test_new_york_fall_back_fires_at_first_occurrence(self):
        assert fire("America/New_York", "2026-11-01", "01:30") == utc(2026, 11, 1, 5, 30)

    def test_berlin_spring_forward_fires_at_transition(self):
        assert fire("Europe/Berlin", "2026-03-29", "02:30") == utc(2026, 3, 29, 1, 0)

    def test_berlin_fall_back_fires_at_first_occurrence(self):
        assert fire("Europe/Berlin", "2026-10-25", "02:30") == utc(2026, 10, 25, 0, 30)

    def test_lord_howe_half_hour_gap_fires_at_transition(self):
        # 02:00 -> 02:30 (+10:30 -> +11:00): 02:15 fires at 02:30 local.
        instant = fire("Australia/Lord_Howe", "2026-10-04", "02:15")
        assert instant == utc(2026, 10, 3, 15, 30)
        assert instant.astimezone(ZoneInfo("Australia/Lord_Howe")).time() == time(2, 30)

    def test_lord_howe_half_hour_overlap_fires_at_first_occurrence(self):
        # 02:00 -> 01:30 (+11:00 -> +10:30): 01:45 first happens at +11:00.
        assert fire("Australia/Lord_Howe", "2026-04-05", "01:45") == utc(2026, 4, 4, 14, 45)

    def test_kathmandu_quarter_hour_offset(self):
        assert fire("Asia/Kathmandu", "2026-01-15", "09:00") == utc(2026, 1, 15, 3, 15)

    def test_santiago_midnight_gap_fires_at_transition(self):
        # 2026-09-06 00:00 -> 01:00 (-04 -> -03).
        assert fire("America/Santiago", "2026-09-06", "00:30") == utc(2026, 9, 6, 4, 0)

    def test_beirut_midnight_gap_fires_at_transition(self):
        # 2026-03-29 00:00 -> 01:00 (+02 -> +03).
        assert fire("Asia/Beirut", "2026-03-29", "00:00") == utc(2026, 3, 28, 22, 0)

    def test_st_johns_overlap_across_midnight_keeps_dates_ordered(self):
        # 2010-11-07 00:01 NDT -> 2010-11-06 23:01 NST: the previous evening repeats.
        evening = fire("America/St_Johns", "2010-11-06", "23:30")
        midnight = fire("America/St_Johns", "2010-11-07", "00:00")
        assert evening == utc(2010, 11, 7, 2, 0)
        assert midnight == utc(2010, 11, 7, 2, 30)

    def test_apia_skipped_date_has_no_firing(self):
        assert fire("Pacific/Apia", "2011-12-30", "09:00") is None
        assert fire("Pacific/Apia", "2011-12-30", "00:00") is None

    def test_apia_dates_around_skip_fire_normally(self):
        assert fire("Pacific/Apia", "2011-12-29", "09:00") == utc(2011, 12, 29, 19, 0)
        assert fire("Pacific/Apia", "2011-12-31", "09:00") == utc(2011, 12, 30, 19, 0)

    def test_works_in_1970(self):
        assert fire("America/New_York", "1970-04-26", "02:30") == utc(1970, 4, 26, 7, 0)

    def test_works_in_2100(self):
        assert fire("America/New_York", "2100-03-14", "02:30") == utc(2100, 3, 14, 7, 0)

    def test_utc_zone_is_identity(self):
        assert fire("UTC", "2026-03-08", "02:30") == utc(2026, 3, 8, 2, 30)

    def test_rejects_aware_slot_time(self):
        with pytest.raises(ValueError, match="naive"):
            fire_instant(date(2026, 1, 1), time(9, 0, tzinfo=UTC), NEW_YORK)


class TestOccurrences:
    def test_yields_in_order_from_after(self):
        stream = occurrences(time(9, 0), ALL_DAYS, NEW_YORK, utc(2026, 6, 15, 0, 0))
        first_three = list(itertools.islice(stream, 3))
        assert first_three == [
            Occurrence(date(2026, 6, 15), utc(2026, 6, 15, 13, 0)),
            Occurrence(date(2026, 6, 16), utc(2026, 6, 16, 13, 0)),
            Occurrence(date(2026, 6, 17), utc(2026, 6, 17, 13, 0)),
        ]

    def test_after_is_strict(self):
        occurrence = next_occurrence(time(9, 0), ALL_DAYS, NEW_YORK, utc(2026, 6, 15, 13, 0))
        assert occurrence.local_date == date(2026, 6, 16)

    def test_inclusive_includes_after(self):
        occurrence = next_occurrence(
            time(9, 0), ALL_DAYS, NEW_YORK, utc(2026, 6, 15, 13, 0), inclusive=True
        )
        assert occurrence == Occurrence(date(2026, 6, 15), utc(2026, 6, 15, 13, 0))

    def test_one_microsecond_before_instant_is_included(self):
        after = utc(2026, 6, 15, 13, 0) - timedelta(microseconds=1)
        assert next_occurrence(time(9, 0), ALL_DAYS, NEW_YORK, after).at == utc(2026, 6, 15, 13)

    def test_after_in_another_zone_is_honoured(self):
        after = datetime(2026, 6, 15, 15, 0, tzinfo=BERLIN)  # 13:00Z, exactly the instant
        occurrence = next_occurrence(time(9, 0), ALL_DAYS, NEW_YORK, after)
        assert occurrence.local_date == date(2026, 6, 16)

    def test_weekday_is_judged_on_local_date(self):
        # Monday 09:00 in Auckland is Sunday 21:00Z.
        auckland = ZoneInfo("Pacific/Auckland")
        monday = parse_days(["mon"])
        occurrence = next_occurrence(time(9, 0), monday, auckland, utc(2026, 5, 30))
        assert occurrence.local_date == date(2026, 6, 1)
        assert occurrence.local_date.weekday() == 0
        assert occurrence.at == utc(2026, 5, 31, 21, 0)
        assert occurrence.at.weekday() == 6

    def test_skips_days_not_in_set(self):
        days = parse_days(["sat", "sun"])
        stream = occurrences(time(12, 0), days, BERLIN, utc(2026, 6, 15))  # a Monday
        dates = [o.local_date for o in itertools.islice(stream, 4)]
        assert dates == [date(2026, 6, 20), date(2026, 6, 21), date(2026, 6, 27), date(2026, 6, 28)]

    def test_apia_sequence_skips_missing_date(self):
        stream = occurrences(time(9, 0), ALL_DAYS, APIA, utc(2011, 12, 28, 20, 0))
        dates = [o.local_date for o in itertools.islice(stream, 3)]
        assert dates == [date(2011, 12, 29), date(2011, 12, 31), date(2012, 1, 1)]

    def test_fall_back_slot_does_not_fire_again_in_repeated_hour(self):
        # After the first 01:30 (05:30Z) but before the second (06:30Z).
        occurrence = next_occurrence(time(1, 30), ALL_DAYS, NEW_YORK, utc(2026, 11, 1, 5, 45))
        assert occurrence == Occurrence(date(2026, 11, 2), utc(2026, 11, 2, 6, 30))

    def test_spring_forward_stream_fires_once_on_gap_day(self):
        stream = occurrences(time(2, 30), ALL_DAYS, NEW_YORK, utc(2026, 3, 7))
        assert list(itertools.islice(stream, 3)) == [
            Occurrence(date(2026, 3, 7), utc(2026, 3, 7, 7, 30)),
            Occurrence(date(2026, 3, 8), utc(2026, 3, 8, 7, 0)),
            Occurrence(date(2026, 3, 9), utc(2026, 3, 9, 6, 30)),
        ]

    def test_instants_strictly_increase_over_a_year(self):
        stream = occurrences(time(2, 30), ALL_DAYS, ZoneInfo("America/St_Johns"), utc(2010, 1, 1))
        instants = [o.at for o in itertools.islice(stream, 366)]
        assert all(a < b for a, b in itertools.pairwise(instants))

    def test_naive_after_is_rejected(self):
        with pytest.raises(ValueError, match="timezone-aware"):
            occurrences(time(9, 0), ALL_DAYS, NEW_YORK, datetime(2026, 1, 1))

    def test_empty_days_rejected_eagerly(self):
        with pytest.raises(ScheduleError, match="at least one day"):
            occurrences(time(9, 0), frozenset(), NEW_YORK, utc(2026, 1, 1))

    def test_invalid_day_number_rejected(self):
        with pytest.raises(ScheduleError, match="weekday"):
            occurrences(time(9, 0), frozenset({7}), NEW_YORK, utc(2026, 1, 1))


class TestOccurrencesBetween:
    def test_start_inclusive_end_exclusive(self):
        result = occurrences_between(
            time(9, 0), ALL_DAYS, NEW_YORK, utc(2026, 6, 15, 13), utc(2026, 6, 17, 13)
        )
        assert [o.local_date for o in result] == [date(2026, 6, 15), date(2026, 6, 16)]

    def test_empty_when_end_not_after_start(self):
        assert (
            occurrences_between(time(9, 0), ALL_DAYS, NEW_YORK, utc(2026, 6, 15), utc(2026, 6, 15))
            == []
        )
        assert (
            occurrences_between(time(9, 0), ALL_DAYS, NEW_YORK, utc(2026, 6, 15), utc(2026, 6, 1))
            == []
        )

    def test_naive_end_is_rejected(self):
        with pytest.raises(ValueError, match="timezone-aware"):
            occurrences_between(
                time(9, 0), ALL_DAYS, NEW_YORK, utc(2026, 1, 1), datetime(2026, 2, 1)
            )


class TestMergeOccurrences:
    def test_merges_streams_in_instant_order(self):
        after = utc(2026, 6, 15)
        morning = occurrences(time(9, 0), ALL_DAYS, NEW_YORK, after)
        evening = occurrences(time(18, 0), ALL_DAYS, NEW_YORK, after)
        merged = list(
            itertools.islice(merge_occurrences([("evening", evening), ("morning", morning)]), 4)
        )
        assert [(key, o.local_date.day) for key, o in merged] == [
            ("morning", 15),
            ("evening", 15),
            ("morning", 16),
            ("evening", 16),
        ]

    def test_ties_follow_stream_order(self):
        after = utc(2026, 6, 15)
        streams = [
            (key, occurrences(time(9, 0), ALL_DAYS, NEW_YORK, after)) for key in ("b", "a", "c")
        ]
        merged = list(itertools.islice(merge_occurrences(streams), 6))
        assert [key for key, _ in merged] == ["b", "a", "c", "b", "a", "c"]

    def test_ties_across_zones_follow_stream_order(self):
        # 09:00 New York == 15:00 Berlin in June.
        after = utc(2026, 6, 15)
        streams = [
            ("berlin", occurrences(time(15, 0), ALL_DAYS, BERLIN, after)),
            ("new_york", occurrences(time(9, 0), ALL_DAYS, NEW_YORK, after)),
        ]
        first, second = itertools.islice(merge_occurrences(streams), 2)
        assert first[1].at == second[1].at
        assert [first[0], second[0]] == ["berlin", "new_york"]

    def test_finite_and_empty_streams(self):
        a = [
            Occurrence(date(2026, 1, 1), utc(2026, 1, 1, 10)),
            Occurrence(date(2026, 1, 3), utc(2026, 1, 3, 10)),
        ]
        b = [Occurrence(date(2026, 1, 2), utc(2026, 1, 2, 10))]
        merged = list(merge_occurrences([("a", iter(a)), ("empty", iter([])), ("b", iter(b))]))
        assert [key for key, _ in merged] == ["a", "b", "a"]

    def test_unorderable_keys_are_fine(self):
        o = Occurrence(date(2026, 1, 1), utc(2026, 1, 1, 10))
        merged = list(merge_occurrences([({"x": 1}, iter([o])), ({"y": 2}, iter([o]))]))
        assert [key for key, _ in merged] == [{"x": 1}, {"y": 2}]


# ------------------------------------------------------------------ property-based test

PROPERTY_ZONES = [
    "America/New_York",
    "Europe/Berlin",
    "Australia/Lord_Howe",
    "Asia/Kathmandu",
    "Pacific/Apia",
    "America/Santiago",
    "Asia/Beirut",
    "Europe/London",
    "Australia/Sydney",
    "America/St_Johns",
    "UTC",
]

_QUARTER = timedelta(minutes=15)
_MINUTE = timedelta(minutes=1)
_SECOND = timedelta(seconds=1)


def _local(instant: datetime, tz: ZoneInfo) -> datetime:
    return instant.astimezone(tz).replace(tzinfo=None, fold=0)


def _date_exists(day: date, tz: ZoneInfo) -> bool:
    """Brute force: does any 15-minute UTC grid instant around ``day`` show that date?"""
    t = datetime.combine(day, time(0, 0), tzinfo=UTC) - timedelta(hours=15)
    end = datetime.combine(day, time(23, 59), tzinfo=UTC) + timedelta(hours=13)
    while t <= end:
        if _local(t, tz).date() == day:
            return True
        t += _QUARTER
    return False


def _oracle(day: date, at: time, tz: ZoneInfo) -> datetime | None:
    """Independent brute-force answer for one local date.

    All offsets of the tested zones in this era are multiples of 15 minutes between
    -12:00 and +14:00, so any instant whose wall time is ``day at`` lies on the grid
    ``wall - k * 15min``. Scan the whole grid: the earliest hit is the first occurrence.
    With no hit the wall time falls in a gap: find the first whole minute whose wall time
    is later than the slot (transitions happen on whole minutes) between the last grid
    instant before the jump and the first one after.
    """
    wall = datetime.combine(day, at)
    base = wall.replace(tzinfo=UTC)
    grid = [base - k * _QUARTER for k in range(14 * 4, -12 * 4 - 1, -1)]  # ascending
    walls = [_local(t, tz) for t in grid]
    hits = [t for t, w in zip(grid, walls, strict=True) if w == wall]
    if hits:
        return hits[0]
    jump = next(i for i, w in enumerate(walls) if w > wall)
    t = grid[jump - 1]
    while _local(t, tz) <= wall:
        t += _MINUTE
    if _local(t, tz).date() != day:
        assert not _date_exists(day, tz), f"{day} exists but its slot would fire on a later date"
        return None
    return t


def _times():
    early = st.builds(time, st.integers(0, 3), st.integers(0, 59))
    anytime = st.builds(time, st.integers(0, 23), st.integers(0, 59))
    return st.one_of(early, anytime)


@st.composite
def _windows(draw):
    start = draw(
        st.datetimes(
            min_value=datetime(2000, 1, 1), max_value=datetime(2040, 12, 31), timezones=st.just(UTC)
        )
    )
    length = draw(st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=400)))
    return start, start + length


class TestOccurrenceProperties:
    @settings(max_examples=300, deadline=None)
    @given(
        zone=st.sampled_from(PROPERTY_ZONES),
        at=_times(),
        days=st.frozensets(st.integers(0, 6), min_size=1),
        window=_windows(),
    )
    def test_matches_brute_force_oracle(self, zone, at, days, window):
        tz = ZoneInfo(zone)
        start, end = window
        result = occurrences_between(at, days, tz, start, end)

        # Expected, independently: every eligible, existing local date whose firing falls
        # inside the window (scan one extra local date on each side).
        expected = []
        day = start.astimezone(tz).date() - timedelta(days=1)
        last = end.astimezone(tz).date() + timedelta(days=1)
        while day <= last:
            if day.weekday() in days:
                instant = _oracle(day, at, tz)
                if instant is not None and start <= instant < end:
                    expected.append((day, instant))
            day += timedelta(days=1)
        assert [(o.local_date, o.at) for o in result] == expected

        dates = [o.local_date for o in result]
        assert len(set(dates)) == len(dates)
        assert all(a.at < b.at for a, b in itertools.pairwise(result))
        for occurrence in result:
            instant = occurrence.at
            assert instant.tzinfo is UTC
            assert occurrence.local_date.weekday() in days
            local = _local(instant, tz)
            assert local.date() == occurrence.local_date
            if local.time() != at:
                # The wall time does not exist that day: the instant is the transition that
                # skips over it (offset changes here, the clock was before the slot a second
                # earlier and is after it now).
                before = instant - _SECOND
                assert local.time() > at
                assert instant.astimezone(tz).utcoffset() != before.astimezone(tz).utcoffset()
                assert _local(before, tz) < datetime.combine(occurrence.local_date, at)
