"""Users, workspaces and API keys. Services never commit: the caller's edge does."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from uploadpools.exceptions import Conflict, NotFound, Unauthorized, ValidationFailed
from uploadpools.kit import crypto
from uploadpools.models import ApiKey, Membership, User, Workspace

_LAST_USED_GRANULARITY = timedelta(minutes=1)


class EmailTaken(Conflict):
    title = "Email already registered"


class UnknownUser(NotFound):
    title = "No such user"


class BadApiKey(Unauthorized):
    pass


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: an API key acting in exactly one workspace."""

    workspace_id: str
    owner_id: str
    user_id: str | None
    api_key_id: str | None


def normalise_email(email: str) -> str:
    email = email.strip().lower()
    local, at, domain = email.partition("@")
    if not at or not local or ("." not in domain and domain != "localhost"):
        raise ValidationFailed.one("email", "is not an email address")
    return email


async def create_user(
    session: AsyncSession,
    *,
    email: str,
    password: str,
    now: datetime,
    plan: str = "free",
    quota: int = 13,
    workspace_name: str | None = None,
    password_hash: str | None = None,
) -> tuple[User, Workspace]:
    """A user and the workspace they own (`password_hash`: `password`'s, if already hashed)."""
    email = normalise_email(email)
    if plan not in ("free", "paid"):
        raise ValidationFailed.one("plan", "must be 'free' or 'paid'")
    if quota < 0:
        raise ValidationFailed.one("quota", "must be zero or more")
    if await session.scalar(select(User.id).where(User.email == email)):
        raise EmailTaken(f"{email} is already registered")
    user = User(
        email=email,
        password_hash=password_hash or await crypto.hash_password(password),
        plan=plan,
        monthly_quota=quota,
        created_at=now,
    )
    session.add(user)
    await session.flush()
    workspace = Workspace(
        name=workspace_name or f"{email}'s workspace", owner_id=user.id, created_at=now
    )
    session.add(workspace)
    await session.flush()
    session.add(
        Membership(workspace_id=workspace.id, user_id=user.id, role="owner", created_at=now)
    )
    await session.flush()
    return user, workspace


async def user_by_email(session: AsyncSession, email: str) -> User:
    user = await session.scalar(select(User).where(User.email == normalise_email(email)))
    if user is None:
        raise UnknownUser(f"no user with email {email}")
    return user


async def owned_workspace(session: AsyncSession, user: User) -> Workspace:
    ws = await session.scalar(
        select(Workspace).where(Workspace.owner_id == user.id).order_by(Workspace.id).limit(1)
    )
    if ws is None:
        raise NotFound(f"{user.email} owns no workspace")
    return ws


async def create_api_key(
    session: AsyncSession, *, workspace_id: str, user_id: str | None, name: str, now: datetime
) -> tuple[ApiKey, str]:
    """The stored key and the full key, which exists only in this return value."""
    full, prefix, key_hash = crypto.generate_api_key()
    key = ApiKey(
        workspace_id=workspace_id,
        user_id=user_id,
        name=name,
        prefix=prefix,
        key_hash=key_hash,
        created_at=now,
    )
    session.add(key)
    await session.flush()
    return key, full


async def authenticate(session: AsyncSession, token: str, now: datetime) -> Principal:
    prefix = crypto.parse_api_key(token)
    if prefix is None:
        raise BadApiKey("the API key is malformed")
    row = (
        await session.execute(
            select(ApiKey, Workspace.owner_id)
            .join(Workspace, Workspace.id == ApiKey.workspace_id)
            .where(ApiKey.prefix == prefix)
        )
    ).first()
    if row is None:
        raise BadApiKey("the API key is not valid")
    key, owner_id = row
    if key.revoked_at is not None or not crypto.api_key_matches(token, key.key_hash):
        raise BadApiKey("the API key is not valid")
    if key.last_used_at is None or now - key.last_used_at > _LAST_USED_GRANULARITY:
        key.last_used_at = now
    return Principal(
        workspace_id=key.workspace_id, owner_id=owner_id, user_id=key.user_id, api_key_id=key.id
    )


class ApiKeyNotFound(NotFound):
    title = "API key not found"


async def revoke_api_key(
    session: AsyncSession, *, workspace_id: str, key_id: str, now: datetime
) -> ApiKey:
    """Revoke a key of this workspace; it fails authentication from now on."""
    key = await session.scalar(
        select(ApiKey).where(ApiKey.id == key_id, ApiKey.workspace_id == workspace_id)
    )
    if key is None:
        raise ApiKeyNotFound("no such API key")
    if key.revoked_at is None:
        key.revoked_at = now
    return key


class PrincipalCache:
    """Verified API keys for a few seconds, so most requests skip the key look-up.

    Keyed by a SHA-256 of the key (the key itself is not kept). Only successes are
    cached; a key revoked or deleted in the database stops working once its entry is
    `ttl` old, or at once in this process after `forget_all()`.
    """

    MAX_ENTRIES = 10_000

    def __init__(self, ttl: timedelta) -> None:
        self.ttl = ttl
        self._entries: dict[bytes, tuple[Principal, datetime]] = {}

    @staticmethod
    def _key(token: str) -> bytes:
        return hashlib.sha256(token.encode()).digest()

    def get(self, token: str, now: datetime) -> Principal | None:
        hit = self._entries.get(self._key(token))
        if hit is None:
            return None
        principal, checked_at = hit
        if not checked_at <= now < checked_at + self.ttl:
            return None
        return principal

    def put(self, token: str, principal: Principal, now: datetime) -> None:
        if not self.ttl:
            return
        if len(self._entries) >= self.MAX_ENTRIES:
            self._entries.clear()
        self._entries[self._key(token)] = (principal, now)

    def forget_all(self) -> None:
        self._entries.clear()
