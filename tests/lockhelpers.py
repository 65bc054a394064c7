"""What the sessions of a test's PostgreSQL database are doing (`pg_stat_activity`): for
the tests that one transaction waits for another's row lock, or holds one open."""

from __future__ import annotations

from typing import Any

from sqlalchemy import text


async def sessions_in(app: Any, where: str) -> bool:
    """Whether a session of the app's database matches `where` (SQL on pg_stat_activity)."""
    async with app.state.uploadpools.maker() as s:
        n = await s.scalar(
            text(
                "SELECT count(*) FROM pg_stat_activity "
                f"WHERE datname = current_database() AND {where}"
            )
        )
    return bool(n)


async def waiting_on_a_lock(app: Any) -> bool:
    return await sessions_in(app, "wait_event_type = 'Lock'")


async def idle_in_transaction(app: Any) -> bool:
    """A transaction is open and idle (e.g. prepared firings waiting for their instant)."""
    return await sessions_in(app, "state = 'idle in transaction'")
