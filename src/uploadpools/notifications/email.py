"""Warnings and errors by email to a workspace's owner and admins, batched.

The first unmailed warning or error of a workspace opens a window
(`UPLOADPOOLS_EMAIL_BATCH_MINUTES`, default 5); when it closes, everything unmailed of that
workspace goes out as one email per recipient. A burst of skips is one email.

The batch is claimed in one short transaction (rows marked `mailed_at`, `FOR UPDATE SKIP
LOCKED`, so two engine processes never send it twice); the SMTP exchange runs with no
transaction open (stdlib `smtplib` in a thread). A failed send unmarks the batch, which is
tried again after `RETRY_AFTER`. Only notices of the last day are considered, so turning
email on later does not mail the history.
"""

from __future__ import annotations

import asyncio
import logging
import smtplib
import ssl
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.message import EmailMessage

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from uploadpools.config import Settings
from uploadpools.kit.clock import Clock
from uploadpools.models import Membership, Notification, Pool, User, Workspace
from uploadpools.store.engine import session_scope

log = logging.getLogger(__name__)

LEVELS = ("warning", "error")
HORIZON = timedelta(days=1)
RETRY_AFTER = timedelta(minutes=1)


@dataclass
class Batch:
    workspace_id: str
    workspace_name: str
    recipients: list[str]
    notices: list[tuple[str, str, datetime, str | None]]  # level, message, at, pool name
    ids: list[str]


def compose(settings: Settings, batch: Batch, to: str) -> EmailMessage:
    n = len(batch.notices)
    worst = "error" if any(level == "error" for level, *_ in batch.notices) else "warning"
    msg = EmailMessage()
    msg["From"] = settings.smtp_from
    msg["To"] = to
    msg["Subject"] = (
        f"Upload Pools: {n} {'problem' if worst == 'error' else 'warning'}"
        f"{'s' if n != 1 else ''} in “{batch.workspace_name}”"
    )
    lines = [f"What happened in workspace “{batch.workspace_name}”:", ""]
    for level, message, at, pool in batch.notices:
        where = f" [{pool}]" if pool else ""
        lines.append(f"- {at:%Y-%m-%d %H:%M} UTC {level.upper()}{where}: {message}")
    lines += ["", f"All notifications: {settings.public_url.rstrip('/')}/api/v1/notifications"]
    msg.set_content("\n".join(lines))
    return msg


class Mailer:
    def __init__(
        self, maker: async_sessionmaker[AsyncSession], settings: Settings, clock: Clock
    ) -> None:
        self.maker = maker
        self.settings = settings
        self.clock = clock

    @property
    def enabled(self) -> bool:
        return bool(self.settings.smtp_host)

    @property
    def window(self) -> timedelta:
        return timedelta(minutes=self.settings.email_batch_minutes)

    def _pending(self, now: datetime):  # type: ignore[no-untyped-def]
        return (
            Notification.mailed_at.is_(None),
            Notification.level.in_(LEVELS),
            Notification.created_at > now - HORIZON,
        )

    async def next_due(self) -> datetime | None:
        now = self.clock.now()
        async with self.maker() as session:
            first = await session.scalar(
                select(func.min(Notification.created_at)).where(*self._pending(now))
            )
        return None if first is None else first + self.window

    async def claim(self) -> list[Batch]:
        now = self.clock.now()
        async with session_scope(self.maker) as session:
            due = (
                select(Notification.workspace_id)
                .where(*self._pending(now))
                .group_by(Notification.workspace_id)
                .having(func.min(Notification.created_at) <= now - self.window)
            )
            notes = list(
                (
                    await session.scalars(
                        select(Notification)
                        .where(*self._pending(now), Notification.workspace_id.in_(due))
                        .order_by(Notification.workspace_id, Notification.id)
                        .with_for_update(skip_locked=True)
                    )
                ).all()
            )
            if not notes:
                return []
            await session.execute(
                update(Notification)
                .where(Notification.id.in_([n.id for n in notes]))
                .values(mailed_at=now)
            )
            by_ws: dict[str, list[Notification]] = defaultdict(list)
            for n in notes:
                by_ws[n.workspace_id].append(n)
            pools = dict(
                (
                    await session.execute(
                        select(Pool.id, Pool.name).where(
                            Pool.id.in_({n.pool_id for n in notes if n.pool_id})
                        )
                    )
                ).all()
            )
            batches = []
            for ws_id, items in by_ws.items():
                ws = await session.get(Workspace, ws_id)
                if ws is None:
                    continue
                emails = (
                    await session.scalars(
                        select(User.email)
                        .join(Membership, Membership.user_id == User.id)
                        .where(
                            Membership.workspace_id == ws_id,
                            Membership.role.in_(("owner", "admin")),
                        )
                        .order_by(User.email)
                    )
                ).all()
                owner = await session.scalar(select(User.email).where(User.id == ws.owner_id))
                recipients = sorted({*emails, *([owner] if owner else [])})
                batches.append(
                    Batch(
                        ws_id,
                        ws.name,
                        recipients,
                        [
                            (n.level, n.message, n.created_at, pools.get(n.pool_id or ""))
                            for n in items
                        ],
                        [n.id for n in items],
                    )
                )
            return batches

    async def run_once(self) -> int:
        """Send every batch whose window has closed; returns how many emails went out."""
        if not self.enabled:
            return 0
        sent = 0
        for batch in await self.claim():
            messages = [compose(self.settings, batch, to) for to in batch.recipients]
            try:
                await asyncio.to_thread(self._send, messages)
            except (OSError, smtplib.SMTPException) as exc:
                log.warning(
                    "email to workspace %s failed (%s); retrying later",
                    batch.workspace_id,
                    type(exc).__name__,
                )
                await self._unmark(batch.ids)
                raise
            sent += len(messages)
        return sent

    async def _unmark(self, ids: list[str]) -> None:
        async with session_scope(self.maker) as session:
            await session.execute(
                update(Notification).where(Notification.id.in_(ids)).values(mailed_at=None)
            )

    def _send(self, messages: list[EmailMessage]) -> None:
        s = self.settings
        assert s.smtp_host
        with smtplib.SMTP(s.smtp_host, s.smtp_port, timeout=s.smtp_timeout_s) as smtp:
            if s.smtp_starttls:
                smtp.starttls(context=ssl.create_default_context())
            if s.smtp_username:
                password = s.smtp_password.get_secret_value() if s.smtp_password else ""
                smtp.login(s.smtp_username, password)
            for m in messages:
                smtp.send_message(m)
