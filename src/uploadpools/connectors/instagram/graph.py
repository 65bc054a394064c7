"""Calling the Instagram Graph API and reading its errors by body, not by status.

Error envelope (all errors are HTTP 400 unless the server broke)::

    {"error": {"message", "type": "OAuthException", "code", "error_subcode",
               "is_transient", "error_user_title", "error_user_msg", "fbtrace_id"}}

The token endpoint of the login host (``api.instagram.com/oauth/access_token``) answers
in the older Instagram shape ``{"error_type", "code", "error_message"}``; both are read.

Classification (reference/platform_apis.md, Instagram "Limits & errors"):

=======================================  ==============================================
code / subcode                           raised as
=======================================  ==============================================
9 / 2207042 publishing cap reached       ``DailyLimitReached``
4 / 2207051 spam restriction             ``Permanent`` (do not hammer)
4, 17, 32, 613, 80002 throttling         ``RateLimited``
190 token invalid / expired / revoked    ``AuthExpired``
25 / 2207050 account restricted          ``Permanent``
352/2207026, 100/2207023, 36004/2207010  ``Permanent(reason="media_rejected")``
1/2207057                                ``Permanent(reason="media_rejected")``
9004 / 2207052 media not fetchable       ``Permanent`` naming UPLOADPOOLS_PUBLIC_URL
9007 / 2207027 not ready for publishing  ``NotReady`` (a ``Transient``: keep polling)
1, 2, ``is_transient``, -1, -2, 24, 5xx  ``Transient``
anything else                            ``Permanent``
=======================================  ==============================================
"""

from __future__ import annotations

import json
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

__all__ = ["NotReady", "graph_error", "graph_request"]

RATE_LIMIT_CODES = frozenset({4, 17, 32, 613, 80002})
TOKEN_CODES = frozenset({190})
TRANSIENT_CODES = frozenset({1, 2, -1, -2, 24})
# Subcodes that mean the item (video, caption, cover, thumbnail) must change.
MEDIA_SUBCODES = frozenset({2207026, 2207023, 2207010, 2207057})
PUBLISH_CAP_SUBCODE = 2207042
SPAM_SUBCODE = 2207051
NOT_FETCHABLE_SUBCODE = 2207052
NOT_READY_SUBCODE = 2207027


class NotReady(Transient):
    """media_publish before the container finished (9007 / 2207027): poll again."""


def _int(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            return None
    return None


def graph_error(status: int, body: object, what: str) -> ConnectorError:
    """The connector error for a failed Graph answer while ``what`` ("creating the reel")."""
    err = body.get("error") if isinstance(body, dict) else None
    if isinstance(err, dict):
        code = _int(err.get("code"))
        sub = _int(err.get("error_subcode"))
        said = str(err.get("error_user_msg") or err.get("message") or "").strip()
        transient_flag = err.get("is_transient") is True
    elif isinstance(body, dict) and "error_type" in body:
        code = _int(body.get("code"))
        sub = None
        said = str(body.get("error_message") or body.get("error_type") or "").strip()
        transient_flag = False
    else:
        code = sub = None
        said = ""
        transient_flag = False
    tag = f" (code {code}" + (f", subcode {sub})" if sub is not None else ")") if code else ""
    detail = f"Instagram error while {what}: {said or f'HTTP {status}'}{tag}"

    if code == 9 and sub == PUBLISH_CAP_SUBCODE:
        return DailyLimitReached(
            f"Instagram's publishing limit for this account is reached (24 h rolling): {said}"
        )
    if sub == SPAM_SUBCODE:
        return Permanent(detail)
    if code in RATE_LIMIT_CODES:
        return RateLimited(detail)
    if code in TOKEN_CODES:
        return AuthExpired(f"Instagram no longer accepts the account's token: {said}{tag}")
    if sub == NOT_READY_SUBCODE:
        return NotReady(detail)
    if sub in MEDIA_SUBCODES:
        return Permanent(detail, reason="media_rejected")
    if sub == NOT_FETCHABLE_SUBCODE:
        return Permanent(
            f"{detail}. Instagram downloads the video from this server: "
            "UPLOADPOOLS_PUBLIC_URL must be reachable from the internet"
        )
    if transient_flag or code in TRANSIENT_CODES or status >= 500:
        return Transient(detail)
    if status == 429:
        return RateLimited(detail)
    return Permanent(detail)


async def graph_request(
    http: httpx.AsyncClient,
    method: str,
    url: str,
    *,
    what: str,
    params: dict[str, Any] | None = None,
    data: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One Graph call: the JSON object answered, or the mapped connector error.

    Tokens travel in ``params``/``data``; neither the URL nor the exception text is put
    into an error detail, so no token reaches a log or a skip detail.
    """
    try:
        response = await http.request(method, url, params=params, data=data)
    except httpx.TimeoutException:
        raise Transient(f"Instagram did not answer in time while {what}") from None
    except httpx.HTTPError as exc:
        raise Transient(f"could not reach Instagram while {what} ({type(exc).__name__})") from None
    try:
        body: object = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        body = None
    if response.status_code >= 400 or (isinstance(body, dict) and "error" in body):
        raise graph_error(response.status_code, body, what)
    if not isinstance(body, dict):
        if response.status_code >= 500:
            raise Transient(f"Instagram answered {response.status_code} while {what}")
        raise Transient(f"Instagram answered something that is not JSON while {what}")
    return body
