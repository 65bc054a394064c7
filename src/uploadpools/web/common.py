from __future__ import annotations

from fastapi import Request
from starlette.responses import RedirectResponse, Response

from uploadpools.config import Settings
from uploadpools.web.deps import is_xhr


def safe_next(value: str | None, default: str = "/pools") -> str:
    """Only a path on this site: never `//host` or an absolute URL."""
    if value and value.startswith("/") and not value.startswith("//") and "\\" not in value:
        return value
    return default


def done(request: Request, url: str) -> Response:
    """After a change: scripts get 204 (they refresh what they show), forms a redirect."""
    if is_xhr(request):
        return Response(status_code=204)
    return RedirectResponse(url, status_code=303)


def secure_cookies(settings: Settings) -> bool:
    return settings.public_url.startswith("https://")
