"""The `webhook` target: POST the item and a signed media URL to a URL the user gives."""

from __future__ import annotations

from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field


class WebhookConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: AnyHttpUrl
    # Standard Webhooks secret; when set, every request is signed with it.
    secret: str | None = Field(default=None, min_length=16, max_length=200)
