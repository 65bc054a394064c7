"""Templates, formatting filters, and the error page."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo

from fastapi import Request
from fastapi.templating import Jinja2Templates
from starlette.responses import RedirectResponse, Response

from uploadpools.exceptions import UploadPoolsError
from uploadpools.schedule import WEEKDAYS

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=str(HERE / "templates"))

DAY_LABELS = {
    "mon": "Mon",
    "tue": "Tue",
    "wed": "Wed",
    "thu": "Thu",
    "fri": "Fri",
    "sat": "Sat",
    "sun": "Sun",
}


def when(value: datetime | None, tz: str | None = None, fmt: str = "%a %-d %b %H:%M") -> str:
    if value is None:
        return "—"
    zone = ZoneInfo(tz) if tz else ZoneInfo("UTC")
    text = value.astimezone(zone).strftime(fmt)
    return text if tz else f"{text} UTC"


def days_label(days: list[str]) -> str:
    if list(days) == list(WEEKDAYS):
        return "every day"
    if list(days) == list(WEEKDAYS[:5]):
        return "Mon\u2013Fri"
    if list(days) == list(WEEKDAYS[5:]):
        return "weekends"
    return ", ".join(DAY_LABELS[d] for d in days)


templates.env.filters["when"] = when
templates.env.filters["days_label"] = days_label
templates.env.globals["WEEKDAYS"] = WEEKDAYS
templates.env.globals["DAY_LABELS"] = DAY_LABELS


def page(
    request: Request, name: str, context: dict[str, Any] | None = None, status_code: int = 200
) -> Response:
    ctx = {"me": getattr(request.state, "signed_in", None), **(context or {})}
    return templates.TemplateResponse(request, name, ctx, status_code=status_code)


def is_web_path(path: str) -> bool:
    """Web pages get HTML errors; the API and media URLs keep problem+json."""
    return not path.startswith(
        ("/api/", "/media/", "/openapi.json", "/docs", "/healthz", "/readyz", "/metrics")
    )


def error_page(request: Request, status: int, title: str, detail: str) -> Response:
    if status == 401:
        target = "/signin"
        if request.method == "GET" and request.url.path not in ("/", "/signin"):
            target += "?next=" + quote(request.url.path, safe="/")
        return RedirectResponse(target, status_code=303)
    if status == 404:
        title, detail = "Not found", "There is nothing here — or it belongs to another workspace."
    return page(request, "error.html", {"title": title, "detail": detail, "status": status}, status)


def domain_error_page(request: Request, exc: UploadPoolsError) -> Response:
    return error_page(request, exc.status_code, exc.title, exc.detail)
