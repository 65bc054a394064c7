from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from uploadpools.accounts.schemas import AccountCreate, AccountUpdate
from uploadpools.config import Settings
from uploadpools.connectors.folder import folder_target_root
from uploadpools.connectors.registry import CONFIG_MODELS, OAUTH_PLATFORMS
from uploadpools.exceptions import Conflict, FieldError, NotFound, ValidationFailed
from uploadpools.kit.crypto import SecretBox
from uploadpools.kit.netguard import DestinationRefused, resolve_and_check
from uploadpools.kit.pagination import decode_cursor, encode_cursor
from uploadpools.models import Account, Delivery, SlotAccount


class AccountNotFound(NotFound):
    title = "Account not found"


class AccountInUse(Conflict):
    title = "Account in use"


def _inside(root: Path, path: str) -> str | None:
    """`path` relative to `root`, or None when it points outside. Pure path arithmetic:
    `..` cannot climb out, and an absolute path must lie inside the root."""
    target = Path(os.path.normpath(os.path.join(root, path)))
    if target == root:
        return "."
    if root not in target.parents:
        return None
    return str(target.relative_to(root))


async def validate_config(
    platform: str, config: dict[str, Any], settings: Settings
) -> dict[str, Any]:
    model = CONFIG_MODELS.get(platform)
    if model is None:
        if platform in OAUTH_PLATFORMS:
            msg = f"{platform} accounts are connected through the web app at /connect/{platform}"
        else:
            msg = f"{platform} cannot be connected on this server yet"
        raise ValidationFailed.one("platform", msg)
    try:
        parsed = model.model_validate(config)
    except ValidationError as exc:
        raise ValidationFailed(
            [
                FieldError(".".join(["config", *(str(p) for p in e["loc"])]), e["msg"])
                for e in exc.errors()
            ]
        )
    data = parsed.model_dump(mode="json")
    if platform == "webhook":
        try:
            await resolve_and_check(data["url"], settings.allowed_networks)
        except DestinationRefused as exc:
            raise ValidationFailed.one("config.url", str(exc))
    if platform == "folder":
        root = folder_target_root(settings)
        inside = _inside(root, data["path"])
        if inside is None:
            raise ValidationFailed.one(
                "config.path", f"must be a directory inside the folder-target root {root}"
            )
        data["path"] = inside
    return data


class AccountService:
    def __init__(self, session: AsyncSession, settings: Settings) -> None:
        self.session = session
        self.settings = settings
        self.box = SecretBox(settings.secret())

    async def get(self, workspace_id: str, account_id: str) -> Account:
        account = await self.session.scalar(
            select(Account).where(Account.id == account_id, Account.workspace_id == workspace_id)
        )
        if account is None:
            raise AccountNotFound("no such account")
        return account

    async def list(
        self, workspace_id: str, *, limit: int, cursor: str | None
    ) -> tuple[list[Account], str | None]:
        q = select(Account).where(Account.workspace_id == workspace_id)
        if cursor:
            (last,) = decode_cursor(cursor, 1)
            q = q.where(Account.id > str(last))
        rows = list((await self.session.scalars(q.order_by(Account.id).limit(limit + 1))).all())
        more = len(rows) > limit
        rows = rows[:limit]
        return rows, encode_cursor(rows[-1].id) if more and rows else None

    async def create(
        self,
        workspace_id: str,
        data: AccountCreate,
        now: datetime,
        *,
        validated_config: dict[str, Any] | None = None,
    ) -> Account:
        config = validated_config
        if config is None:
            config = await validate_config(data.platform, data.config, self.settings)
        account = Account(
            workspace_id=workspace_id,
            platform=data.platform,
            name=data.name,
            status="connected",
            credentials=self.box.encrypt(config),
            created_at=now,
            updated_at=now,
        )
        self.session.add(account)
        await self.session.flush()
        return account

    async def update(
        self, workspace_id: str, account_id: str, data: AccountUpdate, now: datetime
    ) -> Account:
        account = await self.get(workspace_id, account_id)
        if data.name is not None:
            account.name = data.name
        if data.config is not None:
            merged = {**self.box.decrypt(account.credentials), **data.config}
            account.credentials = self.box.encrypt(
                await validate_config(account.platform, merged, self.settings)
            )
            if account.status == "needs_reauth":
                account.status = "connected"
        if data.status is not None:
            account.status = data.status
        account.updated_at = now
        return account

    async def delete(
        self, workspace_id: str, account_id: str, *, force: bool, now: datetime
    ) -> None:
        account = await self.get(workspace_id, account_id)
        used = await self.session.scalar(
            select(func.count())
            .select_from(SlotAccount)
            .where(SlotAccount.account_id == account.id)
        )
        if used and not force:
            raise AccountInUse(
                f"{used} slot(s) post to this account; remove it from them first or pass ?force=true"
            )
        slot_ids = list(
            (
                await self.session.scalars(
                    select(SlotAccount.slot_id).where(SlotAccount.account_id == account.id)
                )
            ).all()
        )
        await self.session.execute(delete(SlotAccount).where(SlotAccount.account_id == account.id))
        await self.session.delete(account)
        await self.session.flush()
        # Past deliveries keep their record without it (no foreign key, migration 0008).
        await self.session.execute(
            update(Delivery).where(Delivery.account_id == account.id).values(account_id=None)
        )
        if slot_ids:
            # A slot left without accounts posts nowhere: it is no longer scheduled.
            from uploadpools.pools.service import reschedule_slots

            await reschedule_slots(self.session, slot_ids, now)

    def config_of(self, account: Account) -> dict[str, Any]:
        return self.box.decrypt(account.credentials)
