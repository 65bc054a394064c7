"""Warnings and errors by email, batched: a real SMTP server (aiosmtpd) on 127.0.0.1.
The clock is moved, never slept."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from datetime import timedelta
from email import message_from_bytes
from email.message import Message

import pytest
from aiosmtpd.controller import Controller

from uploadpools.auth.service import create_user
from uploadpools.models import Membership
from uploadpools.notifications.email import Mailer
from uploadpools.notifications.service import notify
from uploadpools.store.engine import session_scope

pytestmark = pytest.mark.asyncio


class Inbox:
    def __init__(self) -> None:
        self.messages: list[tuple[list[str], Message]] = []

    async def handle_DATA(self, server, session, envelope):  # type: ignore[no-untyped-def]
        self.messages.append((list(envelope.rcpt_tos), message_from_bytes(envelope.content)))
        return "250 OK"

    def to(self, address: str) -> list[Message]:
        return [m for rcpt, m in self.messages if address in rcpt]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def smtp(settings) -> Iterator[Inbox]:  # type: ignore[no-untyped-def]
    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=free_port())
    controller.start()
    settings.smtp_host = "127.0.0.1"
    settings.smtp_port = controller.port
    settings.smtp_starttls = False
    settings.smtp_from = "Pools <pools@example.com>"
    try:
        yield inbox
    finally:
        controller.stop()


@pytest.fixture
def mailer(app, clock) -> Mailer:  # type: ignore[no-untyped-def]
    st = app.state.uploadpools
    return Mailer(st.maker, st.settings, clock)


async def add_member(app, clock, tenant, email: str, role: str) -> None:  # type: ignore[no-untyped-def]
    async with session_scope(app.state.uploadpools.maker) as s:
        user, _ = await create_user(s, email=email, password="pw-123456", now=clock.now())
        s.add(
            Membership(
                workspace_id=tenant.workspace_id, user_id=user.id, role=role, created_at=clock.now()
            )
        )


async def say(app, clock, tenant, level: str, message: str) -> None:  # type: ignore[no-untyped-def]
    async with session_scope(app.state.uploadpools.maker) as s:
        await notify(
            s,
            workspace_id=tenant.workspace_id,
            level=level,
            kind="item.skipped",
            message=message,
            now=clock.now(),
        )


class TestBatching:
    async def test_ten_skips_are_one_email_per_owner_and_admin(
        self, app, clock, tenant, make_tenant, smtp, mailer
    ):
        await add_member(app, clock, tenant, "admin@example.com", "admin")
        await add_member(app, clock, tenant, "member@example.com", "member")
        other = await make_tenant()
        start = clock.now()
        for i in range(10):
            await say(app, clock, tenant, "warning" if i % 2 else "error", f"video {i} was skipped")
            clock.advance(seconds=20)
        await say(app, clock, tenant, "info", "pool running low")  # info is not emailed
        await say(app, clock, other, "warning", "someone else's skip")

        clock.set(start + timedelta(minutes=4, seconds=59))
        assert await mailer.run_once() == 0  # the window of the first skip is still open
        assert smtp.messages == []

        clock.set(start + timedelta(minutes=5))
        assert await mailer.run_once() == 2
        assert sorted(rcpt[0] for rcpt, _ in smtp.messages) == [
            "admin@example.com",
            tenant.email,
        ]
        assert smtp.to("member@example.com") == []
        for _, msg in smtp.messages:
            text = msg.get_payload(decode=True).decode()
            for i in range(10):
                assert f"video {i} was skipped" in text
            assert "pool running low" not in text
            assert "someone else" not in text
            assert msg["From"] == "Pools <pools@example.com>"
            assert "10 problems" in msg["Subject"]
        # Nothing twice; the other workspace's window (opened later) closes later.
        assert await mailer.run_once() == 0
        clock.advance(minutes=5)
        assert await mailer.run_once() == 1
        [(rcpt, msg)] = smtp.messages[2:]
        assert rcpt == [other.email] and "someone else's skip" in msg.get_payload()

    async def test_a_failed_send_is_tried_again(self, app, clock, tenant, smtp, mailer, settings):
        await say(app, clock, tenant, "error", "it broke")
        clock.advance(minutes=5)
        port = settings.smtp_port
        settings.smtp_port = free_port()  # nobody listens there
        with pytest.raises(OSError):
            await mailer.run_once()
        settings.smtp_port = port
        assert await mailer.run_once() == 1
        [(rcpt, msg)] = smtp.messages
        assert rcpt == [tenant.email] and "it broke" in msg.get_payload()

    async def test_nothing_is_sent_without_smtp_settings(self, app, clock, tenant, mailer):
        await say(app, clock, tenant, "error", "it broke")
        clock.advance(minutes=10)
        assert not mailer.enabled
        assert await mailer.run_once() == 0
