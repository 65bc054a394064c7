from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from pydantic import ValidationError
from starlette.responses import Response

from uploadpools.accounts.schemas import AccountCreate, AccountRead, AccountUpdate
from uploadpools.accounts.service import AccountService, validate_config
from uploadpools.deps import CurrentWorkspace, Idempotency, NowDep, SessionDep, SettingsDep
from uploadpools.exceptions import FieldError, ValidationFailed
from uploadpools.kit.pagination import clamp_limit
from uploadpools.kit.responses import commit_response
from uploadpools.models import Account
from uploadpools.models.account import PLATFORMS
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


_CREATE_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": AccountCreate.model_json_schema()}},
    }
}


@router.post("", status_code=201, response_model=AccountRead, openapi_extra=_CREATE_BODY)
async def create_account(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    ws: CurrentWorkspace,
    now: NowDep,
    idem: Idempotency,
) -> Response:
    """Connect a token platform or a generic target (`webhook`, `folder`)."""
    try:
        payload = json.loads(await request.body() or b"null")
    except ValueError:
        raise ValidationFailed.one("body", "is not valid JSON")
    if not isinstance(payload, dict):
        raise ValidationFailed.one("body", "must be a JSON object")
    # The body and the platform's config are checked in one pass, so a 422 names every
    # bad field at once.
    errors: list[FieldError] = []
    data: AccountCreate | None = None
    try:
        data = AccountCreate.model_validate(payload)
    except ValidationError as exc:
        errors += [FieldError(".".join(str(p) for p in e["loc"]), e["msg"]) for e in exc.errors()]
    platform, config = payload.get("platform"), payload.get("config", {})
    if platform in PLATFORMS and isinstance(config, dict):
        try:
            config = await validate_config(platform, config, settings)
        except ValidationFailed as exc:
            errors += exc.errors
    if errors or data is None:
        raise ValidationFailed(errors)
    account = await AccountService(session, settings).create(
        ws.workspace_id, data, now, validated_config=config
    )
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
    now: NowDep,
    force: bool = False,
) -> Response:
    await AccountService(session, settings).delete(
        ws.workspace_id, account_id, force=force, now=now
    )
    await session.commit()
    return Response(status_code=204)
