"""Running the engine: the ticker, dispatcher and media-fetcher loops of one process.

`uploadpools serve` runs it next to the API; `uploadpools worker` runs it alone, as many
times over as needed against one PostgreSQL database. Nothing here is needed for
correctness (the database decides); it only decides how punctually things happen.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import socket
from datetime import datetime, timedelta

import httpx
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from uploadpools.config import Settings
from uploadpools.engine.dispatcher import Dispatcher, node_id
from uploadpools.engine.ticker import Ticker
from uploadpools.engine.wakeup import Wakeup
from uploadpools.kit.clock import Clock
from uploadpools.media.service import MediaFetcher
from uploadpools.media.storage import Storage
from uploadpools.models import EngineNode
from uploadpools.models.engine_node import HEARTBEAT_SECONDS, STALE_AFTER_SECONDS
from uploadpools.notifications.email import RETRY_AFTER, Mailer
from uploadpools.store.engine import session_scope
from uploadpools.webhooks import events
from uploadpools.webhooks.sender import Sender

log = logging.getLogger(__name__)
BACKOFF_SECONDS = 0.05


def freeze_heap() -> None:
    """Called once a process has started up (modules imported, app and engine built):
    moves those long-lived objects out of the cyclic collector's sight. Otherwise every
    full collection walks them all (~120k objects, tens of ms each), and a burst of
    firings allocates enough to trigger several."""
    gc.collect()
    gc.freeze()


__all__ = ["HEARTBEAT_SECONDS", "STALE_AFTER_SECONDS", "Engine", "freeze_heap"]
_ROLE_ORDER = ("ticker", "dispatcher", "fetcher", "webhooks", "mailer")


class Engine:
    def __init__(
        self,
        maker: async_sessionmaker[AsyncSession],
        settings: Settings,
        clock: Clock,
        storage: Storage,
        http: httpx.AsyncClient,
        fetcher: MediaFetcher,
        *,
        role: str = "serve",
    ) -> None:
        self.maker = maker
        self.settings = settings
        self.clock = clock
        self.role = role
        self.node = node_id()
        self.ticker = Ticker(maker, settings, clock)
        self.dispatcher = Dispatcher(maker, settings, clock, storage, http, node=self.node)
        self.fetcher = fetcher
        self.sender = Sender(
            maker, settings, clock, http, concurrency=settings.dispatch_concurrency
        )
        self.tick_wakeup = Wakeup()
        self.dispatch_wakeup = Wakeup()
        self.webhook_wakeup = Wakeup()
        self.mailer = Mailer(maker, settings, clock)
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = asyncio.Event()
        self._inflight: set[asyncio.Task[int]] = set()

    def wake(self) -> None:
        """A schedule or queue changed in this process."""
        self.tick_wakeup.set()
        self.dispatch_wakeup.set()
        self.webhook_wakeup.set()

    def _delay_until(self, when: datetime | None) -> float:
        idle = self.settings.engine_idle_seconds
        if when is None:
            return idle
        return max(0.0, min(idle, (when - self.clock.now()).total_seconds()))

    async def _ticker_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                result = await self.ticker.tick()
                if result.fired:
                    self.dispatch_wakeup.set()
                due = await self.ticker.next_due()
                delay = self._delay_until(due)
                if delay == 0 and not result.total:
                    # Due work we could not take: another ticker holds those pools.
                    # Look again shortly instead of spinning on the database.
                    delay = BACKOFF_SECONDS
                elif due is not None and delay > 0:
                    # Wake when the next instant is to be prepared (Ticker.lead).
                    start = due - timedelta(seconds=await self.ticker.lead(due))
                    if start < due and self.clock.now() >= start:
                        await self._fire_ahead(due)
                        continue
                    delay = self._delay_until(start)
            except Exception:
                log.exception("ticker iteration failed")
                delay = 1.0
            if delay > 0:
                await self.tick_wakeup.wait(delay)

    async def _fire_ahead(self, at: datetime) -> None:
        """Prepare the firings due at `at`, wait for `at` and commit them. While it waits,
        a wake-up (a schedule changed) still fires whatever falls due before `at` in
        other pools; stopping rolls the prepared firings back (another ticker, or the
        next start, fires them)."""
        prepared = await self.ticker.prepare(at)
        try:
            while not self._stopping.is_set():
                wait = (at - self.clock.now()).total_seconds()
                if wait <= 0:
                    result = await prepared.commit()
                    if result.fired:
                        self.dispatch_wakeup.set()
                    return
                woken = await self.tick_wakeup.wait(wait)
                if woken and not self._stopping.is_set() and (await self.ticker.tick()).fired:
                    self.dispatch_wakeup.set()
        finally:
            await prepared.close()

    async def _dispatch_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                task = asyncio.create_task(self.dispatcher.dispatch_once())
                self._inflight.add(task)
                try:
                    n = await asyncio.shield(task)
                finally:
                    self._inflight.discard(task)
                if n:
                    continue
                # Nothing claimable now although something is due: other workers hold it.
                delay = self._delay_until(await self.dispatcher.next_due()) or BACKOFF_SECONDS
            except Exception:
                log.exception("dispatcher iteration failed")
                delay = 1.0
            if delay > 0:
                await self.dispatch_wakeup.wait(delay)

    async def _webhook_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                if await self.sender.send_once():
                    continue
                delay = self._delay_until(await self.sender.next_due())
            except Exception:
                log.exception("webhook sender iteration failed")
                delay = 1.0
            if delay > 0:
                await self.webhook_wakeup.wait(delay)

    async def _mail_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                await self.mailer.run_once()
                # At least a second: a batch another process holds is not ours to spin on.
                delay = max(1.0, self._delay_until(await self.mailer.next_due()))
            except Exception:
                log.exception("mailer iteration failed")
                delay = RETRY_AFTER.total_seconds()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)

    async def _heartbeat_loop(self) -> None:
        started = self.clock.now()
        while not self._stopping.is_set():
            try:
                await self._beat(started, stopped=False)
            except Exception:
                log.exception("engine heartbeat failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), HEARTBEAT_SECONDS)

    async def _beat(self, started: datetime, *, stopped: bool) -> None:
        now = self.clock.now()
        async with session_scope(self.maker) as session:
            node = await session.scalar(select(EngineNode).where(EngineNode.id == self.node))
            if node is None:
                node = EngineNode(
                    id=self.node,
                    hostname=socket.gethostname(),
                    pid=int(self.node.rsplit(":", 1)[1]),
                    role=self.role,
                    started_at=started,
                    heartbeat_at=now,
                )
                session.add(node)
            node.heartbeat_at = now
            node.stopped_at = now if stopped else None
            node.role = self.role
            node.roles = ",".join(r for r in _ROLE_ORDER if r in self.settings.engine_roles)

    async def start(self) -> None:
        # One LISTEN connection wakes every loop.
        await self.tick_wakeup.listen(
            self.settings.resolved_database_url,
            self.dispatch_wakeup.set,
            self.fetcher.wake,
            self.webhook_wakeup.set,
        )
        roles = set(self.settings.engine_roles)
        self._tasks = [asyncio.create_task(self._heartbeat_loop(), name="engine-heartbeat")]
        if "ticker" in roles:
            self._tasks.append(asyncio.create_task(self._ticker_loop(), name="engine-ticker"))
        if "dispatcher" in roles:
            self._tasks.append(asyncio.create_task(self._dispatch_loop(), name="engine-dispatcher"))
        if "fetcher" in roles:
            self._tasks.append(asyncio.create_task(self.fetcher.run(), name="media-fetcher"))
        if "webhooks" in roles:
            events.add_waker(self.webhook_wakeup.set)
            self._tasks.append(asyncio.create_task(self._webhook_loop(), name="webhook-sender"))
        if "mailer" in roles and self.mailer.enabled:
            self._tasks.append(asyncio.create_task(self._mail_loop(), name="mailer"))

    async def stop(self, grace_seconds: float = 20.0) -> None:
        """Stop claiming; let in-flight posts finish for a while; then cancel (their leases
        expire and another worker reconciles them)."""
        self._stopping.set()
        events.remove_waker(self.webhook_wakeup.set)
        self.webhook_wakeup.set()
        self.tick_wakeup.set()
        self.dispatch_wakeup.set()
        if self._inflight:
            await asyncio.wait(list(self._inflight), timeout=grace_seconds)
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        for t in list(self._inflight):
            t.cancel()
        await self.tick_wakeup.close()
        with contextlib.suppress(Exception):
            await self._beat(self.clock.now(), stopped=True)
