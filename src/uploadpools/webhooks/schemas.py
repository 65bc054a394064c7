from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field


class WebhookCreate(BaseModel):
    url: str = Field(max_length=2048, description="http(s) URL that receives the events")
    events: list[str] = Field(description="event types to receive")


class WebhookRead(BaseModel):
    id: str
    url: str
    events: list[str]
    created_at: datetime
    disabled_at: datetime | None
    disabled_reason: str | None
    previous_secret_expires_at: datetime | None = Field(
        default=None, description="until when the secret replaced by a rotation still signs"
    )


class WebhookCreated(WebhookRead):
    secret: str | None = Field(
        description="the signing secret (`whsec_…`), shown in this answer only"
    )


class SecretRotated(BaseModel):
    id: str
    secret: str | None = Field(description="the new signing secret, shown in this answer only")
    previous_secret_expires_at: datetime | None


class AttemptRead(BaseModel):
    at: datetime
    status_code: int | None
    error: str | None


class WebhookDeliveryRead(BaseModel):
    id: str
    event_id: str
    event_type: str
    status: str = Field(description="pending | sending | delivered | failed")
    attempts: int
    attempt_log: list[AttemptRead]
    next_attempt_at: datetime | None
    created_at: datetime
    finished_at: datetime | None
    payload: dict[str, Any] = Field(description="the event body as it is sent")
