from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from uploadpools.kit.validation import HHMM, TimeZoneName, Weekdays
from uploadpools.schedule import WEEKDAYS

PoolState = Literal["active", "paused"]


class SlotIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    time: HHMM = Field(examples=["09:00"])
    days: Weekdays = Field(default_factory=lambda: list(WEEKDAYS))
    account_ids: list[str] = Field(min_length=1, max_length=50)


class SlotUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    time: HHMM | None = None
    days: Weekdays | None = None
    account_ids: list[str] | None = Field(default=None, min_length=1, max_length=50)


class SlotRead(BaseModel):
    id: str
    time: str
    days: list[str]
    account_ids: list[str]
    next_fire_at: datetime | None


class PoolCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    timezone: TimeZoneName = Field(examples=["Europe/Berlin"])
    slots: list[SlotIn] = Field(min_length=1, max_length=100)
    state: PoolState = "paused"
    grace_minutes: int | None = Field(default=None, ge=0, le=1440)


class PoolUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, min_length=1, max_length=200)
    timezone: TimeZoneName | None = None
    state: PoolState | None = None
    grace_minutes: int | None = Field(default=None, ge=0, le=1440)


class PoolRead(BaseModel):
    id: str
    name: str
    timezone: str
    state: PoolState
    grace_minutes: int
    slots: list[SlotRead]
    queued_count: int
    next_fire_at: datetime | None
    created_at: datetime


class PredictedSkipRead(BaseModel):
    account_id: str
    reason: str
    detail: str


class ScheduleEntry(BaseModel):
    slot_id: str
    at: datetime
    local_date: str
    account_ids: list[str]
    item_id: str | None
    # Deliveries of this firing forecast to be skipped, and why (quota, platform cap,
    # account needing re-auth or disabled). Empty when all should post.
    skips: list[PredictedSkipRead] = []


class ScheduleRead(BaseModel):
    items: list[ScheduleEntry]
    next_cursor: None = None


class FiringRead(BaseModel):
    id: str
    slot_id: str
    scheduled_for: datetime
    fired_at: datetime
    # dispatched | partial | skipped | empty | missed | manual (+ pending while posting)
    outcome: str
    kind: Literal["scheduled", "manual"]
    # What the firing achieved; for a manual firing `outcome` is "manual" and this says more.
    result: str
    item_id: str | None
    local_date: str
    covers_until: str | None = None
    missed_count: int = 0
