from __future__ import annotations

import random
from datetime import datetime, timedelta


def backoff(
    attempt: int, *, base: float, cap: float, retry_after: float | None = None
) -> timedelta:
    """Exponential backoff with full jitter (never below a platform's Retry-After)."""
    ceiling = min(cap, base * 2 ** max(0, attempt - 1))
    delay = random.uniform(ceiling / 2, ceiling)
    if retry_after is not None:
        delay = max(delay, retry_after)
    return timedelta(seconds=delay)


def next_attempt(
    now: datetime,
    attempt: int,
    retry_until: datetime | None,
    *,
    base: float,
    cap: float,
    retry_after: float | None = None,
) -> datetime | None:
    """When to try again, or None when the retry window is spent."""
    when = now + backoff(attempt, base=base, cap=cap, retry_after=retry_after)
    if retry_until is None or when > retry_until:
        return None
    return when
