"""What goes out when: the coming firings of a pool, paired with its queue as it is."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from itertools import islice
from typing import Protocol

from uploadpools import schedule
from uploadpools.models import Pool
from uploadpools.pools.repository import SlotView


@dataclass(frozen=True, slots=True)
class Coming:
    slot: SlotView
    occurrence: schedule.Occurrence
    item_id: str | None


def firing_slots(slots: Sequence[SlotView]) -> list[SlotView]:
    """Slots that fire: a slot without accounts posts nowhere and consumes nothing."""
    return [s for s in slots if s.account_ids]


class Zoned(Protocol):
    """What the forecast needs of a pool: a Pool, or a row read without the ORM."""

    @property
    def timezone(self) -> str: ...


def occurrences(
    pool: Zoned, slots: Sequence[SlotView], after: datetime, *, inclusive: bool = False
) -> Iterator[tuple[SlotView, schedule.Occurrence]]:
    tz = schedule.load_zone(pool.timezone)
    streams = [
        (
            s,
            schedule.occurrences(
                schedule.parse_time(s.slot.time),
                days_from_mask(s.slot.days_mask),
                tz,
                after,
                inclusive=inclusive,
            ),
        )
        for s in firing_slots(slots)
    ]
    return schedule.merge_occurrences(streams)


_WEEK = timedelta(days=7)
# Slot times this far from midnight keep their local date through any DST gap (gaps
# are at most 2 h; a zone that skips or repeats a whole date is caught separately).
_SAFE_FROM, _SAFE_UNTIL = time(3, 0), time(21, 0)


def numbered_occurrences(
    pool: Zoned, slots: Sequence[SlotView], after: datetime, start: int = 0
) -> Iterator[tuple[int, SlotView, schedule.Occurrence]]:
    """`occurrences` numbered from 0, beginning at number `start`.

    Reaching number `start` takes a few days' steps instead of `start` steps: from the
    second local date after `after` on, every local week holds exactly one firing per
    (slot, weekday), so whole weeks are skipped by counting. Skipping is only done when
    that holds for sure (slot times between 03:00 and 21:00, and the skipped weeks are
    7 x 24 h long, give or take DST); otherwise the occurrences are stepped through.
    """
    firing = firing_slots(slots)
    if not firing:
        return
    tz = schedule.load_zone(pool.timezone)
    per_week = sum(len(days_from_mask(s.slot.days_mask)) for s in firing)
    can_skip = all(_SAFE_FROM <= schedule.parse_time(s.slot.time) <= _SAFE_UNTIL for s in firing)
    boundary = after.astimezone(tz).date() + timedelta(days=2)
    stream = occurrences(pool, slots, after)
    n = 0
    for slot, occ in stream:
        if can_skip and occ.local_date >= boundary:
            can_skip = False  # at most one skip
            # Dates before `boundary` held the `n` occurrences counted so far.
            weeks = (start - n) // per_week
            day = boundary + weeks * _WEEK
            begin = schedule.fire_instant(boundary, time(0, 0), tz)
            end = schedule.fire_instant(day, time(0, 0), tz)
            if (
                weeks > 0
                and begin is not None
                and end is not None
                and abs(end - begin - weeks * _WEEK) < timedelta(hours=12)
            ):
                n += weeks * per_week
                for slot2, occ2 in occurrences(pool, slots, end, inclusive=True):
                    if n >= start:
                        yield n, slot2, occ2
                    n += 1
                return
        if n >= start:
            yield n, slot, occ
        n += 1


def coming(
    pool: Pool, slots: Sequence[SlotView], queued_ids: Sequence[str], after: datetime, limit: int
) -> list[Coming]:
    out = []
    for i, (slot, occ) in enumerate(islice(occurrences(pool, slots, after), limit)):
        out.append(Coming(slot, occ, queued_ids[i] if i < len(queued_ids) else None))
    return out


def expected_at(
    pool: Pool, slots: Sequence[SlotView], rank: int, after: datetime
) -> datetime | None:
    """When the item at queue rank `rank` (0 = head) is forecast to go out."""
    if pool.state != "active":
        return None
    for _n, _slot, occ in numbered_occurrences(pool, slots, after, rank):
        return occ.at
    return None


def mask_from_days(days: Sequence[str]) -> int:
    mask = 0
    for d in schedule.parse_days(days):
        mask |= 1 << d
    return mask


def days_from_mask(mask: int) -> frozenset[int]:
    return frozenset(i for i in range(7) if mask >> i & 1)


@dataclass(frozen=True, slots=True)
class PredictedSkip:
    account_id: str
    reason: str
    detail: str


@dataclass
class SkipForecastInput:
    """What the forecast knows: accounts, the owner's plan and recent posts."""

    accounts: dict[str, tuple[str, str, str]]  # id → (platform, status, name)
    quota_limit: int | None  # None: paid, unlimited
    quota_used_now: int
    recent_posts: dict[str, list[datetime]]  # account id → posted instants, last 24 h
    account_caps: dict[str, int]


def predict_skips(
    coming_list: Sequence[Coming], data: SkipForecastInput, now: datetime
) -> list[list[PredictedSkip]]:
    """For each coming firing, the deliveries predicted to be skipped and why.

    Only this pool's own coming posts are counted against the quota and caps (other pools
    of the owner may use units too, so this is a lower bound on skips)."""
    from datetime import timedelta

    month = (now.year, now.month)
    used = data.quota_used_now
    history = {k: sorted(v) for k, v in data.recent_posts.items()}
    out: list[list[PredictedSkip]] = []
    for c in coming_list:
        skips: list[PredictedSkip] = []
        if c.item_id is None:
            out.append(skips)
            continue
        at = c.occurrence.at
        if (at.year, at.month) != month:
            month, used = (at.year, at.month), 0  # the quota renews each calendar month (UTC)
        for account_id in c.slot.account_ids:
            platform, status, name = data.accounts.get(account_id, ("", "disabled", "?"))
            cap = data.account_caps.get(platform)
            posts = [t for t in history.get(account_id, []) if at - timedelta(hours=24) < t <= at]
            if status == "needs_reauth":
                skips.append(
                    PredictedSkip(account_id, "auth_expired", f"“{name}” needs to be reconnected")
                )
            elif status == "disabled":
                skips.append(PredictedSkip(account_id, "account_disabled", f"“{name}” is disabled"))
            elif cap is not None and len(posts) >= cap:
                skips.append(
                    PredictedSkip(
                        account_id,
                        "platform_daily_limit",
                        f"{platform} allows {cap} posts per 24 h",
                    )
                )
            elif data.quota_limit is not None and used >= data.quota_limit:
                skips.append(
                    PredictedSkip(
                        account_id, "quota_exceeded", "the monthly upload quota will be used up"
                    )
                )
            else:
                used += 1
                history.setdefault(account_id, []).append(at)
        out.append(skips)
    return out
