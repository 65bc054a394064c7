"""Browser sessions: a random token in an HttpOnly cookie, its SHA-256 in `web_sessions`.

Signing out deletes the row, so a copied cookie stops working at once. Each session has
its own CSRF token, sent back in every form (`csrf` field) and XHR (`X-CSRF-Token`)."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from uploadpools.exceptions import Forbidden, UploadPoolsError
from uploadpools.kit import crypto
from uploadpools.models import Membership, Notification, User, WebSession, Workspace

COOKIE = "up_session"
LOGIN_CSRF_COOKIE = "up_login_csrf"
SESSION_DAYS = 14
# Sign-in throttling: this many failures for one email within the window refuse more tries.
MAX_FAILURES = 5
FAILURE_WINDOW = timedelta(minutes=15)


class SignInRequired(UploadPoolsError):
    status_code = 401
    title = "Sign in required"
    type_slug = "unauthorized"


class CsrfRefused(Forbidden):
    title = "Form expired"

    def __init__(self) -> None:
        super().__init__("the form's security token is missing or stale: reload the page")


class TooManyAttempts(UploadPoolsError):
    status_code = 429
    title = "Too many sign-in attempts"
    type_slug = "too-many-requests"


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def tokens_match(given: str | None, expected: str) -> bool:
    return bool(given) and hmac.compare_digest(str(given), expected)


class Throttle:
    """Failed sign-ins per email, in this process (a restart forgets them)."""

    def __init__(self) -> None:
        self._failures: dict[str, list[datetime]] = defaultdict(list)

    def _recent(self, email: str, now: datetime) -> list[datetime]:
        kept = [t for t in self._failures[email] if now - t < FAILURE_WINDOW]
        self._failures[email] = kept
        return kept

    def check(self, email: str, now: datetime) -> None:
        recent = self._recent(email, now)
        if len(recent) >= MAX_FAILURES:
            wait = FAILURE_WINDOW - (now - recent[0])
            minutes = max(1, int(wait.total_seconds() // 60) + 1)
            raise TooManyAttempts(f"too many failed sign-ins: try again in {minutes} min")

    def failed(self, email: str, now: datetime) -> None:
        self._failures[email].append(now)

    def succeeded(self, email: str) -> None:
        self._failures.pop(email, None)


@dataclass(frozen=True, slots=True)
class WorkspaceChoice:
    id: str
    name: str
    role: str


@dataclass
class SignedIn:
    """Who is looking, in which workspace, with which role."""

    session: WebSession
    user: User
    workspace: Workspace
    role: str
    workspaces: list[WorkspaceChoice]
    unread: int

    @property
    def csrf(self) -> str:
        return self.session.csrf_token

    @property
    def is_owner(self) -> bool:
        return self.role == "owner"


async def memberships(session: AsyncSession, user_id: str) -> list[WorkspaceChoice]:
    rows = await session.execute(
        select(Workspace.id, Workspace.name, Membership.role)
        .join(Membership, Membership.workspace_id == Workspace.id)
        .where(Membership.user_id == user_id)
        .order_by(Membership.role != "owner", Workspace.name, Workspace.id)
    )
    return [WorkspaceChoice(i, n, r) for i, n, r in rows.all()]


async def check_password(
    session: AsyncSession, throttle: Throttle, email: str, password: str, now: datetime
) -> User | None:
    email = email.strip().lower()
    throttle.check(email, now)
    found = (
        await session.execute(select(User.id, User.password_hash).where(User.email == email))
    ).first()
    # argon2 runs in crypto's threads while this request waits; no transaction is held
    # meanwhile (on SQLite it would hold the process's one connection, stalling the rest).
    await session.rollback()
    # Verify against a dummy hash for unknown emails too, so timing does not tell them apart.
    ok = await crypto.verify_password(
        found.password_hash if found else await _dummy_hash(), password
    )
    user = await session.get(User, found.id) if found is not None and ok else None
    if user is None:
        throttle.failed(email, now)
        return None
    throttle.succeeded(email)
    return user


_dummy: str | None = None


async def _dummy_hash() -> str:
    # Made on first need, not at import: argon2 maps 64 MiB while hashing, which at
    # start-up was the server's peak memory.
    global _dummy
    if _dummy is None:
        made = await crypto.hash_password(secrets.token_urlsafe(16))
        _dummy = _dummy or made  # two first sign-ins at once: either hash will do
    return _dummy


async def start(session: AsyncSession, user: User, now: datetime) -> tuple[str, WebSession] | None:
    """A new session for `user` in their first workspace; None if they belong to none."""
    choices = await memberships(session, user.id)
    if not choices:
        return None
    token = secrets.token_urlsafe(32)
    row = WebSession(
        id=_digest(token),
        user_id=user.id,
        workspace_id=choices[0].id,
        csrf_token=secrets.token_urlsafe(32),
        created_at=now,
        expires_at=now + timedelta(days=SESSION_DAYS),
    )
    session.add(row)
    # Expired sessions of this user are swept as they sign in again.
    await session.execute(
        delete(WebSession).where(WebSession.user_id == user.id, WebSession.expires_at <= now)
    )
    await session.flush()
    return token, row


async def end(session: AsyncSession, token: str | None) -> None:
    if token:
        await session.execute(delete(WebSession).where(WebSession.id == _digest(token)))


async def load(session: AsyncSession, token: str | None, now: datetime) -> SignedIn:
    if not token:
        raise SignInRequired("sign in to continue")
    row = await session.get(WebSession, _digest(token))
    if row is None or row.expires_at <= now:
        raise SignInRequired("your session has ended: sign in again")
    user = await session.get(User, row.user_id)
    choices = await memberships(session, row.user_id)
    current = next((c for c in choices if c.id == row.workspace_id), None)
    if current is None and choices:
        # Removed from the workspace being viewed: fall back to one still theirs.
        current = choices[0]
        row.workspace_id = current.id
    if user is None or current is None:
        raise SignInRequired("you no longer belong to any workspace")
    workspace = await session.get(Workspace, current.id)
    assert workspace is not None
    unread = await session.scalar(
        select(func.count())
        .select_from(Notification)
        .where(Notification.workspace_id == workspace.id, Notification.read_at.is_(None))
    )
    return SignedIn(row, user, workspace, current.role, choices, int(unread or 0))


def switch(signed_in: SignedIn, workspace_id: str) -> None:
    if not any(c.id == workspace_id for c in signed_in.workspaces):
        from uploadpools.exceptions import NotFound

        raise NotFound("no such workspace")
    signed_in.session.workspace_id = workspace_id
