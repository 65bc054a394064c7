"""Deliveries → connectors.

A delivery is claimed with a lease and a fencing token in one short transaction (which
also reserves the quota unit and checks platform caps), posted with no transaction open,
and its outcome recorded in a second transaction that only succeeds while the token is
still ours. A worker that lost its lease records nothing. A delivery whose lease expired
mid-post is reconciled through the job id its connector saved, never blindly re-posted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import or_, select, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from uploadpools.config import Settings
from uploadpools.connectors.base import (
    UNKNOWN,
    AuthExpired,
    ConnectorContext,
    ConnectorError,
    DailyLimitReached,
    LeaseLost,
    MediaRef,
    Permanent,
    PublishRequest,
    PublishResult,
    RateLimited,
    Transient,
)
from uploadpools.connectors.registry import connector_for
from uploadpools.engine import limits, quota
from uploadpools.engine.firing import settle
from uploadpools.engine.retry import next_attempt
from uploadpools.kit.clock import Clock
from uploadpools.kit.crypto import SecretBox
from uploadpools.media.storage import Storage
from uploadpools.models import Account, Delivery, Firing, Media, Pool, QueueItem, Workspace
from uploadpools.notifications.service import notify
from uploadpools.ops import metrics
from uploadpools.ops.logs import engine_ids
from uploadpools.store.engine import session_scope
from uploadpools.webhooks import events

log = logging.getLogger(__name__)


def node_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass
class Claimed:
    delivery_id: str
    token: int
    recovering: bool
    platform: str
    request: PublishRequest


@dataclass
class Outcome:
    status: str  # posted | skipped | retry
    reason: str | None = None
    detail: str | None = None
    result: PublishResult | None = None
    next_attempt_at: datetime | None = None
    auth_expired: bool = False


@contextlib.asynccontextmanager
async def _our_database() -> AsyncIterator[None]:
    """Our own database failing under a connector is transient, not the platform's fault.

    Connectors save their job id before the irreversible step, so a save that fails means
    nothing irreversible happened yet (or the saved marker before it lets the retry
    reconcile): retrying is safe, skipping as `platform_error` would be wrong.
    """
    try:
        yield
    except (DBAPIError, OSError) as exc:
        raise Transient(
            f"our database was unavailable while saving the post's progress: {exc}"
        ) from exc


class _Jobs:
    """The JobStore a connector writes through, fenced by the lease token."""

    def __init__(self, dispatcher: Dispatcher, claimed: Claimed) -> None:
        self.d = dispatcher
        self.c = claimed

    async def save(self, job: dict[str, Any]) -> None:
        async with _our_database(), session_scope(self.d.maker) as session:
            res = await session.execute(
                update(Delivery)
                .where(Delivery.id == self.c.delivery_id, Delivery.lease_token == self.c.token)
                .values(job=job)
            )
            if res.rowcount != 1:  # type: ignore[attr-defined]
                raise LeaseLost(self.c.delivery_id)

    async def save_config(self, config: dict[str, Any]) -> None:
        async with _our_database(), session_scope(self.d.maker) as session:
            await session.execute(
                update(Account)
                .where(Account.id == self.c.request.account_id)
                .values(credentials=self.d.box.encrypt(config))
            )

    async def load_config(self) -> dict[str, Any]:
        """The account's config as stored now (another worker may have rotated its tokens)."""
        async with _our_database(), self.d.maker() as session:
            raw = await session.scalar(
                select(Account.credentials).where(Account.id == self.c.request.account_id)
            )
        return self.d.box.decrypt(raw) if raw is not None else dict(self.c.request.config)


class Dispatcher:
    def __init__(
        self,
        maker: async_sessionmaker[AsyncSession],
        settings: Settings,
        clock: Clock,
        storage: Storage,
        http: httpx.AsyncClient,
        *,
        node: str | None = None,
    ) -> None:
        self.maker = maker
        self.settings = settings
        self.clock = clock
        self.storage = storage
        self.http = http
        self.node = node or node_id()
        self.box = SecretBox(settings.secret())
        self.ctx = ConnectorContext(http=http, settings=settings, clock=clock)
        self._sem = asyncio.Semaphore(settings.dispatch_concurrency)

    # -- claiming ----------------------------------------------------------------------------

    async def next_due(self) -> datetime | None:
        """The earliest instant some delivery becomes claimable (now if one is)."""
        async with self.maker() as session:
            pending = await session.scalar(
                select(Delivery.next_attempt_at)
                .where(Delivery.status == "pending")
                .order_by(Delivery.next_attempt_at.is_not(None), Delivery.next_attempt_at)
                .limit(1)
            )
            has_pending = await session.scalar(
                select(Delivery.id).where(Delivery.status == "pending").limit(1)
            )
            lease = await session.scalar(
                select(Delivery.lease_until)
                .where(Delivery.status == "in_progress")
                .order_by(Delivery.lease_until)
                .limit(1)
            )
        candidates = [t for t in (lease,) if t is not None]
        if has_pending:
            candidates.append(pending or self.clock.now())
        return min(candidates) if candidates else None

    async def claim(self, limit: int) -> list[Claimed]:
        now = self.clock.now()
        claimed: list[Claimed] = []
        async with session_scope(self.maker) as session:
            rows = list(
                (
                    await session.scalars(
                        select(Delivery)
                        .where(
                            or_(
                                (Delivery.status == "pending")
                                & (
                                    Delivery.next_attempt_at.is_(None)
                                    | (Delivery.next_attempt_at <= now)
                                ),
                                (Delivery.status == "in_progress") & (Delivery.lease_until < now),
                            )
                        )
                        .order_by(Delivery.id)
                        .limit(limit)
                        .with_for_update(skip_locked=True)
                    )
                ).all()
            )
            if rows:
                # Load what the claims need in a few queries (the identity map serves the rest).
                items = (
                    await session.scalars(
                        select(QueueItem).where(QueueItem.id.in_({d.item_id for d in rows}))
                    )
                ).all()
                await session.scalars(
                    select(Firing).where(Firing.id.in_({d.firing_id for d in rows}))
                )
                await session.scalars(
                    select(Media).where(Media.id.in_({i.media_id for i in items}))
                )
                await session.scalars(
                    select(Account).where(
                        Account.id.in_({d.account_id for d in rows if d.account_id})
                    )
                )
            for d in rows:
                c = await self._claim_one(session, d, now)
                if c is not None:
                    claimed.append(c)
        return claimed

    async def _claim_one(self, session: AsyncSession, d: Delivery, now: datetime) -> Claimed | None:
        recovering = d.status == "in_progress"
        d.lease_token += 1
        d.lease_owner = self.node
        d.lease_until = now + timedelta(seconds=self.settings.lease_seconds)
        d.status = "in_progress"
        if not recovering:
            d.attempts += 1
        firing = await session.get(Firing, d.firing_id)
        item = await session.get(QueueItem, d.item_id)
        account = await session.get(Account, d.account_id) if d.account_id else None
        assert firing is not None and item is not None
        pool = await session.get(Pool, item.pool_id)
        media = await session.get(Media, item.media_id)
        ws = await session.get(Workspace, item.workspace_id)
        assert pool is not None and media is not None and ws is not None

        async def skip(reason: str, detail: str) -> None:
            await self._apply(session, d, Outcome("skipped", reason, detail), now)
            await settle(session, firing, now)

        if account is None:
            await skip("account_disabled", "the account was removed")
            return None
        if account.status == "disabled":
            await skip("account_disabled", f"account “{account.name}” is disabled")
            return None
        if account.status == "needs_reauth":
            await skip("auth_expired", f"account “{account.name}” needs to be reconnected")
            return None
        if not recovering:
            cap = await limits.check_caps(session, self.settings, account, d.id, now)
            if cap is not None:
                await skip("platform_daily_limit", cap)
                return None
        if not await quota.reserve(
            session,
            owner_id=ws.owner_id,
            workspace_id=ws.id,
            delivery_id=d.id,
            now=now,
            user_id=item.added_by,
        ):
            await skip("quota_exceeded", "the owner's monthly upload quota is used up")
            return None
        from uploadpools.media.urls import sign_media_url

        storage = self.storage
        key = media.storage_key or ""

        def opener(**kw: Any) -> Any:
            return storage.open_read(key, **kw)

        request = PublishRequest(
            delivery_id=d.id,
            attempt=d.attempts,
            pool_id=pool.id,
            pool_name=pool.name,
            item_id=item.id,
            title=item.title,
            caption=item.caption,
            options=dict(item.options.get(account.platform, {})),
            media=MediaRef(
                id=media.id,
                storage_key=key,
                size=media.size or 0,
                sha256=media.sha256 or "",
                content_type=media.content_type or "application/octet-stream",
                duration_s=media.duration_s or 0.0,
                width=media.width or 0,
                height=media.height or 0,
                url=sign_media_url(
                    self.settings, media.id, now + timedelta(seconds=self.settings.media_url_ttl_s)
                ),
                open=opener,
            ),
            firing_id=firing.id,
            scheduled_for=firing.scheduled_for,
            account_id=account.id,
            account_name=account.name,
            config=self.box.decrypt(account.credentials),
            job=dict(d.job or {}),
        )
        return Claimed(d.id, d.lease_token, recovering, account.platform, request)

    # -- running -----------------------------------------------------------------------------

    async def dispatch_once(self) -> int:
        """Claim what is due and run it to an outcome; returns how many were claimed."""
        claimed = await self.claim(self.settings.dispatch_concurrency * 2)
        if claimed:
            await asyncio.gather(*(self._run(c) for c in claimed))
        return len(claimed)

    async def run_until_idle(self, max_rounds: int = 1000) -> int:
        total = 0
        for _ in range(max_rounds):
            n = await self.dispatch_once()
            total += n
            if n == 0:
                break
        return total

    async def _run(self, c: Claimed) -> None:
        with engine_ids(firing=c.request.firing_id, delivery=c.delivery_id):
            await self._run_claimed(c)

    async def _run_claimed(self, c: Claimed) -> None:
        async with self._sem:
            work = asyncio.create_task(self._publish(c))
            beat = asyncio.create_task(self._heartbeat(c, work))
            try:
                outcome = await work
            except (LeaseLost, asyncio.CancelledError):
                log.warning("delivery %s: lease lost, outcome not recorded", c.delivery_id)
                return
            finally:
                beat.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await beat
            await self._record(c, outcome)

    async def _heartbeat(self, c: Claimed, work: asyncio.Task[Outcome]) -> None:
        interval = max(1.0, self.settings.lease_seconds / 3)
        while True:
            await asyncio.sleep(interval)
            now = self.clock.now()
            async with session_scope(self.maker) as session:
                res = await session.execute(
                    update(Delivery)
                    .where(Delivery.id == c.delivery_id, Delivery.lease_token == c.token)
                    .values(lease_until=now + timedelta(seconds=self.settings.lease_seconds))
                )
            if res.rowcount != 1:  # type: ignore[attr-defined]
                work.cancel()
                return

    async def _publish(self, c: Claimed) -> Outcome:
        connector = connector_for(c.platform, self.ctx)
        jobs = _Jobs(self, c)
        try:
            if c.recovering and c.request.job:
                found = await connector.reconcile(c.request)
                if found == UNKNOWN:
                    return Outcome(
                        "skipped",
                        "interrupted",
                        "the worker stopped mid-post and the platform cannot say whether the "
                        "post went out; it may have been posted, so it was not sent again",
                    )
                if isinstance(found, PublishResult):
                    return Outcome("posted", result=found)
            result = await connector.publish(c.request, jobs)
            return Outcome("posted", result=result)
        except LeaseLost:
            raise
        except DailyLimitReached as exc:
            return Outcome("skipped", "platform_daily_limit", exc.detail)
        except RateLimited as exc:
            return Outcome("skipped", "platform_rate_limited", exc.detail)
        except Transient as exc:
            now = self.clock.now()
            retry_until = await self._retry_until(c.delivery_id)
            when = next_attempt(
                now,
                c.request.attempt,
                retry_until,
                base=self.settings.retry_base_seconds,
                cap=self.settings.retry_max_seconds,
                retry_after=exc.retry_after,
            )
            if when is None:
                return Outcome(
                    "skipped",
                    "platform_error",
                    f"still failing after {c.request.attempt} attempt(s): {exc.detail}",
                )
            return Outcome("retry", detail=exc.detail, next_attempt_at=when)
        except AuthExpired as exc:
            return Outcome("skipped", "auth_expired", exc.detail, auth_expired=True)
        except Permanent as exc:
            return Outcome("skipped", exc.reason, exc.detail)
        except ConnectorError as exc:
            return Outcome("skipped", "platform_error", exc.detail)
        except Exception as exc:  # a connector bug must not lose the delivery's story
            log.exception("connector %s failed on delivery %s", c.platform, c.delivery_id)
            return Outcome("skipped", "platform_error", f"unexpected error: {type(exc).__name__}")

    async def _retry_until(self, delivery_id: str) -> datetime | None:
        async with self.maker() as session:
            return await session.scalar(
                select(Delivery.retry_until).where(Delivery.id == delivery_id)
            )

    # -- recording ---------------------------------------------------------------------------

    async def _record(self, c: Claimed, outcome: Outcome) -> None:
        now = self.clock.now()
        async with session_scope(self.maker) as session:
            d = await session.scalar(
                select(Delivery)
                .where(Delivery.id == c.delivery_id, Delivery.lease_token == c.token)
                .with_for_update()
            )
            if d is None or d.status != "in_progress":
                log.warning(
                    "delivery %s: fenced off, outcome %s dropped", c.delivery_id, outcome.status
                )
                return
            await self._apply(session, d, outcome, now)
            firing = await session.get(Firing, d.firing_id)
            assert firing is not None
            await settle(session, firing, now)
        metrics.delivery_finished(c.platform, outcome.status, outcome.reason)
        log.info(
            "delivery to %s: %s%s",
            c.platform,
            outcome.status,
            f" ({outcome.reason})" if outcome.reason else "",
        )

    async def _apply(self, session: AsyncSession, d: Delivery, o: Outcome, now: datetime) -> None:
        d.lease_owner = None
        d.lease_until = None
        if o.status == "posted":
            d.status = "posted"
            d.reason = None
            d.detail = None
            if o.result is not None:
                d.remote_id = o.result.remote_id
                d.remote_url = o.result.remote_url
            d.finished_at = now
            await quota.consume(session, d.id)
            await self._emit_final(session, d, now)
            return
        await quota.release(session, d.id)
        if o.status == "retry":
            d.status = "pending"
            d.detail = o.detail
            d.next_attempt_at = o.next_attempt_at
            return
        d.status = "skipped"
        d.reason = o.reason
        d.detail = o.detail
        d.finished_at = now
        await self._emit_final(session, d, now)
        if o.auth_expired and d.account_id:
            account = await session.get(Account, d.account_id)
            if account is not None and account.status == "connected":
                account.status = "needs_reauth"
                item = await session.get(QueueItem, d.item_id)
                await notify(
                    session,
                    workspace_id=account.workspace_id,
                    level="error",
                    kind="account.needs_reauth",
                    message=(
                        f"Account “{account.name}” ({account.platform}) needs to be reconnected: "
                        f"{o.detail}. Its slots skip it until then."
                    ),
                    now=now,
                    pool_id=item.pool_id if item else None,
                    extra={"account": events.account_data(account)},
                )

    async def _emit_final(self, session: AsyncSession, d: Delivery, now: datetime) -> None:
        item = await session.get(QueueItem, d.item_id)
        pool = await session.get(Pool, item.pool_id) if item is not None else None
        if item is None or pool is None:
            return
        await events.emit(
            session,
            pool.workspace_id,
            f"delivery.{d.status}",
            {
                "pool": events.pool_data(pool),
                "item": events.item_data(item),
                "delivery": events.delivery_data(d),
            },
            now,
        )
