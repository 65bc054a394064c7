"""``GET /media/{media_id}``: the video behind a signed media URL (see ``media.urls``).

There is no API key here: the signature is the credential, checked before anything
else, so an unsigned request learns nothing, not even whether the media exists. The
body is streamed from storage (never read whole), with single-range support because
platforms that pull videos resume and probe with ``Range`` requests.
"""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import APIRouter, Header, Request
from starlette.responses import Response, StreamingResponse

from uploadpools.deps import StateDep
from uploadpools.exceptions import Forbidden, NotFound
from uploadpools.kit.problem import ProblemResponse, problem_body
from uploadpools.media.storage import ObjectNotFound
from uploadpools.media.urls import verify_media_signature
from uploadpools.models import Media

router = APIRouter()

_RANGE_RE = re.compile(r"bytes\s*=\s*([0-9]*)\s*-\s*([0-9]*)", re.IGNORECASE)
_UNSATISFIABLE = "unsatisfiable"


def parse_range(header: str, size: int) -> tuple[int, int] | str | None:
    """One ``bytes=`` range as inclusive ``(first, last)``, ``"unsatisfiable"``, or None.

    None means "serve the whole file": RFC 9110 lets a server ignore a Range header it
    does not support (several ranges) or cannot parse.
    """
    m = _RANGE_RE.fullmatch(header.strip())
    if m is None:
        return None
    first_s, last_s = m.groups()
    if not first_s:
        if not last_s:
            return None
        suffix = int(last_s)
        if suffix == 0 or size == 0:
            return _UNSATISFIABLE
        return max(0, size - suffix), size - 1
    first = int(first_s)
    if last_s and int(last_s) < first:
        return None
    last = int(last_s) if last_s else size - 1
    if first >= size:
        return _UNSATISFIABLE
    return first, min(last, size - 1)


def _etag_matches(header: str, etag: str) -> bool:
    candidates = [c.strip().removeprefix("W/") for c in header.split(",")]
    return "*" in candidates or etag in candidates


@router.api_route("/media/{media_id}", methods=["GET", "HEAD"])
async def get_media(
    media_id: str,
    request: Request,
    state: StateDep,
    exp: str = "",
    sig: str = "",
    range_header: Annotated[str | None, Header(alias="Range")] = None,
    if_range: Annotated[str | None, Header(alias="If-Range")] = None,
    if_none_match: Annotated[str | None, Header(alias="If-None-Match")] = None,
) -> Response:
    if not verify_media_signature(state.settings, media_id, exp, sig, state.clock.now()):
        raise Forbidden("this media link is invalid or has expired")

    async with state.maker() as session:
        media = await session.get(Media, media_id)
    if media is None or media.state != "ready" or not media.storage_key:
        raise NotFound("no such media")
    key = media.storage_key
    try:
        size = await state.storage.size(key)
    except ObjectNotFound:
        raise NotFound("no such media") from None

    etag = f'"{media.sha256}"'
    headers = {
        "Accept-Ranges": "bytes",
        "ETag": etag,
        # The URL carries a credential: keep shared caches out, let the client cache.
        "Cache-Control": "private, max-age=3600",
        "X-Content-Type-Options": "nosniff",
    }
    content_type = media.content_type or "application/octet-stream"

    if if_none_match is not None and _etag_matches(if_none_match, etag):
        return Response(status_code=304, headers=headers)

    status = 200
    first, last = 0, size - 1
    if range_header is not None and (if_range is None or if_range.strip() == etag):
        parsed = parse_range(range_header, size)
        if parsed == _UNSATISFIABLE:
            return ProblemResponse(
                problem_body(
                    416,
                    "Range not satisfiable",
                    f"the requested range lies outside the file ({size} bytes)",
                    "range-not-satisfiable",
                ),
                status_code=416,
                headers={**headers, "Content-Range": f"bytes */{size}"},
            )
        if isinstance(parsed, tuple):
            status = 206
            first, last = parsed
            headers["Content-Range"] = f"bytes {first}-{last}/{size}"

    length = last - first + 1 if size else 0
    headers["Content-Length"] = str(length)
    if request.method == "HEAD" or length == 0:
        return Response(status_code=status, headers=headers, media_type=content_type)
    return StreamingResponse(
        state.storage.open_read(key, start=first, end=last + 1),
        status_code=status,
        headers=headers,
        media_type=content_type,
    )
