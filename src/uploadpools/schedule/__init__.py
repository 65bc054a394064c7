"""Pure schedule maths: when does a pool's posting slot fire?

A *slot* is a local wall-clock time (``HH:MM``) plus a set of weekdays, interpreted in a
pool's IANA timezone. This module turns slots into UTC instants. It performs no I/O of its
own (apart from :class:`zoneinfo.ZoneInfo` loading zone data), touches no database and never
looks at the current time: every function takes the reference instant as an argument.

Rules
-----
* A slot fires at most once per *local date*; weekdays are judged on the local date.
* DST gap (spring forward): a wall time that does not exist on a date fires once, at the
  first instant after the gap, i.e. at the transition instant itself (02:30 on a
  02:00->03:00 day fires at 03:00 local, like cron).
* DST overlap (fall back): a wall time that exists twice fires at its first occurrence.
* A local date that does not exist at all (e.g. Pacific/Apia, 2011-12-30) has no firing.
  More generally, if the first instant after a gap already lies on a later local date, the
  slot does not fire on that date (firing would belong to the next date and break the
  "once per local date" rule).
* Every returned datetime is timezone-aware UTC; naive input datetimes raise ``ValueError``.
"""

from __future__ import annotations

import heapq
import math
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from typing import TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = [
    "WEEKDAYS",
    "Occurrence",
    "ScheduleError",
    "fire_instant",
    "format_days",
    "format_time",
    "load_zone",
    "merge_occurrences",
    "next_occurrence",
    "occurrences",
    "occurrences_between",
    "parse_days",
    "parse_time",
]

K = TypeVar("K")

WEEKDAYS: tuple[str, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
"""Day names; the index of a name is its ``date.weekday()`` value."""

_DAY_INDEX = {name: index for index, name in enumerate(WEEKDAYS)}
_TIME_RE = re.compile(r"([01][0-9]|2[0-3]):([0-5][0-9])")
# One or more path components, each starting with a letter: no "..", no leading "/",
# no backslashes or other characters that could escape the zoneinfo directories.
_ZONE_RE = re.compile(r"[A-Za-z][A-Za-z0-9_+\-]*(/[A-Za-z][A-Za-z0-9_+\-]*)*")
_ZONE_MAX_LEN = 64
# Files that live in zoneinfo directories but are not IANA zones usable for scheduling.
_ZONE_DENY = frozenset({"localtime", "posixrules"})
_ZONE_DENY_PREFIXES = ("right/", "posix/")  # leap-second ("right") and duplicate trees

_ONE_DAY = timedelta(days=1)


class ScheduleError(ValueError):
    """Invalid schedule input; the message is meant for humans."""


# --------------------------------------------------------------------------- parsing


def parse_time(value: str) -> time:
    """Parse a strict ``HH:MM`` (24-hour, two digits each, 00:00..23:59)."""
    if not isinstance(value, str):
        raise ScheduleError(f"time must be a string like '09:30', got {type(value).__name__}")
    match = _TIME_RE.fullmatch(value)
    if match is None:
        raise ScheduleError(f"invalid time {value!r}: expected HH:MM between 00:00 and 23:59")
    return time(int(match.group(1)), int(match.group(2)))


def format_time(t: time) -> str:
    """Format a time as ``HH:MM`` (seconds, if any, are not shown)."""
    return f"{t.hour:02d}:{t.minute:02d}"


def parse_days(values: Iterable[str]) -> frozenset[int]:
    """Turn day names (``mon``..``sun``, any case) into ``date.weekday()`` integers."""
    if isinstance(values, str | bytes):
        raise ScheduleError("days must be a list of day names, not a single string")
    days: set[int] = set()
    for value in values:
        if not isinstance(value, str):
            raise ScheduleError(f"day names must be strings, got {value!r}")
        index = _DAY_INDEX.get(value.lower())
        if index is None:
            raise ScheduleError(f"unknown day {value!r}: expected one of {', '.join(WEEKDAYS)}")
        days.add(index)
    if not days:
        raise ScheduleError("a slot needs at least one day")
    return frozenset(days)


def format_days(days: Iterable[int]) -> list[str]:
    """Turn weekday integers into day names, in ``mon``..``sun`` order."""
    result = set()
    for day in days:
        if isinstance(day, bool) or not isinstance(day, int) or not 0 <= day <= 6:
            raise ScheduleError(f"invalid weekday {day!r}: expected an integer 0 (mon) to 6 (sun)")
        result.add(day)
    return [WEEKDAYS[day] for day in sorted(result)]


def load_zone(name: str) -> ZoneInfo:
    """Load an IANA timezone by name, rejecting anything that is not a plain zone key."""
    if not isinstance(name, str) or not name:
        raise ScheduleError("timezone name is empty")
    if (
        len(name) > _ZONE_MAX_LEN
        or not _ZONE_RE.fullmatch(name)
        or name.lower() in _ZONE_DENY
        or name.lower().startswith(_ZONE_DENY_PREFIXES)
    ):
        raise ScheduleError(f"invalid timezone name {name!r}")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError) as exc:
        raise ScheduleError(f"unknown timezone {name!r}") from exc


# --------------------------------------------------------------------------- instants


def _require_aware(value: datetime, what: str) -> datetime:
    if not isinstance(value, datetime):
        raise TypeError(f"{what} must be a datetime, got {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{what} must be timezone-aware, got naive {value.isoformat()}")
    return value.astimezone(UTC)


def _require_wall_time(at: time) -> None:
    if not isinstance(at, time):
        raise TypeError(f"slot time must be a datetime.time, got {type(at).__name__}")
    if at.tzinfo is not None:
        raise ValueError("slot time must be a naive wall-clock time (no tzinfo)")


def _validate_days(days: frozenset[int]) -> frozenset[int]:
    checked = frozenset(days)
    if not checked:
        raise ScheduleError("a slot needs at least one day")
    for day in checked:
        if isinstance(day, bool) or not isinstance(day, int) or not 0 <= day <= 6:
            raise ScheduleError(f"invalid weekday {day!r}: expected an integer 0 (mon) to 6 (sun)")
    return checked


def _wall(ts: int, tz: tzinfo) -> datetime:
    """Local wall-clock time (naive) of the POSIX second ``ts`` in ``tz``."""
    return datetime.fromtimestamp(ts, tz).replace(tzinfo=None, fold=0)


def _gap_end(naive: datetime, lo: datetime, hi: datetime, tz: tzinfo) -> datetime:
    """First instant in ``(lo, hi]`` whose wall time is later than ``naive``.

    ``naive`` lies in a gap: just before the transition the wall clock reads less than
    ``naive``, from the transition on it reads more. Transition instants are whole POSIX
    seconds, so a binary search over integer seconds finds the transition exactly.
    """
    lo_ts = math.floor(lo.timestamp())  # wall(lo) < naive
    hi_ts = math.ceil(hi.timestamp())  # wall(hi) > naive
    while hi_ts - lo_ts > 1:
        mid = (lo_ts + hi_ts) // 2
        if _wall(mid, tz) > naive:
            hi_ts = mid
        else:
            lo_ts = mid
    return datetime.fromtimestamp(hi_ts, UTC)


def fire_instant(local_date: date, at: time, tz: tzinfo) -> datetime | None:
    """The UTC instant a slot at wall time ``at`` fires on ``local_date`` in ``tz``.

    Returns ``None`` when the slot has no firing on that date, i.e. when the local date
    does not exist in the zone (the wall time is inside a gap whose end is on a later date).
    """
    _require_wall_time(at)
    naive = datetime.combine(local_date, at)
    early = naive.replace(tzinfo=tz, fold=0)
    late = naive.replace(tzinfo=tz, fold=1)
    early_offset = early.utcoffset()
    late_offset = late.utcoffset()
    if early_offset is None or late_offset is None:
        raise ValueError(f"timezone {tz!r} has no UTC offset")
    if early_offset == late_offset:
        # The common case: the wall time exists exactly once.
        return (naive - early_offset).replace(tzinfo=UTC)

    # Either an overlap (wall time exists twice) or a gap (it does not exist at all).
    candidates = [naive - early_offset, naive - late_offset]
    existing = [
        c
        for c in candidates
        if c.replace(tzinfo=UTC).astimezone(tz).replace(tzinfo=None, fold=0) == naive
    ]
    if existing:
        return min(existing).replace(tzinfo=UTC)  # first occurrence

    lo, hi = sorted(c.replace(tzinfo=UTC) for c in candidates)
    instant = _gap_end(naive, lo, hi, tz)
    if instant.astimezone(tz).date() != local_date:
        return None
    return instant


@dataclass(frozen=True, slots=True)
class Occurrence:
    """One firing of a slot: the local date it belongs to and its UTC instant."""

    local_date: date
    at: datetime  # aware UTC


def occurrences(
    at: time,
    days: frozenset[int],
    tz: tzinfo,
    after: datetime,
    *,
    inclusive: bool = False,
) -> Iterator[Occurrence]:
    """Infinite, ordered stream of a slot's firings with instant ``> after``.

    With ``inclusive=True`` an occurrence exactly at ``after`` is included too.
    Arguments are validated eagerly (when called, not on first ``next()``).
    """
    _require_wall_time(at)
    checked_days = _validate_days(days)
    after_utc = _require_aware(after, "after")
    # A firing that belongs to the previous local date can still come after ``after`` when
    # the clock is turned back across midnight, so start one day early.
    start = after_utc.astimezone(tz).date() - _ONE_DAY
    return _occurrences(at, checked_days, tz, after_utc, inclusive, start)


def _occurrences(
    at: time,
    days: frozenset[int],
    tz: tzinfo,
    after: datetime,
    inclusive: bool,
    day: date,
) -> Iterator[Occurrence]:
    while True:
        if day.weekday() in days:
            instant = fire_instant(day, at, tz)
            if instant is not None and (instant > after or (inclusive and instant == after)):
                yield Occurrence(day, instant)
        day += _ONE_DAY


def next_occurrence(
    at: time,
    days: frozenset[int],
    tz: tzinfo,
    after: datetime,
    *,
    inclusive: bool = False,
) -> Occurrence:
    """The first occurrence of :func:`occurrences`."""
    return next(occurrences(at, days, tz, after, inclusive=inclusive))


def occurrences_between(
    at: time,
    days: frozenset[int],
    tz: tzinfo,
    start: datetime,
    end: datetime,
) -> list[Occurrence]:
    """All occurrences with ``start <= instant < end``, in order."""
    end_utc = _require_aware(end, "end")
    result: list[Occurrence] = []
    for occurrence in occurrences(at, days, tz, start, inclusive=True):
        if occurrence.at >= end_utc:
            break
        result.append(occurrence)
    return result


def merge_occurrences(
    streams: Iterable[tuple[K, Iterator[Occurrence]]],
) -> Iterator[tuple[K, Occurrence]]:
    """Merge several slots' ordered streams into one ordered stream of ``(key, occurrence)``.

    Equal instants come out in the order the streams were given; within one stream the
    original order is kept. Streams may be infinite; each is advanced only when needed.
    """
    # Heap entries are (instant, stream index, ...); one entry per stream, so the index is
    # unique within the heap and comparison never reaches the (possibly unorderable) key.
    heap: list[tuple[datetime, int, K, Occurrence, Iterator[Occurrence]]] = []
    for index, (key, stream) in enumerate(streams):
        iterator = iter(stream)
        first = next(iterator, None)
        if first is not None:
            heap.append((first.at, index, key, first, iterator))
    heapq.heapify(heap)
    while heap:
        _, index, key, occurrence, iterator = heap[0]
        yield key, occurrence
        following = next(iterator, None)
        if following is None:
            heapq.heappop(heap)
        else:
            heapq.heapreplace(heap, (following.at, index, key, following, iterator))
