"""The connector seam: one Protocol every platform and generic target implements.

Errors a connector raises (the only ones the engine understands)::

    ConnectorError                  root; `detail` is shown to the user as the skip detail
    ├── Transient(retry_after)      network error, 5xx, timeout: retried with backoff inside
    │   │                           the retry window, then skipped `platform_error`. Raising
    │   │                           it asserts that posting again is safe (nothing went out,
    │   │                           or the platform de-duplicates by the saved job id).
    │   └── RateLimited             the platform refused for its rate limit: skipped
    │       │                       `platform_rate_limited` with a warning, never retried
    │       └── DailyLimitReached   the platform's daily cap: skipped `platform_daily_limit`
    ├── AuthExpired                 credentials no longer work: account → needs_reauth,
    │                               skipped `auth_expired`, the workspace is told
    └── Permanent(reason)           bad media, policy: skipped at once with `reason`
                                    (`media_rejected` or `platform_error`)

No double posts: before the irreversible step a connector calls ``jobs.save({...})``
with the platform's job id (upload session, container id, publish id). After a crash
the engine calls ``reconcile`` with what was saved instead of publishing again; a
connector that cannot tell returns ``UNKNOWN`` and the delivery is skipped
`interrupted` with a warning that it may have been posted.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar, Literal, Protocol, runtime_checkable

import httpx
from pydantic import BaseModel


class ConnectorError(Exception):
    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class Transient(ConnectorError):
    def __init__(self, detail: str, *, retry_after: float | None = None) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


class RateLimited(Transient):
    pass


class DailyLimitReached(RateLimited):
    pass


class AuthExpired(ConnectorError):
    pass


class Permanent(ConnectorError):
    def __init__(
        self, detail: str, *, reason: Literal["media_rejected", "platform_error"] = "platform_error"
    ) -> None:
        super().__init__(detail)
        self.reason = reason


class LeaseLost(Exception):
    """The delivery's lease went to another worker: stop, record nothing."""


@dataclass(frozen=True, slots=True)
class MediaRef:
    id: str
    storage_key: str
    size: int
    sha256: str
    content_type: str
    duration_s: float
    width: int
    height: int
    # A signed, expiring URL under the public base URL, for pull-based platforms.
    url: str
    open: Callable[..., AsyncIterator[bytes]]


@dataclass(frozen=True, slots=True)
class PublishRequest:
    delivery_id: str
    attempt: int
    pool_id: str
    pool_name: str
    item_id: str
    title: str
    caption: str
    # This platform's entry of the item's `options`.
    options: dict[str, Any]
    media: MediaRef
    firing_id: str
    scheduled_for: datetime
    account_id: str
    account_name: str
    config: dict[str, Any]
    # What an earlier attempt saved with `jobs.save`, if anything.
    job: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class MediaConstraints:
    """What a platform accepts; checked when a video is added to a pool posting there.

    ``None`` means no rule. Containers are PyAV/FFmpeg demuxer names as the probe
    reports them (e.g. ``mov,mp4,m4a,3gp,3g2,mj2`` → write ``"mp4"``/``"mov"``), codecs are
    FFmpeg codec names (``h264``, ``hevc``, ``aac``).
    """

    containers: frozenset[str] | None = None
    video_codecs: frozenset[str] | None = None
    audio_codecs: frozenset[str] | None = None
    min_duration_s: float | None = None
    max_duration_s: float | None = None
    max_size: int | None = None
    min_width: int | None = None
    min_height: int | None = None
    # width / height
    min_aspect: float | None = None
    max_aspect: float | None = None
    max_caption_chars: int | None = None
    max_title_chars: int | None = None


@dataclass(frozen=True, slots=True)
class PublishResult:
    remote_id: str | None = None
    remote_url: str | None = None


class JobStore(Protocol):
    async def save(self, job: dict[str, Any]) -> None:
        """Persist the platform job id now (raises LeaseLost when fenced off)."""
        ...

    async def save_config(self, config: dict[str, Any]) -> None:
        """Persist refreshed credentials (rotated tokens) for the account."""
        ...

    # Optional (the engine's store has it): ``async def load_config() -> dict`` reads the
    # account's config as stored now, so a worker whose refresh token was rotated by
    # another worker meanwhile can continue with the new one (OAuthSession uses it).


UNKNOWN: Literal["unknown"] = "unknown"
Reconciled = PublishResult | None | Literal["unknown"]


@dataclass(frozen=True, slots=True)
class ConnectorContext:
    http: httpx.AsyncClient
    settings: Any
    clock: Any


@runtime_checkable
class Connector(Protocol):
    platform: ClassVar[str]
    config_model: ClassVar[type[BaseModel]]
    # None for generic targets (webhook, folder) that take any video.
    constraints: ClassVar[MediaConstraints | None]

    async def publish(self, request: PublishRequest, jobs: JobStore) -> PublishResult:
        """Post the video; raise one of the errors above when it does not go out."""
        ...

    async def reconcile(self, request: PublishRequest) -> Reconciled:
        """After a crash: the post if it happened, None if it surely did not, or UNKNOWN."""
        ...
