"""Members of a workspace. With no email sending, an invite creates the user with an
initial password that the inviting owner sees once and passes on."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from uploadpools.auth.service import normalise_email
from uploadpools.exceptions import Forbidden, NotFound, ValidationFailed
from uploadpools.kit import crypto
from uploadpools.models import Membership, User

INVITABLE_ROLES = ("admin", "member")


class OwnerOnly(Forbidden):
    title = "Only the owner can do this"


def check_invite(actor_role: str, email: str, role: str) -> str:
    """What an invite can be refused for without the database; the normalised email."""
    if actor_role != "owner":
        raise OwnerOnly("only the workspace owner invites members")
    if role not in INVITABLE_ROLES:
        raise ValidationFailed.one("role", "must be admin or member")
    return normalise_email(email)


async def is_registered(session: AsyncSession, email: str) -> bool:
    return await session.scalar(select(User.id).where(User.email == email)) is not None


async def initial_password() -> tuple[str, str]:
    """A generated password and its argon2 hash (in crypto's threads: tens of ms)."""
    password = crypto.generate_password()
    return password, await crypto.hash_password(password)


async def add_member(
    session: AsyncSession,
    workspace_id: str,
    actor_role: str,
    email: str,
    role: str,
    now: datetime,
    *,
    initial: tuple[str, str] | None = None,
) -> tuple[User, str | None]:
    """Add a user by email; a new user gets a generated password, returned once.

    `initial`: that password and its hash, made by the caller before its transaction
    (see `initial_password`); unused when the user exists by now. Without it a new
    user's password is hashed here, inside the transaction."""
    email = check_invite(actor_role, email, role)
    user = await session.scalar(select(User).where(User.email == email))
    password = None
    if user is None:
        password, password_hash = initial or await initial_password()
        try:
            async with session.begin_nested():
                user = User(email=email, password_hash=password_hash, plan="free", created_at=now)
                session.add(user)
        except IntegrityError:
            # Registered since the look-up (a sign-up or another invite, committed first;
            # on PostgreSQL, where the look-up takes no lock): that user is invited.
            password = None
            user = await session.scalar(select(User).where(User.email == email))
            if user is None:
                raise
    if await session.scalar(
        select(Membership.id).where(
            Membership.workspace_id == workspace_id, Membership.user_id == user.id
        )
    ):
        raise ValidationFailed.one("email", f"{email} is already a member")
    try:
        async with session.begin_nested():
            session.add(
                Membership(workspace_id=workspace_id, user_id=user.id, role=role, created_at=now)
            )
    except IntegrityError:  # the same invite, committed by another request meanwhile
        raise ValidationFailed.one("email", f"{email} is already a member") from None
    return user, password


async def remove_member(
    session: AsyncSession, workspace_id: str, actor_role: str, membership_id: str
) -> None:
    if actor_role != "owner":
        raise OwnerOnly("only the workspace owner removes members")
    row = await session.scalar(
        select(Membership).where(
            Membership.id == membership_id, Membership.workspace_id == workspace_id
        )
    )
    if row is None:
        raise NotFound("no such member")
    if row.role == "owner":
        raise ValidationFailed.one("member", "the owner cannot be removed")
    await session.delete(row)
