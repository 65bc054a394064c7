from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from starlette.responses import Response

from uploadpools.accounts.schemas import AccountCreate, AccountRead, AccountUpdate
from uploadpools.accounts.service import AccountService
from uploadpools.deps import CurrentWorkspace, Idempotency, NowDep, SessionDep, SettingsDep
from uploadpools.kit.pagination import clamp_limit
from uploadpools.kit.responses import commit_response
from uploadpools.models import Account
from uploadpools.schemas import Page

router = APIRouter(prefix="/accounts", tags=["accounts"])


def read(a: Account) -> AccountRead:
    return AccountRead.model_validate(a, from_attributes=True)


@router.get("", response_model=Page[AccountRead])
async def list_accounts(
    session: SessionDep,
    settings: SettingsDep,
    ws: CurrentWorkspace,
    limit: Annotated[int | None, Query()] = None,
    cursor: str | None = None,
) -> Page[AccountRead]:
    rows, nxt = await AccountService(session, settings).list(
        ws.workspace_id, limit=clamp_limit(limit), cursor=cursor
    )
    return Page(items=[read(a) for a in rows], next_cursor=nxt)


@router.post("", status_code=201, response_model=AccountRead)
async def create_account(
    body: AccountCreate,
    session: SessionDep,
    settings: SettingsDep,
    ws: CurrentWorkspace,
    now: NowDep,
    idem: Idempotency,
) -> Response:
    account = await AccountService(session, settings).create(ws.workspace_id, body, now)
    return await commit_response(session, idem, 201, read(account))


@router.get("/{account_id}", response_model=AccountRead)
async def get_account(
    account_id: str, session: SessionDep, settings: SettingsDep, ws: CurrentWorkspace
) -> AccountRead:
    return read(await AccountService(session, settings).get(ws.workspace_id, account_id))


@router.patch("/{account_id}", response_model=AccountRead)
async def update_account(
    account_id: str,
    body: AccountUpdate,
    session: SessionDep,
    settings: SettingsDep,
    ws: CurrentWorkspace,
    now: NowDep,
) -> Response:
    account = await AccountService(session, settings).update(ws.workspace_id, account_id, body, now)
    return await commit_response(session, None, 200, read(account))


@router.delete("/{account_id}", status_code=204)
async def delete_account(
    account_id: str,
    session: SessionDep,
    settings: SettingsDep,
    ws: CurrentWorkspace,
    force: bool = False,
) -> Response:
    await AccountService(session, settings).delete(ws.workspace_id, account_id, force=force)
    await session.commit()
    return Response(status_code=204)
