"""An invite racing a registration of the same email (PostgreSQL, where looking a user
up takes no lock; SQLite's transactions hold its write lock from their first statement,
so the race cannot happen there)."""

from __future__ import annotations

import pytest
from sqlalchemy import event, func, select
from sqlalchemy.util import await_only

from uploadpools.auth.service import create_user
from uploadpools.exceptions import ValidationFailed
from uploadpools.models import Membership, User
from uploadpools.store.engine import create_engine, create_sessionmaker, session_scope
from uploadpools.web.members import add_member

pytestmark = pytest.mark.parametrize("database_url", ["postgres"], indirect=True)


def commit_first_when_flushing(session, work):  # type: ignore[no-untyped-def]
    """Run `work` (a coroutine function) to completion on other connections the first
    time `session` flushes: after its look-ups, before its inserts."""

    @event.listens_for(session.sync_session, "before_flush", once=True)
    def _race(*_args):  # type: ignore[no-untyped-def]
        await_only(work())


async def test_an_email_registered_after_the_look_up_is_invited_as_a_registered_user(
    settings, tenant, clock
):
    engine = create_engine(settings)
    maker = create_sessionmaker(engine)

    async def sign_up() -> None:
        async with session_scope(maker) as other:
            await create_user(
                other, email="late@example.com", password="a-password-42", now=clock.now()
            )

    try:
        async with session_scope(maker) as s:
            commit_first_when_flushing(s, sign_up)
            user, password = await add_member(
                s, tenant.workspace_id, "owner", "Late@Example.com", "member", clock.now()
            )
        assert password is None  # the signed-up user keeps their own password
        async with maker() as s:
            assert (
                await s.scalar(
                    select(func.count()).select_from(User).where(User.email == "late@example.com")
                )
                == 1
            )
            roles = (
                await s.scalars(select(Membership.role).where(Membership.user_id == user.id))
            ).all()
        assert "member" in roles
    finally:
        await engine.dispose()


async def test_the_same_invite_committed_meanwhile_is_already_a_member(settings, tenant, clock):
    engine = create_engine(settings)
    maker = create_sessionmaker(engine)

    async def same_invite() -> None:
        async with session_scope(maker) as other:
            await add_member(
                other, tenant.workspace_id, "owner", "twice@example.com", "member", clock.now()
            )

    try:
        async with session_scope(maker) as s:
            commit_first_when_flushing(s, same_invite)
            with pytest.raises(ValidationFailed) as refused:
                await add_member(
                    s, tenant.workspace_id, "owner", "twice@example.com", "member", clock.now()
                )
        assert refused.value.errors[0].field == "email"
        async with maker() as s:
            assert (
                await s.scalar(
                    select(func.count())
                    .select_from(Membership)
                    .join(User, User.id == Membership.user_id)
                    .where(User.email == "twice@example.com")
                )
                == 1
            )
    finally:
        await engine.dispose()
