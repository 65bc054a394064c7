"""Shared pydantic field types whose errors read well in problem+json."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator
from pydantic_core import PydanticCustomError

from uploadpools import schedule


def _timezone(value: str) -> str:
    try:
        schedule.load_zone(value)
    except schedule.ScheduleError as exc:
        raise PydanticCustomError("timezone", str(exc))
    return value


def _hhmm(value: str) -> str:
    try:
        return schedule.format_time(schedule.parse_time(value))
    except schedule.ScheduleError as exc:
        raise PydanticCustomError("time", str(exc))


def _days(value: list[str]) -> list[str]:
    try:
        return schedule.format_days(schedule.parse_days(value))
    except schedule.ScheduleError as exc:
        raise PydanticCustomError("days", str(exc))


TimeZoneName = Annotated[str, AfterValidator(_timezone)]
HHMM = Annotated[str, AfterValidator(_hhmm)]
Weekdays = Annotated[list[str], AfterValidator(_days)]
