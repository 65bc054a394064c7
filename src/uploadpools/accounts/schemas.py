from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from uploadpools.models.account import PLATFORMS

Platform = Literal[PLATFORMS]  # type: ignore[valid-type]


class AccountCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    platform: Platform
    name: str = Field(min_length=1, max_length=200)
    config: dict[str, Any] = Field(default_factory=dict)


class AccountUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, min_length=1, max_length=200)
    config: dict[str, Any] | None = None
    status: Literal["connected", "disabled"] | None = None


class AccountRead(BaseModel):
    id: str
    platform: str
    name: str
    status: Literal["connected", "needs_reauth", "disabled"]
    created_at: datetime
