"""Logging: one record per line, as JSON or text, with request and engine ids attached.

``configure_logging(settings)`` is called once by ``serve`` and ``worker``. Ids travel in
context variables, so every record logged while handling a request carries its
``request_id`` (taken from ``X-Request-ID`` when it is a sane token, else generated, and
echoed in the response), and every record logged while the dispatcher runs a delivery
carries ``firing_id`` and ``delivery_id``, whichever module logs it.

What is never logged: request headers and bodies, query strings (a signed media URL's
``sig`` is a credential) and outbound URLs (httpx's per-request INFO lines are silenced,
as a user's ``video_url`` can hold a token). The access line logs method, path, status
and duration only.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from uploadpools.config import Settings

__all__ = [
    "JsonFormatter",
    "RequestIdMiddleware",
    "configure_logging",
    "engine_ids",
    "request_id",
]

request_id: ContextVar[str | None] = ContextVar("request_id", default=None)
firing_id: ContextVar[str | None] = ContextVar("firing_id", default=None)
delivery_id: ContextVar[str | None] = ContextVar("delivery_id", default=None)
_CONTEXT = (("request_id", request_id), ("firing_id", firing_id), ("delivery_id", delivery_id))
_REQUEST_ID_RE = re.compile(r"[A-Za-z0-9._:-]{1,128}")
access_log = logging.getLogger("uploadpools.access")


@contextmanager
def engine_ids(*, firing: str | None = None, delivery: str | None = None) -> Iterator[None]:
    """Attach a firing and/or delivery id to every record logged inside."""
    tokens = [(firing_id, firing_id.set(firing)), (delivery_id, delivery_id.set(delivery))]
    try:
        yield
    finally:
        for var, token in reversed(tokens):
            var.reset(token)


class ContextFilter(logging.Filter):
    """Copies the context ids onto each record (None when unset)."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name, var in _CONTEXT:
            if not hasattr(record, name):
                setattr(record, name, var.get())
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "timestamp": datetime.fromtimestamp(record.created, UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name, _var in _CONTEXT:
            value = getattr(record, name, None)
            if value is not None:
                out[name] = value
        for key in ("method", "path", "status", "duration_ms"):
            if hasattr(record, key):
                out[key] = getattr(record, key)
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False, default=str)


class _TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        ids = " ".join(
            f"{name}={getattr(record, name)}"
            for name, _ in _CONTEXT
            if getattr(record, name, None) is not None
        )
        line = super().format(record)
        return f"{line} [{ids}]" if ids else line


def handler_for(settings: Settings, stream: Any = None) -> logging.Handler:
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.addFilter(ContextFilter())
    if settings.log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(_TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    return handler


def configure_logging(settings: Settings, stream: Any = None) -> None:
    """Route every logger (ours, uvicorn's, SQLAlchemy's) through one handler on the root."""
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler_for(settings, stream))
    root.setLevel(settings.log_level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True
    # Outbound request lines carry full URLs (tokens in query strings): not at INFO.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)


class RequestIdMiddleware:
    """Sets ``request_id`` for the request, echoes it as ``X-Request-ID``, logs one access line."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"x-request-id"), "")
        rid = given if _REQUEST_ID_RE.fullmatch(given) else uuid.uuid4().hex
        token = request_id.set(rid)
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [
                    *message["headers"],
                    (b"x-request-id", rid.encode("latin-1")),
                ]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            access_log.info(
                "%s %s %s",
                scope["method"],
                scope["path"],
                status,
                extra={
                    "method": scope["method"],
                    "path": scope["path"],
                    "status": status,
                    "duration_ms": round((time.perf_counter() - started) * 1000, 1),
                },
            )
            request_id.reset(token)
