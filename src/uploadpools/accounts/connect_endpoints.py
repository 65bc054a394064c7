"""Routes of the OAuth connect flow.

* ``GET /connect/{platform}`` → 302 to the platform's consent page (web app link);
* ``GET /connect/{platform}/callback`` ← the platform sends the browser back here;
* ``POST /api/v1/accounts/connect/{platform}`` → ``{authorize_url}`` for API users.

Who connects is decided by ``connect_actor``: the API key when one is sent, otherwise
the signed-in web session (the Accounts page links here).
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.security import HTTPAuthorizationCredentials
from pydantic import BaseModel
from starlette.responses import HTMLResponse, RedirectResponse, Response

from uploadpools.accounts.oauth_connect import (
    ConnectRefused,
    OAuthConnect,
    cookie_name,
)
from uploadpools.deps import Idempotency, NowDep, SessionDep, StateDep, bearer, get_principal
from uploadpools.exceptions import UploadPoolsError
from uploadpools.kit.responses import commit_response
from uploadpools.web import session as websession


@dataclass(frozen=True, slots=True)
class ConnectActor:
    workspace_id: str
    user_id: str | None


async def connect_actor(
    request: Request,
    state: StateDep,
    session: SessionDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> ConnectActor:
    """Who is connecting an account: the API key's workspace, or the web session's."""
    if credentials is not None:
        principal = await get_principal(state, credentials)
        return ConnectActor(principal.workspace_id, principal.user_id)
    signed_in = await websession.load(
        session, request.cookies.get(websession.COOKIE), state.clock.now()
    )
    return ConnectActor(signed_in.workspace.id, signed_in.user.id)


ActorDep = Annotated[ConnectActor, Depends(connect_actor)]


class ConnectRead(BaseModel):
    authorize_url: str


def _flow(state: StateDep) -> OAuthConnect:
    return OAuthConnect(state.settings, state.clock, state.http)


FlowDep = Annotated[OAuthConnect, Depends(_flow)]

router = APIRouter(tags=["connect"])
api_router = APIRouter(prefix="/accounts", tags=["accounts"])


@router.get("/connect/{platform}", status_code=302)
async def connect(platform: str, flow: FlowDep, actor: ActorDep) -> Response:
    started = flow.start(actor.workspace_id, actor.user_id, platform)
    response = RedirectResponse(started.authorize_url, status_code=302)
    response.set_cookie(
        cookie_name(platform),
        started.nonce,
        max_age=flow.settings.oauth_state_ttl_s,
        path=f"/connect/{platform}",
        httponly=True,
        samesite="lax",
        secure=flow.settings.public_url.startswith("https://"),
    )
    return response


def _page(status: int, title: str, message: str) -> HTMLResponse:
    return HTMLResponse(
        f"<!doctype html><meta charset=utf-8><title>{html.escape(title)}</title>"
        f"<h1>{html.escape(title)}</h1><p>{html.escape(message)}</p>"
        '<p><a href="/">Back to Upload Pools</a></p>',
        status_code=status,
    )


@router.get("/connect/{platform}/callback")
async def callback(
    platform: str,
    request: Request,
    flow: FlowDep,
    session: SessionDep,
    now: NowDep,
    code: str | None = None,
    state: str | None = None,
    error: str | None = None,
    error_description: str | None = None,
) -> Response:
    """The platform's redirect back: a code to exchange, or the reason it gave none."""
    try:
        if not state:
            raise ConnectRefused("the platform's answer carried no state; start again")
        cookie = request.cookies.get(cookie_name(platform))
        # Check the state even on a refusal, so a forged link cannot show our page.
        flow.read_state(state, platform, cookie)
        if error:
            why = error_description or error
            if error == "access_denied":
                why = f"consent was declined on {platform} ({why}); nothing was connected"
            raise ConnectRefused(why)
        if not code:
            raise ConnectRefused("the platform's answer carried no code; start again")
        account = await flow.complete(
            session, platform=platform, state=state, code=code, cookie_nonce=cookie, now=now
        )
        await session.commit()
    except UploadPoolsError as exc:
        return _page(exc.status_code, exc.title, exc.detail)
    if websession.COOKIE in request.cookies:
        # Back to the Accounts page, where the new account is listed.
        page: Response = RedirectResponse("/accounts", status_code=303)
    else:
        page = _page(
            200,
            "Account connected",
            f"{platform} account “{account.name}” is connected (id {account.id}). "
            "Add it to a pool's slots to post there.",
        )
    page.delete_cookie(cookie_name(platform), path=f"/connect/{platform}")
    return page


@api_router.post("/connect/{platform}", response_model=ConnectRead)
async def connect_api(
    platform: str, flow: FlowDep, actor: ActorDep, session: SessionDep, idem: Idempotency
) -> Response:
    """Start an OAuth connect for API users: open `authorize_url` in a browser and consent.

    The link is not bound to a browser: hand it only to the person whose account it connects.
    """
    started = flow.start(actor.workspace_id, actor.user_id, platform, bound=False)
    return await commit_response(
        session, idem, 200, ConnectRead(authorize_url=started.authorize_url)
    )
