"""Accounts, notifications, usage, API keys and webhooks pages."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from pydantic import ValidationError
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.responses import Response

from uploadpools.accounts.schemas import AccountCreate
from uploadpools.accounts.service import AccountService
from uploadpools.auth.service import create_api_key, revoke_api_key
from uploadpools.config import Settings
from uploadpools.connectors.registry import OAUTH_PLATFORMS, OAUTH_PROVIDERS, oauth_provider
from uploadpools.deps import AppState, SessionDep, StateDep
from uploadpools.exceptions import UploadPoolsError, ValidationFailed
from uploadpools.models import ApiKey, QuotaEntry, WebhookEndpoint, Workspace
from uploadpools.notifications.service import list_notifications, mark_read
from uploadpools.web import webhooks
from uploadpools.web.common import done
from uploadpools.web.deps import FormUser, UserDep, rollback
from uploadpools.web.render import page
from uploadpools.web.session import SignedIn
from uploadpools.workspace.service import month_bounds, usage, usage_by_member

router = APIRouter(include_in_schema=False)


# -- accounts ---------------------------------------------------------------------------------


def connectable(state: AppState) -> list[str]:
    """OAuth platforms whose app credentials this server has (the provider says)."""
    out = []
    for platform in OAUTH_PROVIDERS:
        provider = oauth_provider(platform, state.settings, state.clock)
        if provider is not None and provider.configured():
            out.append(platform)
    return out


async def _accounts_page(
    request: Request,
    session: AsyncSession,
    state: AppState,
    me: SignedIn,
    *,
    errors: dict[str, dict[str, str]] | None = None,
    values: dict[str, str] | None = None,
    message: str | None = None,
    status: int = 200,
) -> Response:
    rows, _ = await AccountService(session, state.settings).list(
        me.workspace.id, limit=1000, cursor=None
    )
    return page(
        request,
        "accounts.html",
        {
            "accounts": rows,
            "oauth": OAUTH_PLATFORMS,
            "connectable": connectable(state),
            "errors": errors or {},
            "values": values or {},
            "message": message,
        },
        status,
    )


@router.get("/accounts")
async def accounts(request: Request, session: SessionDep, state: StateDep, me: UserDep) -> Response:
    return await _accounts_page(request, session, state, me)


@router.post("/accounts")
async def add_account(
    request: Request,
    session: SessionDep,
    state: StateDep,
    me: FormUser,
    platform: Annotated[str, Form()],
    name: Annotated[str, Form()] = "",
    path: Annotated[str, Form()] = "",
    url: Annotated[str, Form()] = "",
    secret: Annotated[str, Form()] = "",
) -> Response:
    if platform == "folder":
        config: dict[str, str] = {"path": path}
    elif platform == "webhook":
        config = {"url": url, **({"secret": secret} if secret else {})}
    else:
        raise ValidationFailed.one("platform", "use the connect button for this platform")
    try:
        data = AccountCreate.model_validate({"platform": platform, "name": name, "config": config})
        await AccountService(session, state.settings).create(
            me.workspace.id, data, state.clock.now()
        )
    except ValidationFailed as exc:
        await rollback(session, me)
        errs = {e.field.removeprefix("config."): e.message for e in exc.errors}
        return await _accounts_page(
            request,
            session,
            state,
            me,
            errors={platform: errs},
            values={"platform": platform, "name": name, "path": path, "url": url},
            status=422,
        )
    except ValidationError as exc:
        await rollback(session, me)
        errs = {
            ".".join(str(p) for p in e["loc"]).removeprefix("config."): e["msg"]
            for e in exc.errors()
        }
        return await _accounts_page(
            request,
            session,
            state,
            me,
            errors={platform: errs},
            values={"platform": platform, "name": name, "path": path, "url": url},
            status=422,
        )
    await session.commit()
    return done(request, "/accounts")


@router.post("/accounts/{account_id}/delete")
async def delete_account(
    request: Request,
    account_id: str,
    session: SessionDep,
    state: StateDep,
    me: FormUser,
    force: Annotated[str, Form()] = "",
) -> Response:
    try:
        await AccountService(session, state.settings).delete(
            me.workspace.id, account_id, force=bool(force), now=state.clock.now()
        )
    except UploadPoolsError as exc:
        if exc.status_code != 409:
            raise
        await rollback(session, me)
        return await _accounts_page(
            request,
            session,
            state,
            me,
            message=exc.detail + " — tick “also remove from slots”.",
            status=409,
        )
    await session.commit()
    return done(request, "/accounts")


# -- notifications ----------------------------------------------------------------------------


@router.get("/notifications")
async def notifications(request: Request, session: SessionDep, me: UserDep) -> Response:
    rows, _ = await list_notifications(
        session, me.workspace.id, unread=False, limit=200, cursor=None
    )
    return page(request, "notifications.html", {"notes": rows})


@router.post("/notifications/{note_id}/read")
async def read_note(
    request: Request, note_id: str, session: SessionDep, state: StateDep, me: FormUser
) -> Response:
    await mark_read(session, me.workspace.id, note_id, state.clock.now())
    await session.commit()
    return done(request, "/notifications")


# -- usage ------------------------------------------------------------------------------------


@router.get("/usage")
async def usage_page(
    request: Request, session: SessionDep, state: StateDep, me: UserDep
) -> Response:
    now = state.clock.now()
    owner_id = me.workspace.owner_id
    u = await usage(session, owner_id, now)
    period, _, _ = month_bounds(now)
    by_workspace = (
        await session.execute(
            select(Workspace.name, func.count(QuotaEntry.id))
            .join(QuotaEntry, QuotaEntry.workspace_id == Workspace.id)
            .where(QuotaEntry.owner_id == owner_id, QuotaEntry.period_start == period)
            .group_by(Workspace.id, Workspace.name)
            .order_by(Workspace.name)
        )
    ).all()
    by_member = [(m.email, m.used) for m in await usage_by_member(session, owner_id, now)]
    return page(
        request,
        "usage.html",
        {"u": u, "by_workspace": by_workspace, "by_member": by_member},
    )


# -- API keys ---------------------------------------------------------------------------------


async def _keys_page(
    request: Request,
    session: AsyncSession,
    me: SignedIn,
    *,
    created: str | None = None,
    error: str | None = None,
    status: int = 200,
) -> Response:
    keys = (
        await session.scalars(
            select(ApiKey).where(ApiKey.workspace_id == me.workspace.id).order_by(ApiKey.id.desc())
        )
    ).all()
    return page(
        request, "api_keys.html", {"keys": keys, "created": created, "error": error}, status
    )


@router.get("/api-keys")
async def api_keys(request: Request, session: SessionDep, me: UserDep) -> Response:
    return await _keys_page(request, session, me)


@router.post("/api-keys")
async def new_api_key(
    request: Request,
    session: SessionDep,
    state: StateDep,
    me: FormUser,
    name: Annotated[str, Form()] = "",
) -> Response:
    name = name.strip()
    if not name or len(name) > 200:
        return await _keys_page(
            request, session, me, error="Give the key a name (up to 200 characters).", status=422
        )
    _key, full = await create_api_key(
        session, workspace_id=me.workspace.id, user_id=me.user.id, name=name, now=state.clock.now()
    )
    await session.commit()
    return await _keys_page(request, session, me, created=full)


@router.post("/api-keys/{key_id}/revoke")
async def revoke_key(
    request: Request, key_id: str, session: SessionDep, state: StateDep, me: FormUser
) -> Response:
    await revoke_api_key(
        session, workspace_id=me.workspace.id, key_id=key_id, now=state.clock.now()
    )
    await session.commit()
    # This process stops trusting it at once; others within api_key_cache_seconds.
    state.principals.forget_all()
    return done(request, "/api-keys")


# -- webhooks ---------------------------------------------------------------------------------


async def _hooks_page(
    request: Request,
    session: AsyncSession,
    settings: Settings,
    me: SignedIn,
    *,
    created: str | None = None,
    rotated: WebhookEndpoint | None = None,
    errors: dict[str, str] | None = None,
    url: str = "",
    status: int = 200,
) -> Response:
    rows = await webhooks.list_webhooks(session, settings, me.workspace.id)
    return page(
        request,
        "webhooks.html",
        {
            "hooks": rows,
            "events": webhooks.EVENTS,
            "created": created,
            "rotated": rotated,
            "errors": errors or {},
            "url": url,
        },
        status,
    )


@router.get("/webhooks")
async def hooks(request: Request, session: SessionDep, state: StateDep, me: UserDep) -> Response:
    return await _hooks_page(request, session, state.settings, me)


@router.post("/webhooks")
async def new_hook(
    request: Request, session: SessionDep, state: StateDep, me: FormUser
) -> Response:
    form = await request.form()
    url = str(form.get("url", ""))
    events = [str(e) for e in form.getlist("events")]
    try:
        _row, secret = await webhooks.create_webhook(
            session, state.settings, me.workspace.id, url, events, state.clock.now()
        )
    except ValidationFailed as exc:
        await rollback(session, me)
        return await _hooks_page(
            request,
            session,
            state.settings,
            me,
            errors={e.field: e.message for e in exc.errors},
            url=url,
            status=422,
        )
    await session.commit()
    return await _hooks_page(request, session, state.settings, me, created=secret)


@router.post("/webhooks/{webhook_id}/delete")
async def delete_hook(
    request: Request, webhook_id: str, session: SessionDep, state: StateDep, me: FormUser
) -> Response:
    await webhooks.delete_webhook(session, state.settings, me.workspace.id, webhook_id)
    await session.commit()
    return done(request, "/webhooks")


@router.post("/webhooks/{webhook_id}/rotate")
async def rotate_hook(
    request: Request, webhook_id: str, session: SessionDep, state: StateDep, me: FormUser
) -> Response:
    row, secret = await webhooks.rotate_secret(
        session, state.settings, me.workspace.id, webhook_id, state.clock.now()
    )
    await session.commit()
    return await _hooks_page(request, session, state.settings, me, created=secret, rotated=row)


@router.post("/webhooks/{webhook_id}/test")
async def test_hook(
    request: Request, webhook_id: str, session: SessionDep, state: StateDep, me: FormUser
) -> Response:
    await webhooks.send_test(
        session, state.settings, me.workspace.id, webhook_id, state.clock.now()
    )
    await session.commit()
    return done(request, f"/webhooks/{webhook_id}/deliveries")


@router.get("/webhooks/{webhook_id}/deliveries")
async def hook_deliveries(
    request: Request, webhook_id: str, session: SessionDep, state: StateDep, me: UserDep
) -> Response:
    hook, rows = await webhooks.delivery_log(session, state.settings, me.workspace.id, webhook_id)
    return page(request, "webhook_deliveries.html", {"hook": hook, "deliveries": rows})


@router.post("/webhooks/{webhook_id}/deliveries/{delivery_id}/resend")
async def resend_delivery(
    request: Request,
    webhook_id: str,
    delivery_id: str,
    session: SessionDep,
    state: StateDep,
    me: FormUser,
) -> Response:
    await webhooks.resend(
        session, state.settings, me.workspace.id, webhook_id, delivery_id, state.clock.now()
    )
    await session.commit()
    return done(request, f"/webhooks/{webhook_id}/deliveries")
