"""Dependencies of the web pages: the signed-in user and the CSRF check."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession

from uploadpools.deps import SessionDep, StateDep
from uploadpools.web import session as websession
from uploadpools.web.session import CsrfRefused, SignedIn


async def get_signed_in(request: Request, session: SessionDep, state: StateDep) -> SignedIn:
    signed_in = await websession.load(
        session, request.cookies.get(websession.COOKIE), state.clock.now()
    )
    request.state.signed_in = signed_in  # the error page shows the layout with it
    return signed_in


UserDep = Annotated[SignedIn, Depends(get_signed_in)]


def is_xhr(request: Request) -> bool:
    return "x-csrf-token" in request.headers


async def check_csrf(request: Request, signed_in: UserDep) -> SignedIn:
    """Forms send the token as the `csrf` field, scripts as the `X-CSRF-Token` header.
    A multipart upload must use the header: its body is streamed, never parsed up front."""
    token = request.headers.get("x-csrf-token")
    if token is None and request.headers.get("content-type", "").startswith(
        "application/x-www-form-urlencoded"
    ):
        token = (await request.form()).get("csrf")  # type: ignore[assignment]
    if not websession.tokens_match(token, signed_in.csrf):
        raise CsrfRefused()
    return signed_in


FormUser = Annotated[SignedIn, Depends(check_csrf)]


async def rollback(session: AsyncSession, signed_in: SignedIn) -> None:
    """Undo a failed change but keep rendering the page: reload what the layout shows
    (a rollback expires every loaded object)."""
    await session.rollback()
    await reload(session, signed_in)


async def reload(session: AsyncSession, signed_in: SignedIn) -> None:
    """Load again what the layout shows, after a rollback expired it."""
    for obj in (signed_in.session, signed_in.user, signed_in.workspace):
        await session.refresh(obj)
