"""What goes out when: the coming firings of a pool, paired with its queue as it is."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from itertools import islice

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


def occurrences(
    pool: Pool, slots: Sequence[SlotView], after: datetime
) -> Iterator[tuple[SlotView, schedule.Occurrence]]:
    tz = schedule.load_zone(pool.timezone)
    streams = [
        (
            s,
            schedule.occurrences(
                schedule.parse_time(s.slot.time), days_from_mask(s.slot.days_mask), tz, after
            ),
        )
        for s in firing_slots(slots)
    ]
    return schedule.merge_occurrences(streams)


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
    for i, (_slot, occ) in enumerate(occurrences(pool, slots, after)):
        if i == rank:
            return occ.at
    return None


def mask_from_days(days: Sequence[str]) -> int:
    mask = 0
    for d in schedule.parse_days(days):
        mask |= 1 << d
    return mask


def days_from_mask(mask: int) -> frozenset[int]:
    return frozenset(i for i in range(7) if mask >> i & 1)
