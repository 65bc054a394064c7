"""Download a user-supplied URL straight into storage, safely.

Safety rails, all enforced here rather than left to the HTTP client:

* every URL, including each redirect hop, goes through
  ``netguard.resolve_and_check`` before a connection is made (redirects are
  followed manually, at most ``MAX_REDIRECTS``);
* the size limit is enforced twice: up front from ``Content-Length`` and
  while streaming (so a missing or lying header does not help), with the
  decoded body counted, which also caps compression bombs;
* one overall deadline covers DNS, connecting, redirects and the whole body,
  so a server trickling bytes cannot hold a worker forever;
* the body is streamed into ``Storage.put_stream``, which leaves nothing
  behind when anything fails.

Messages in ``FetchFailed`` are meant for the person who supplied the URL; the
URL is shown without credentials or query string, which often hold tokens.
"""

from __future__ import annotations

from collections.abc import Sequence

import anyio
import httpx

from uploadpools.kit.netguard import DestinationRefused, Network, resolve_and_check
from uploadpools.media.storage import MediaTooLarge, Storage, StoredObject, human_size

__all__ = ["MAX_REDIRECTS", "FetchFailed", "fetch_to_storage"]

MAX_REDIRECTS = 5


class FetchFailed(Exception):
    """The URL could not be fetched; ``reason`` is a human-readable sentence."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _display_url(url: httpx.URL | str) -> str:
    try:
        parsed = httpx.URL(str(url))
    except httpx.InvalidURL:
        return "the given URL"
    port = f":{parsed.port}" if parsed.port is not None else ""
    return f"{parsed.scheme}://{parsed.host}{port}{parsed.path}"


def _content_length(response: httpx.Response) -> int | None:
    raw = response.headers.get("content-length")
    if raw is None:
        return None
    try:
        value = int(raw)
    except ValueError:
        return None
    return value if value >= 0 else None


async def fetch_to_storage(
    client: httpx.AsyncClient,
    url: str,
    storage: Storage,
    key: str,
    *,
    max_bytes: int,
    timeout_s: float,
    allowed_networks: Sequence[Network],
) -> StoredObject:
    """GET ``url`` and store the body under ``key``; raise ``FetchFailed`` on any problem."""
    try:
        with anyio.fail_after(timeout_s):
            return await _fetch(client, url, storage, key, max_bytes, allowed_networks)
    except TimeoutError:
        raise FetchFailed(
            f"downloading {_display_url(url)} timed out after {timeout_s:g} s"
        ) from None


async def _fetch(
    client: httpx.AsyncClient,
    url: str,
    storage: Storage,
    key: str,
    max_bytes: int,
    allowed_networks: Sequence[Network],
) -> StoredObject:
    try:
        request = client.build_request("GET", url)
    except (httpx.InvalidURL, httpx.UnsupportedProtocol, TypeError) as exc:
        raise FetchFailed(f"{_display_url(url)} is not a valid URL: {exc}") from None

    for _hop in range(MAX_REDIRECTS + 1):
        shown = _display_url(request.url)
        try:
            await resolve_and_check(str(request.url), allowed_networks)
        except DestinationRefused as exc:
            raise FetchFailed(f"refusing to fetch {shown}: {exc}") from None

        try:
            response = await client.send(request, stream=True, follow_redirects=False)
        except httpx.HTTPError as exc:
            raise FetchFailed(f"could not fetch {shown}: {_describe(exc)}") from None

        try:
            if response.next_request is not None:
                request = response.next_request
                continue
            if not response.is_success:
                phrase = f" {response.reason_phrase}" if response.reason_phrase else ""
                raise FetchFailed(f"HTTP {response.status_code}{phrase} from {shown}")
            declared = _content_length(response)
            if declared is not None and declared > max_bytes:
                raise FetchFailed(
                    f"{shown} is {human_size(declared)}, larger than the limit of "
                    f"{human_size(max_bytes)} ({max_bytes} bytes)"
                )
            try:
                return await storage.put_stream(key, response.aiter_bytes(), max_bytes=max_bytes)
            except MediaTooLarge as exc:
                raise FetchFailed(
                    f"{shown} is larger than the limit of {human_size(exc.limit)} "
                    f"({exc.limit} bytes)"
                ) from None
            except httpx.HTTPError as exc:
                raise FetchFailed(
                    f"downloading {shown} failed part-way: {_describe(exc)}"
                ) from None
        finally:
            # Shielded so a timeout cannot skip releasing the connection.
            with anyio.CancelScope(shield=True):
                await response.aclose()

    raise FetchFailed(
        f"too many redirects (more than {MAX_REDIRECTS}) starting at {_display_url(url)}"
    )


def _describe(exc: httpx.HTTPError) -> str:
    if isinstance(exc, httpx.TimeoutException):
        return "the server did not respond in time"
    if isinstance(exc, httpx.ConnectError):
        return f"could not connect ({exc})" if str(exc) else "could not connect"
    text = str(exc)
    return text if text else type(exc).__name__
