"""The `webhook` target: POST the item and a signed media URL to the account's URL.

The request (API.md, "Outbound: the `webhook` account target")::

    POST <config.url>
    Content-Type: application/json
    webhook-id: <delivery id>            the same on every attempt of one delivery
    webhook-timestamp: <unix seconds>
    webhook-signature: v1,<base64>       only when the account has a secret

    {"event": "item.dispatch",
     "pool": {"id", "name"},
     "item": {"id", "title", "caption", "options"},
     "media": {"url", "content_type", "size", "sha256"},
     "firing": {"id", "scheduled_for"}}

``item.options`` is this platform's entry of the item's options (``options.webhook``).

Signing follows Standard Webhooks (https://www.standardwebhooks.com): the signature is
HMAC-SHA256 over ``"{webhook-id}.{webhook-timestamp}.{body}"``. The key is read from the
account's secret exactly as the reference libraries read it, so a receiver verifies with
``standardwebhooks.Webhook(<the same secret string>).verify(body, headers)``:

* ``whsec_<base64>``: the key is the base64-decoded part (the spec's format);
* without the prefix: the reference libraries still read the string as base64 (the
  prefix is optional to them), and so do we;
* a string that is not decodable base64 (the libraries refuse it, e.g. a length of
  4n+1 letters and digits): its raw UTF-8 bytes are the key, which is what
  ``whsec_`` + base64(secret) means. Such a receiver verifies with
  ``Webhook(secret.encode())`` or ``Webhook("whsec_" + base64(secret))``.

Outcomes: 2xx is posted (a JSON object body's ``id`` and ``url`` become the remote id
and URL); 429 is the receiver's rate limit (``RateLimited``, honouring ``Retry-After``);
5xx, a timeout or a connection error is ``Transient``; a redirect is ``Permanent``
(redirects are not followed: a redirect could lead past the address check, and a 303
would silently turn the POST into a GET); any other status is ``Permanent``.

A timeout after the request left is retried although the receiver may have acted on
it: a plain HTTP endpoint cannot be asked afterwards. That is why ``webhook-id`` is the
delivery id on every attempt: receivers de-duplicate on it, as Standard Webhooks asks.
"""

from __future__ import annotations

import base64
import binascii
import json
import socket
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, ClassVar

import anyio
import httpx
from pydantic import BaseModel, ValidationError
from standardwebhooks import Webhook
from standardwebhooks.webhooks import EmptyWebhookSecretError

from uploadpools.connectors.base import (
    UNKNOWN,
    ConnectorContext,
    JobStore,
    MediaConstraints,
    Permanent,
    PublishRequest,
    PublishResult,
    RateLimited,
    Reconciled,
    Transient,
)
from uploadpools.connectors.webhook import WebhookConfig
from uploadpools.kit.netguard import DestinationRefused, resolve_and_check

__all__ = ["WebhookConnector", "signing_webhook"]

SECRET_PREFIX = "whsec_"
# Enough for {"id", "url"} and an error message; a receiver cannot make us buffer more.
_MAX_BODY = 64 * 1024


def signing_webhook(secret: str) -> Webhook:
    """The Standard Webhooks signer for an account secret (rules in the module docstring)."""
    try:
        return Webhook(secret)
    except (binascii.Error, EmptyWebhookSecretError, ValueError):
        return Webhook(SECRET_PREFIX + base64.b64encode(secret.encode()).decode())


def _iso(dt: datetime) -> str:
    return dt.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _display_url(url: str) -> str:
    """The URL without query or credentials (they often carry tokens)."""
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL:
        return "the webhook URL"
    port = f":{parsed.port}" if parsed.port is not None else ""
    return f"{parsed.scheme}://{parsed.host}{port}{parsed.path}"


class WebhookConnector:
    platform: ClassVar[str] = "webhook"
    config_model: ClassVar[type[BaseModel]] = WebhookConfig
    constraints: ClassVar[MediaConstraints | None] = None

    #: Whole-exchange deadline in seconds (connect, send, answer).
    timeout_s: ClassVar[float] = 15.0

    def __init__(self, ctx: ConnectorContext, *, timeout_s: float | None = None) -> None:
        self._ctx = ctx
        self._timeout = timeout_s if timeout_s is not None else self.timeout_s

    def payload(self, request: PublishRequest) -> dict[str, Any]:
        return {
            "event": "item.dispatch",
            "pool": {"id": request.pool_id, "name": request.pool_name},
            "item": {
                "id": request.item_id,
                "title": request.title,
                "caption": request.caption,
                "options": request.options,
            },
            "media": {
                "url": request.media.url,
                "content_type": request.media.content_type,
                "size": request.media.size,
                "sha256": request.media.sha256,
            },
            "firing": {"id": request.firing_id, "scheduled_for": _iso(request.scheduled_for)},
        }

    async def publish(self, request: PublishRequest, jobs: JobStore) -> PublishResult:
        try:
            config = WebhookConfig.model_validate(request.config)
        except ValidationError as exc:
            raise Permanent(f"the webhook account's settings are invalid: {exc}") from None
        url = str(config.url)
        shown = _display_url(url)
        try:
            await resolve_and_check(url, self._ctx.settings.allowed_networks)
        except DestinationRefused as exc:
            # A resolver that is down for a moment is no reason to give up the post.
            cause = exc.__context__
            if isinstance(cause, socket.gaierror) and cause.errno == socket.EAI_AGAIN:
                raise Transient(f"could not resolve the host of {shown} for now") from None
            raise Permanent(f"refusing to call {shown}: {exc}") from None

        body = json.dumps(self.payload(request), separators=(",", ":"), ensure_ascii=False)
        body_bytes = body.encode()
        now = self._ctx.clock.now()
        msg_id = request.delivery_id
        headers = {
            "content-type": "application/json",
            "user-agent": "uploadpools-webhook/1",
            "webhook-id": msg_id,
            "webhook-timestamp": str(int(now.timestamp())),
        }
        if config.secret:
            headers["webhook-signature"] = signing_webhook(config.secret).sign(
                msg_id, now, body_bytes
            )

        await jobs.save({"sent_at": _iso(now), "webhook_id": msg_id})
        try:
            with anyio.fail_after(self._timeout):
                status, answer_headers, answer = await self._post(url, headers, body_bytes)
        except (TimeoutError, httpx.TimeoutException):
            raise Transient(f"{shown} did not answer within {self._timeout:g} s") from None
        except httpx.HTTPError as exc:
            text = str(exc) or type(exc).__name__
            raise Transient(f"could not reach {shown}: {text}") from None
        return self._outcome(shown, status, answer_headers, answer)

    async def _post(
        self, url: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, httpx.Headers, bytes]:
        request = self._ctx.http.build_request(
            "POST", url, content=body, headers=headers, timeout=httpx.Timeout(self._timeout)
        )
        response = await self._ctx.http.send(request, stream=True, follow_redirects=False)
        try:
            chunks: list[bytes] = []
            size = 0
            async for chunk in response.aiter_bytes():
                chunks.append(chunk)
                size += len(chunk)
                if size >= _MAX_BODY:
                    break
            return response.status_code, response.headers, b"".join(chunks)[:_MAX_BODY]
        finally:
            with anyio.CancelScope(shield=True):
                await response.aclose()

    def _outcome(
        self, shown: str, status: int, headers: httpx.Headers, body: bytes
    ) -> PublishResult:
        if 200 <= status < 300:
            return _result(body)
        text = body[:200].decode("utf-8", "replace")
        said = f": {text}" if text.strip() else ""
        if status == 429:
            raise RateLimited(
                f"{shown} answered 429 Too Many Requests{said}",
                retry_after=self._retry_after(headers),
            )
        if status >= 500:
            raise Transient(
                f"{shown} answered {status}{said}", retry_after=self._retry_after(headers)
            )
        if 300 <= status < 400:
            where = headers.get("location")
            to = f" to {_display_url(where)}" if where else ""
            raise Permanent(
                f"{shown} answered {status}, a redirect{to}; redirects are not followed, "
                "so give the final URL"
            )
        raise Permanent(f"{shown} answered {status}{said}")

    def _retry_after(self, headers: httpx.Headers) -> float | None:
        value = headers.get("retry-after")
        if not value:
            return None
        value = value.strip()
        if value.isdigit():
            return float(value)
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return max(0.0, (when - self._ctx.clock.now()).total_seconds())

    async def reconcile(self, request: PublishRequest) -> Reconciled:
        # jobs.save comes right before the POST: nothing saved means nothing was sent.
        if not request.job:
            return None
        return UNKNOWN


def _result(body: bytes) -> PublishResult:
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return PublishResult()
    if not isinstance(data, dict):
        return PublishResult()
    remote_id = data.get("id")
    remote_url = data.get("url")
    if isinstance(remote_id, bool) or not isinstance(remote_id, str | int):
        remote_id = None
    return PublishResult(
        remote_id=str(remote_id) if remote_id not in (None, "") else None,
        remote_url=remote_url if isinstance(remote_url, str) and remote_url else None,
    )
