"""Templates, formatting filters, and the error page."""

from __future__ import annotations

from datetime import datetime
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote
from zoneinfo import ZoneInfo

from fastapi import Request
from starlette.responses import RedirectResponse, Response

from uploadpools.exceptions import UploadPoolsError
from uploadpools.schedule import WEEKDAYS

if TYPE_CHECKING:
    from fastapi.templating import Jinja2Templates

HERE = Path(__file__).parent

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


@cache
def templates() -> Jinja2Templates:
    """Made at the first page: a server used only through the API never loads Jinja2."""
    from fastapi.templating import Jinja2Templates

    t = Jinja2Templates(directory=str(HERE / "templates"))
    t.env.filters["when"] = when
    t.env.filters["days_label"] = days_label
    t.env.globals["WEEKDAYS"] = WEEKDAYS
    t.env.globals["DAY_LABELS"] = DAY_LABELS
    return t


def page(
    request: Request, name: str, context: dict[str, Any] | None = None, status_code: int = 200
) -> Response:
    ctx = {"me": getattr(request.state, "signed_in", None), **(context or {})}
    return templates().TemplateResponse(request, name, ctx, status_code=status_code)


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
