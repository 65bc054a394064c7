"""OAuth credentials as an account stores them, and one publish's use of them.

An OAuth account's (encrypted) config is ``tokens_to_config(tokens, remote_id)``.
Connectors wrap their platform calls in an ``OAuthSession``: it refreshes the access
token when it expires within ``oauth_refresh_margin_s`` and once more when the
platform answers with an auth error, saves the new token set (rotated refresh token
included) through ``JobStore.save_config`` — one UPDATE of the account, encrypted — and
lets ``AuthExpired`` through when the platform refuses the refresh, so the engine marks
the account ``needs_reauth`` and tells the workspace.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel, ConfigDict

from uploadpools.connectors.base import AuthExpired, JobStore
from uploadpools.connectors.oauth import OAuthProvider, TokenSet

T = TypeVar("T")


class OAuthConfig(BaseModel):
    """The stored config of an account connected through OAuth."""

    model_config = ConfigDict(extra="allow")

    access_token: str
    refresh_token: str | None = None
    expires_at: datetime | None = None
    refresh_expires_at: datetime | None = None
    scope: str | None = None
    extra: dict[str, Any] = {}
    remote_id: str | None = None


def tokens_to_config(tokens: TokenSet, remote_id: str | None = None) -> dict[str, Any]:
    config = {
        "access_token": tokens.access_token,
        "refresh_token": tokens.refresh_token,
        "expires_at": tokens.expires_at.isoformat() if tokens.expires_at else None,
        "refresh_expires_at": (
            tokens.refresh_expires_at.isoformat() if tokens.refresh_expires_at else None
        ),
        "scope": tokens.scope,
        # JSON-safe: instants as RFC 3339 (Instagram keeps when its token was issued).
        "extra": {
            k: v.isoformat() if isinstance(v, datetime) else v for k, v in tokens.extra.items()
        },
    }
    if remote_id is not None:
        config["remote_id"] = remote_id
    return config


def flatten_extra(data: Any) -> Any:
    """A stored token set (``tokens_to_config``) as a connector's config model reads it:
    the platform specifics in ``extra`` lifted beside the tokens (top-level keys win)."""
    if isinstance(data, dict) and isinstance(data.get("extra"), dict):
        merged = {k: v for k, v in data.items() if k != "extra"}
        for k, v in data["extra"].items():
            merged.setdefault(k, v)
        return merged
    return data


def tokens_from_config(config: dict[str, Any]) -> TokenSet:
    c = OAuthConfig.model_validate(config)
    return TokenSet(
        access_token=c.access_token,
        refresh_token=c.refresh_token,
        expires_at=c.expires_at,
        refresh_expires_at=c.refresh_expires_at,
        scope=c.scope,
        extra=dict(c.extra),
    )


def expires_in(now: datetime, seconds: Any) -> datetime | None:
    """An ``expires_in`` answer as an instant (None when the platform did not say)."""
    try:
        return now + timedelta(seconds=float(seconds))
    except (TypeError, ValueError):
        return None


class OAuthSession:
    """The access token of one publish: refreshed before expiry and once on an auth error."""

    def __init__(
        self,
        provider: OAuthProvider,
        http: httpx.AsyncClient,
        config: dict[str, Any],
        *,
        now: Callable[[], datetime],
        margin_s: float,
        jobs: JobStore | None,
    ) -> None:
        self.provider = provider
        self.http = http
        self.config = dict(config)
        self.tokens = tokens_from_config(config)
        self._now = now
        self._margin = timedelta(seconds=margin_s)
        # None during reconcile: a refreshed token is used but not kept (it is cheap to redo).
        self._jobs = jobs
        self._refreshed = False

    async def access_token(self) -> str:
        exp = self.tokens.expires_at
        if exp is not None and exp - self._margin <= self._now() and not self._refreshed:
            await self.refresh()
        return self.tokens.access_token

    async def refresh(self) -> str:
        """New tokens now; ``AuthExpired`` (from the provider) when the platform refuses."""
        if not self.tokens.refresh_token:
            raise AuthExpired("the access token expired and there is no refresh token")
        try:
            new = await self.provider.refresh(self.http, self.tokens)
        except AuthExpired:
            # Another worker may have rotated the refresh token under us (platforms that
            # rotate invalidate the old one): take the stored tokens if they moved on.
            stored = await self._stored()
            if stored is None or stored.refresh_token in (None, self.tokens.refresh_token):
                raise
            self.tokens = stored
            self._refreshed = True
            if stored.expires_at is None or stored.expires_at - self._margin > self._now():
                return stored.access_token  # already fresh: nothing to save
            new = await self.provider.refresh(self.http, stored)
        if new.refresh_token is None:
            # Platforms that do not rotate (Google) answer without one: keep ours.
            new = TokenSet(
                access_token=new.access_token,
                refresh_token=self.tokens.refresh_token,
                expires_at=new.expires_at,
                refresh_expires_at=new.refresh_expires_at or self.tokens.refresh_expires_at,
                scope=new.scope or self.tokens.scope,
                extra={**self.tokens.extra, **new.extra},
            )
        self.tokens = new
        self._refreshed = True
        self.config = {**self.config, **tokens_to_config(new)}
        if self._jobs is not None:
            await self._jobs.save_config(self.config)
        return new.access_token

    async def _stored(self) -> TokenSet | None:
        load = getattr(self._jobs, "load_config", None)  # optional on a JobStore
        if load is None:
            return None
        config = await load()
        self.config = {**self.config, **config}
        return tokens_from_config(config)

    async def call(self, fn: Callable[[str], Awaitable[T]]) -> T:
        """``fn(access_token)``, replayed once with refreshed tokens after ``AuthExpired``."""
        token = await self.access_token()
        try:
            return await fn(token)
        except AuthExpired:
            if self._refreshed:
                raise
        return await fn(await self.refresh())
