"""TikTok's v2 API shapes: the error envelope, upload chunk plans, failure reasons.

Facts from the Content Posting API reference and media transfer guide (sources in
the shared platform_apis.md). Every v2 answer is ``{"data": {...}, "error": {"code",
"message", "log_id"}}`` and anything but ``error.code == "ok"`` is a failure, whatever
the HTTP status says, so errors are classified by ``error.code`` first.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, NoReturn

import httpx

from uploadpools.connectors.base import (
    AuthExpired,
    ConnectorError,
    DailyLimitReached,
    Permanent,
    RateLimited,
    Transient,
)

# -- chunk rules ---------------------------------------------------------------------------
# "Each chunk at least 5 MB and at most 64 MB, the final chunk absorbs the remainder (up to
# 128 MB); files under 5 MB go whole; files over 64 MB must be chunked; 1 to 1000 chunks;
# total_chunk_count = floor(video_size / chunk_size)". The guide does not say whether MB is
# 10^6 or 2^20 bytes, so plans keep inside both readings: chunks of at least 5 MiB and at
# most 64 000 000 bytes, a final chunk under 128 000 000 bytes.
MIN_CHUNK = 5 * 1024 * 1024
MAX_CHUNK = 64_000_000
MAX_FINAL_CHUNK = 128_000_000
MAX_CHUNKS = 1000
MAX_VIDEO_SIZE = 4 * 1024**3

CONTENT_TYPES = ("video/mp4", "video/quicktime", "video/webm")


@dataclass(frozen=True, slots=True)
class ChunkPlan:
    video_size: int
    chunk_size: int
    total_chunk_count: int

    def ranges(self) -> list[tuple[int, int]]:
        """``(first, last)`` byte positions of each chunk, inclusive, in upload order."""
        out = []
        for i in range(self.total_chunk_count):
            first = i * self.chunk_size
            last = (
                self.video_size - 1
                if i == self.total_chunk_count - 1
                else first + self.chunk_size - 1
            )
            out.append((first, last))
        return out

    def source_info(self) -> dict[str, Any]:
        return {
            "source": "FILE_UPLOAD",
            "video_size": self.video_size,
            "chunk_size": self.chunk_size,
            "total_chunk_count": self.total_chunk_count,
        }


def plan_chunks(video_size: int, preferred: int) -> ChunkPlan:
    """Split ``video_size`` bytes into chunks of about ``preferred`` bytes, within the rules."""
    if video_size < 1:
        raise ValueError("an empty file cannot be uploaded")
    if video_size > MAX_VIDEO_SIZE:
        raise ValueError(f"TikTok takes files up to {MAX_VIDEO_SIZE} bytes")
    chunk = min(max(preferred, MIN_CHUNK), MAX_CHUNK)
    if video_size <= chunk:
        return ChunkPlan(video_size, video_size, 1)
    count = video_size // chunk
    if count == 1:
        if video_size <= MAX_CHUNK:
            return ChunkPlan(video_size, video_size, 1)
        # Over 64 MB must be chunked: two halves (each above 32 MB, at most 64 MB).
        chunk = video_size // 2
        count = video_size // chunk
    # At most 4 GiB in chunks of 5 MiB or more: never over MAX_CHUNKS (819 at worst).
    return ChunkPlan(video_size, chunk, count)


# -- errors --------------------------------------------------------------------------------

AUDIT_HELP = (
    "TikTok only lets apps that passed its audit post publicly; until this server's TikTok "
    "app is audited, posts must use privacy SELF_ONLY and the TikTok account must be set to "
    "private (see docs/platforms/tiktok.md)"
)

_DAILY = {
    "spam_risk_too_many_posts": "TikTok's daily post limit for this account is reached",
    "reached_active_user_cap": (
        "TikTok's daily limit of accounts posting through this server's app is reached"
    ),
    "spam_risk_too_many_pending_share": "TikTok's limit of pending shares is reached",
}
_MEDIA = {
    "invalid_file_upload": "TikTok refused the uploaded file",
    "file_format_check_failed": "TikTok refused the video's format",
    "duration_check_failed": "TikTok refused the video's duration",
    "frame_rate_check_failed": "TikTok refused the video's frame rate (23 to 60 fps)",
    "picture_size_check_failed": "TikTok refused the video's picture size (360 to 4096 px)",
}
_PERMANENT = {
    "spam_risk_user_banned_from_posting": "TikTok has banned this account from posting",
    "unaudited_client_can_only_post_to_private_accounts": AUDIT_HELP,
    "privacy_level_option_mismatch": (
        "TikTok refused the privacy level: it must be one this account offers"
    ),
    "url_ownership_unverified": "TikTok refused the media URL's domain (not verified)",
    "invalid_param": "TikTok refused the request as invalid",
    "invalid_params": "TikTok refused the request as invalid",
    "publish_cancelled": "the post was cancelled on TikTok",
}
_AUTH = {
    "access_token_invalid": "TikTok no longer accepts this account's access token",
    "scope_not_authorized": (
        "the TikTok account did not grant posting (video.publish); reconnect it and allow it"
    ),
    "scope_permission_missed": (
        "the TikTok account did not grant posting (video.publish); reconnect it and allow it"
    ),
    "auth_removed": "the TikTok account removed this app's access",
}
_TRANSIENT = {
    "internal_error": "TikTok had an internal error",
    "internal": "TikTok had an internal error",
    "video_pull_failed": "TikTok could not download the video",
}


class TokenInvalid(AuthExpired):
    """``access_token_invalid``: worth one refresh before giving up on the account."""


def _said(message: str, log_id: str | None) -> str:
    bits = [m for m in (message.strip(), f"log_id {log_id}" if log_id else "") if m]
    return f" ({'; '.join(bits)})" if bits else ""


def raise_for_code(code: str, message: str = "", log_id: str | None = None) -> NoReturn:
    """Raise the connector error for a TikTok ``error.code`` or ``fail_reason``."""
    said = _said(message, log_id)
    if code in _DAILY:
        raise DailyLimitReached(f"{_DAILY[code]}{said}")
    if code == "rate_limit_exceeded":
        raise RateLimited(f"TikTok's rate limit for this account is reached{said}")
    if code == "access_token_invalid":
        raise TokenInvalid(f"{_AUTH[code]}{said}")
    if code in _AUTH:
        raise AuthExpired(f"{_AUTH[code]}{said}")
    if code in _MEDIA:
        raise Permanent(f"{_MEDIA[code]}{said}", reason="media_rejected")
    if code in _PERMANENT:
        raise Permanent(f"{_PERMANENT[code]}{said}")
    if code in _TRANSIENT:
        raise Transient(f"{_TRANSIENT[code]}{said}")
    if code.startswith("spam_risk"):
        raise Permanent(f"TikTok refused the post as spam risk ({code}){said}")
    raise Permanent(f"TikTok refused the post: {code}{said}")


def envelope(response: httpx.Response) -> dict[str, Any]:
    """The ``data`` of a v2 answer, or the connector error its ``error.code`` means."""
    status = response.status_code
    try:
        body = json.loads(response.content)
    except ValueError:
        body = None
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict) and isinstance(error.get("code"), str):
        code = error["code"]
        if code == "ok" and 200 <= status < 300:
            data = body.get("data") if isinstance(body, dict) else None
            return data if isinstance(data, dict) else {}
        if code != "ok":
            message = error.get("message") if isinstance(error.get("message"), str) else ""
            raise_for_code(code, message, error.get("log_id"))
    raise_for_status(status, response.text[:200])


def raise_for_status(status: int, text: str = "") -> NoReturn:
    """For answers without a usable ``error.code``: classify by status alone."""
    said = f": {text.strip()}" if text.strip() else ""
    if status == 429:
        raise RateLimited(f"TikTok answered 429 Too Many Requests{said}")
    if status == 401:
        raise TokenInvalid(f"TikTok answered 401 Unauthorized{said}")
    if status >= 500:
        raise Transient(f"TikTok answered {status}{said}")
    raise Permanent(f"TikTok answered {status}{said}")


def network_error(what: str, exc: Exception) -> ConnectorError:
    if isinstance(exc, httpx.TimeoutException):
        return Transient(f"TikTok did not answer {what} in time")
    text = str(exc) or type(exc).__name__
    return Transient(f"could not reach TikTok for {what}: {text}")
