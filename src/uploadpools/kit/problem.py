"""RFC 9457 problem details."""

from __future__ import annotations

from typing import Any

from starlette.responses import JSONResponse

from uploadpools.exceptions import UploadPoolsError, ValidationFailed

PROBLEM_BASE = "https://uploadpools.dev/problems/"


class ProblemResponse(JSONResponse):
    media_type = "application/problem+json"


def problem_body(
    status: int, title: str, detail: str, type_slug: str, errors: list[dict[str, str]] | None = None
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": PROBLEM_BASE + type_slug,
        "title": title,
        "status": status,
        "detail": detail,
    }
    if errors is not None:
        body["errors"] = errors
    return body


def problem_for(exc: UploadPoolsError) -> ProblemResponse:
    errors = None
    if isinstance(exc, ValidationFailed):
        errors = [{"field": e.field, "message": e.message} for e in exc.errors]
    headers = {"WWW-Authenticate": "Bearer"} if exc.status_code == 401 else None
    return ProblemResponse(
        problem_body(exc.status_code, exc.title, exc.detail, exc.type_slug, errors),
        status_code=exc.status_code,
        headers=headers,
    )


def field_from_loc(loc: tuple[Any, ...] | list[Any]) -> str:
    parts = [str(p) for p in loc]
    if parts and parts[0] in ("body", "query", "path", "header", "form"):
        parts = parts[1:]
    return ".".join(parts) or "body"
