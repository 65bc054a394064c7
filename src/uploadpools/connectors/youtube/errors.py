"""Google's error bodies → the connector error tree.

Google answers ``{"error": {"code", "message", "errors": [{"domain", "reason", "message"}]}}``
from the API and ``{"error": "invalid_grant", "error_description": …}`` from the token
endpoint. The reason decides, not the status alone: a 403 is a quota, a rate limit or a
refusal depending on it.
"""

from __future__ import annotations

from typing import Any

import httpx

from uploadpools.connectors.base import (
    AuthExpired,
    ConnectorError,
    DailyLimitReached,
    Permanent,
    RateLimited,
    Transient,
)

DAILY = {"quotaExceeded", "dailyLimitExceeded"}
RATE = {"rateLimitExceeded", "userRateLimitExceeded"}
AUTH = {"authError", "invalid_grant", "invalid_token", "insufficientPermissions", "unauthorized"}
SERVER = {"backendError", "internalError", "temporarily_unavailable"}
# Bad input that is about the video or its metadata (the user must change the item).
MEDIA = {"mediaBodyRequired", "invalidFilename", "videoTooLong", "uploadAborted"}


def reasons_of(response: httpx.Response) -> tuple[list[str], str]:
    """The ``errors[].reason`` values (or the OAuth ``error`` code) and a message."""
    try:
        body: Any = response.json()
    except ValueError:
        return [], response.text[:200]
    err = body.get("error") if isinstance(body, dict) else None
    if isinstance(err, str):  # OAuth token endpoint
        return [err], str(body.get("error_description") or err)
    if not isinstance(err, dict):
        return [], response.text[:200]
    reasons = [str(e.get("reason")) for e in err.get("errors") or [] if isinstance(e, dict)]
    status = err.get("status")
    if not reasons and isinstance(status, str):
        reasons = [status]
    return reasons, str(err.get("message") or "")


def google_error(response: httpx.Response, doing: str) -> ConnectorError:
    reasons, message = reasons_of(response)
    rs = set(reasons)
    what = f"YouTube {doing}: HTTP {response.status_code} {', '.join(reasons) or ''}".rstrip()
    detail = f"{what}: {message}" if message else what
    if "uploadLimitExceeded" in rs:
        return DailyLimitReached(
            f"{detail} (the channel's daily upload limit; YouTube says to try again in 24 h)"
        )
    if rs & DAILY:
        return DailyLimitReached(
            f"{detail} (the API project's daily quota; it resets at midnight Pacific time)"
        )
    if rs & RATE or response.status_code == 429:
        return RateLimited(detail, retry_after=_retry_after(response))
    if "youtubeSignupRequired" in rs:
        return Permanent(f"{detail} (the Google account has no YouTube channel yet)")
    if rs & AUTH or response.status_code == 401:
        return AuthExpired(detail)
    if rs & SERVER or response.status_code >= 500:
        return Transient(detail, retry_after=_retry_after(response))
    if rs & {"invalid_client", "unauthorized_client"}:
        return Permanent(
            f"{detail} (Google refused this server's app credentials: check "
            "UPLOADPOOLS_YOUTUBE_CLIENT_ID and UPLOADPOOLS_YOUTUBE_CLIENT_SECRET)"
        )
    # API reasons are camelCase (invalidTitle); OAuth codes are snake_case (invalid_request).
    if rs & MEDIA or any(r.startswith("invalid") and "_" not in r for r in rs):
        return Permanent(detail, reason="media_rejected")
    return Permanent(detail)


def _retry_after(response: httpx.Response) -> float | None:
    try:
        return float(response.headers.get("retry-after", ""))
    except ValueError:
        return None
