"""TikTok: Content Posting API, direct post (docs/platforms/tiktok.md).

The account's config is the token set from the OAuth connect flow, stored encrypted.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, field_validator, model_validator

from uploadpools.connectors.oauth import TokenSet
from uploadpools.connectors.oauth_session import flatten_extra


class TikTokConfig(BaseModel):
    model_config = ConfigDict(extra="ignore")

    access_token: str
    refresh_token: str | None = None
    expires_at: datetime | None = None
    refresh_expires_at: datetime | None = None
    scope: str | None = None
    # The creator's id for this app (TikTok's `open_id`).
    open_id: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _from_token_set(cls, data: Any) -> Any:
        return flatten_extra(data)  # as the shared connect flow stores it

    @field_validator("expires_at", "refresh_expires_at")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        # Instants are UTC; a stored value without an offset is read as UTC.
        return value.replace(tzinfo=UTC) if value and value.tzinfo is None else value

    @classmethod
    def from_tokens(cls, tokens: TokenSet) -> TikTokConfig:
        return cls(
            access_token=tokens.access_token,
            refresh_token=tokens.refresh_token,
            expires_at=tokens.expires_at,
            refresh_expires_at=tokens.refresh_expires_at,
            scope=tokens.scope,
            open_id=tokens.extra.get("open_id"),
        )

    def tokens(self) -> TokenSet:
        return TokenSet(
            access_token=self.access_token,
            refresh_token=self.refresh_token,
            expires_at=self.expires_at,
            refresh_expires_at=self.refresh_expires_at,
            scope=self.scope,
            extra={"open_id": self.open_id} if self.open_id else {},
        )

    def stored(self) -> dict[str, Any]:
        return self.model_dump(mode="json")
