"""Waking schedulers when a schedule changes: an in-process event, and PostgreSQL
NOTIFY for other processes. Only ever a hint: a sleeping scheduler also wakes on its own
at the next due instant and at least every `engine_idle_seconds`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

log = logging.getLogger(__name__)
CHANNEL = "uploadpools_wakeup"


class Wakeup:
    def __init__(self) -> None:
        self.event = asyncio.Event()
        self._conn: Any = None

    def set(self) -> None:
        self.event.set()

    async def wait(self, seconds: float) -> bool:
        try:
            await asyncio.wait_for(self.event.wait(), max(0.0, seconds))
            return True
        except TimeoutError:
            return False
        finally:
            self.event.clear()

    async def listen(self, url: str, *also: Callable[[], None]) -> None:
        """Subscribe to NOTIFY on PostgreSQL (no-op elsewhere); `also` are woken too."""
        if not url.startswith("postgresql"):
            return
        import asyncpg

        dsn = url.replace("postgresql+asyncpg://", "postgresql://")
        try:
            self._conn = await asyncpg.connect(dsn)

            def woken(*_: Any) -> None:
                self.event.set()
                for fn in also:
                    fn()

            await self._conn.add_listener(CHANNEL, woken)
        except (OSError, asyncpg.PostgresError) as exc:
            log.warning("LISTEN unavailable (%s); relying on timed wake-ups", exc)
            self._conn = None

    async def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                await self._conn.close()
            self._conn = None


async def notify_change(session: AsyncSession) -> None:
    """Tell other processes' schedulers to look again (sent on commit)."""
    bind = session.bind
    if bind is not None and bind.dialect.name == "postgresql":
        await session.execute(text(f"NOTIFY {CHANNEL}"))
