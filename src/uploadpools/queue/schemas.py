from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field


class ItemFields(BaseModel):
    """Fields shared by JSON and multipart enqueues."""

    model_config = ConfigDict(extra="forbid")

    title: str = Field(default="", max_length=500)
    caption: str = Field(default="", max_length=10_000)
    options: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        examples=[{"tiktok": {"privacy": "public"}, "youtube": {"privacy": "unlisted"}}],
    )


class ItemCreate(ItemFields):
    video_url: AnyHttpUrl


class ItemUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    title: str | None = Field(default=None, max_length=500)
    caption: str | None = Field(default=None, max_length=10_000)
    options: dict[str, dict[str, Any]] | None = None
    position: int | None = Field(default=None, ge=0)
    status: Literal["queued"] | None = None


class RequeueIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    status: Literal["skipped"] = "skipped"
    to: Literal["front", "back"] = "back"


class RequeueRead(BaseModel):
    requeued: int
    item_ids: list[str]


class MediaRead(BaseModel):
    state: Literal["pending", "ready", "failed"]
    size: int | None
    duration_s: float | None
    width: int | None
    height: int | None
    content_type: str | None
    sha256: str | None = None
    error: str | None = None


class DeliveryRead(BaseModel):
    account_id: str | None
    platform: str
    status: Literal["pending", "in_progress", "posted", "skipped"]
    reason: str | None
    detail: str | None
    remote_id: str | None
    remote_url: str | None
    attempts: int
    finished_at: datetime | None


class ItemRead(BaseModel):
    id: str
    pool_id: str
    status: Literal["queued", "dispatching", "dispatched", "skipped"]
    position: int | None
    title: str
    caption: str
    options: dict[str, Any]
    media: MediaRead
    expected_at: datetime | None
    deliveries: list[DeliveryRead]
    skip_reason: str | None = None
    skip_detail: str | None = None
    enqueued_at: datetime
    dispatched_at: datetime | None
