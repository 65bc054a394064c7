"""The pool form: parse its rows into the API's schema, and name the field of each error."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError
from starlette.datastructures import FormData

from uploadpools.exceptions import FieldError
from uploadpools.pools.schemas import PoolCreate

_SLOT_FIELD = re.compile(r"^slot-(\d+)-(id|time|days|accounts)$")


@dataclass
class SlotRow:
    id: str = ""
    time: str = ""
    days: list[str] = field(default_factory=list)
    account_ids: list[str] = field(default_factory=list)


@dataclass
class PoolForm:
    name: str = ""
    timezone: str = ""
    slots: list[SlotRow] = field(default_factory=list)

    @classmethod
    def parse(cls, form: FormData) -> PoolForm:
        rows: dict[int, SlotRow] = {}
        for key, value in form.multi_items():
            m = _SLOT_FIELD.match(key)
            if not m or not isinstance(value, str):
                continue
            row = rows.setdefault(int(m.group(1)), SlotRow())
            part = m.group(2)
            if part == "id":
                row.id = value
            elif part == "time":
                row.time = value.strip()
            elif part == "days":
                row.days.append(value)
            else:
                row.account_ids.append(value)
        return cls(
            name=str(form.get("name", "")).strip(),
            timezone=str(form.get("timezone", "")).strip(),
            slots=[rows[i] for i in sorted(rows)],
        )

    def payload(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "timezone": self.timezone,
            "slots": [
                {"time": s.time, "days": s.days, "account_ids": s.account_ids} for s in self.slots
            ],
        }

    def validate(self) -> PoolCreate:
        return PoolCreate.model_validate(self.payload())


def errors_from_pydantic(exc: ValidationError) -> list[FieldError]:
    return [
        FieldError(".".join(str(p) for p in e["loc"]) or "form", _message(e["msg"]))
        for e in exc.errors()
    ]


def _message(msg: str) -> str:
    msg = msg.removeprefix("Value error, ")
    if msg == "List should have at least 1 item after validation, not 0":
        return "choose at least one"
    if msg == "String should have at least 1 character":
        return "is required"
    return msg


def by_field(errors: list[FieldError]) -> dict[str, str]:
    """`slots.0.account_ids.1` → `slots.0.account_ids`: errors sit next to the control."""
    out: dict[str, str] = {}
    for e in errors:
        key = re.sub(r"^(slots\.\d+\.account_ids)\.\d+$", r"\1", e.field)
        key = re.sub(r"^(slots\.\d+\.days)\.\d+$", r"\1", key)
        message = "add at least one slot" if key == "slots" else e.message
        out.setdefault(key, message)
    return out
