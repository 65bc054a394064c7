"""Sign in, sign out, the workspace switcher, members."""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import APIRouter, Form, Request
from sqlalchemy import delete, select
from starlette.responses import RedirectResponse, Response

from uploadpools.deps import SessionDep, StateDep
from uploadpools.exceptions import ValidationFailed
from uploadpools.kit import crypto
from uploadpools.models import Membership, User, WebSession
from uploadpools.web import session as websession
from uploadpools.web.common import done, safe_next, secure_cookies
from uploadpools.web.deps import FormUser, UserDep, reload, rollback
from uploadpools.web.members import (
    add_member,
    check_invite,
    initial_password,
    is_registered,
    remove_member,
)
from uploadpools.web.render import page

router = APIRouter(include_in_schema=False)


@router.get("/")
async def home(request: Request, session: SessionDep, state: StateDep) -> Response:
    try:
        await websession.load(session, request.cookies.get(websession.COOKIE), state.clock.now())
    except websession.SignInRequired:
        return RedirectResponse("/signin", status_code=303)
    return RedirectResponse("/pools", status_code=303)


def _signin_page(
    request: Request,
    state: StateDep,
    *,
    error: str | None = None,
    email: str = "",
    status: int = 200,
) -> Response:
    token = request.cookies.get(websession.LOGIN_CSRF_COOKIE) or secrets.token_urlsafe(32)
    response = page(
        request,
        "signin.html",
        {
            "error": error,
            "email": email,
            "csrf": token,
            "next": safe_next(request.query_params.get("next")),
        },
        status,
    )
    response.set_cookie(
        websession.LOGIN_CSRF_COOKIE,
        token,
        httponly=True,
        samesite="lax",
        secure=secure_cookies(state.settings),
        max_age=3600,
    )
    return response


@router.get("/signin")
async def signin_form(request: Request, state: StateDep) -> Response:
    return _signin_page(request, state)


@router.post("/signin")
async def signin(
    request: Request,
    session: SessionDep,
    state: StateDep,
    email: Annotated[str, Form()] = "",
    password: Annotated[str, Form()] = "",
    csrf: Annotated[str, Form()] = "",
    next: Annotated[str, Form()] = "/pools",
) -> Response:
    now = state.clock.now()
    # Login CSRF: the form's token must match the cookie set with the form.
    if not websession.tokens_match(csrf, request.cookies.get(websession.LOGIN_CSRF_COOKIE, "")):
        return _signin_page(
            request, state, error="The form expired; please try again.", email=email, status=403
        )
    throttle: websession.Throttle = request.app.state.web_throttle
    try:
        user = await websession.check_password(session, throttle, email, password, now)
    except websession.TooManyAttempts as exc:
        return _signin_page(request, state, error=exc.detail, email=email, status=429)
    started = await websession.start(session, user, now) if user else None
    if started is None:
        msg = (
            "That email and password do not match."
            if user is None
            else ("This user belongs to no workspace.")
        )
        return _signin_page(request, state, error=msg, email=email, status=400)
    token, _row = started
    await session.commit()
    response = RedirectResponse(safe_next(next), status_code=303)
    response.set_cookie(
        websession.COOKIE,
        token,
        httponly=True,
        samesite="lax",
        secure=secure_cookies(state.settings),
        max_age=websession.SESSION_DAYS * 86400,
    )
    response.delete_cookie(websession.LOGIN_CSRF_COOKIE)
    return response


@router.post("/signout")
async def signout(request: Request, session: SessionDep, me: FormUser) -> Response:
    await websession.end(session, request.cookies.get(websession.COOKIE))
    await session.commit()
    response = RedirectResponse("/signin", status_code=303)
    response.delete_cookie(websession.COOKIE)
    return response


@router.post("/workspace")
async def switch_workspace(
    request: Request,
    session: SessionDep,
    me: FormUser,
    workspace_id: Annotated[str, Form()],
) -> Response:
    websession.switch(me, workspace_id)
    await session.commit()
    return done(request, "/pools")


async def _members_page(
    request: Request,
    session: SessionDep,
    me: websession.SignedIn,
    *,
    errors: dict[str, str] | None = None,
    created: dict[str, str] | None = None,
    status: int = 200,
) -> Response:
    rows = (
        await session.execute(
            select(Membership, User.email)
            .join(User, User.id == Membership.user_id)
            .where(Membership.workspace_id == me.workspace.id)
            .order_by(Membership.role != "owner", User.email)
        )
    ).all()
    return page(
        request,
        "members.html",
        {"members": rows, "errors": errors or {}, "created": created},
        status,
    )


@router.get("/members")
async def members(request: Request, session: SessionDep, me: UserDep) -> Response:
    return await _members_page(request, session, me)


@router.post("/members")
async def invite(
    request: Request,
    session: SessionDep,
    state: StateDep,
    me: FormUser,
    email: Annotated[str, Form()] = "",
    role: Annotated[str, Form()] = "member",
) -> Response:
    try:
        initial = None
        if not await is_registered(session, check_invite(me.role, email, role)):
            # argon2 runs in crypto's threads; no transaction is held meanwhile (on SQLite
            # it would hold the process's one connection). Should the email be taken
            # by then, add_member treats it as any registered one and drops this password.
            await session.rollback()
            initial = await initial_password()
            await reload(session, me)
        user, password = await add_member(
            session, me.workspace.id, me.role, email, role, state.clock.now(), initial=initial
        )
    except ValidationFailed as exc:
        await rollback(session, me)
        return await _members_page(
            request, session, me, errors={e.field: e.message for e in exc.errors}, status=422
        )
    await session.commit()
    created = {"email": user.email, "password": password} if password else None
    return await _members_page(request, session, me, created=created)


@router.post("/members/{membership_id}/remove")
async def remove(
    request: Request, membership_id: str, session: SessionDep, me: FormUser
) -> Response:
    await remove_member(session, me.workspace.id, me.role, membership_id)
    await session.commit()
    return done(request, "/members")


MIN_PASSWORD = 10


@router.get("/password")
async def password_form(request: Request, me: UserDep) -> Response:
    return page(request, "password.html", {"errors": {}, "done": False})


@router.post("/password")
async def change_password(
    request: Request,
    session: SessionDep,
    me: FormUser,
    current: Annotated[str, Form()] = "",
    new: Annotated[str, Form()] = "",
) -> Response:
    """Invitees start from a password someone else saw: they change it here."""
    errors = {}
    stored = me.user.password_hash
    # argon2 runs in crypto's threads; no transaction is held meanwhile (on SQLite it
    # would hold the process's one connection). Then what the layout shows is reloaded.
    await session.rollback()
    if not await crypto.verify_password(stored, current):
        errors["current"] = "is not your current password"
    if len(new) < MIN_PASSWORD:
        errors["new"] = f"needs at least {MIN_PASSWORD} characters"
    new_hash = None if errors else await crypto.hash_password(new)
    await reload(session, me)
    if new_hash is None:
        return page(request, "password.html", {"errors": errors, "done": False}, 422)
    me.user.password_hash = new_hash
    # Every other browser signed in as this user is signed out.
    await session.execute(
        delete(WebSession).where(WebSession.user_id == me.user.id, WebSession.id != me.session.id)
    )
    await session.commit()
    return page(request, "password.html", {"errors": {}, "done": True})
