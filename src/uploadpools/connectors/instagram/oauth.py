"""Business Login for Instagram: consent, code → short-lived → long-lived token, refresh.

1. Consent: ``GET {auth}/oauth/authorize?client_id&redirect_uri&response_type=code
   &scope=instagram_business_basic,instagram_business_content_publish&state`` (no PKCE:
   Instagram does not document it; the shared flow's signed ``state`` guards the callback).
2. ``POST {auth}/oauth/access_token`` (form: client_id, client_secret,
   grant_type=authorization_code, redirect_uri, code) → a short-lived (1 h) token and the
   user id, documented as ``{"data": [{...}]}`` and seen flat; both are read.
3. ``GET {graph}/access_token?grant_type=ig_exchange_token&client_secret&access_token``
   → the long-lived token, ``expires_in`` ≈ 60 days.
4. Refresh: ``GET {graph}/refresh_access_token?grant_type=ig_refresh_token&access_token``
   for a token at least 24 h old and not expired; the answer replaces the token. There is
   no refresh token: an expired or revoked token can only be replaced by reconnecting.
5. Identity: ``GET {graph}/{version}/me?fields=user_id,username,account_type``.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, ClassVar
from urllib.parse import urlencode

import httpx

from uploadpools.config import Settings
from uploadpools.connectors.base import AuthExpired, Permanent, Transient
from uploadpools.connectors.instagram.graph import graph_request
from uploadpools.connectors.oauth import Identity, TokenSet
from uploadpools.kit.clock import Clock, SystemClock

__all__ = ["InstagramOAuth"]

PROFESSIONAL_ACCOUNT_TYPES = frozenset({"BUSINESS", "MEDIA_CREATOR"})


class InstagramOAuth:
    platform: ClassVar[str] = "instagram"
    uses_pkce: ClassVar[bool] = False
    scopes: ClassVar[tuple[str, ...]] = (
        "instagram_business_basic",
        "instagram_business_content_publish",
    )

    def __init__(self, settings: Settings, *, clock: Clock | None = None) -> None:
        self.settings = settings
        self.clock = clock or SystemClock()

    @property
    def _auth(self) -> str:
        return self.settings.instagram_auth_base.rstrip("/")

    @property
    def _graph(self) -> str:
        return self.settings.instagram_graph_base.rstrip("/")

    def _secret(self) -> str:
        secret = self.settings.instagram_client_secret
        if not self.settings.instagram_client_id or secret is None:
            raise Permanent(
                "Instagram is not configured on this server: set UPLOADPOOLS_INSTAGRAM_CLIENT_ID "
                "and UPLOADPOOLS_INSTAGRAM_CLIENT_SECRET"
            )
        return secret.get_secret_value()

    def configured(self) -> bool:
        secret = self.settings.instagram_client_secret
        return bool(self.settings.instagram_client_id and secret and secret.get_secret_value())

    def authorize_url(self, *, state: str, redirect_uri: str, code_challenge: str | None) -> str:
        query = urlencode(
            {
                "client_id": self.settings.instagram_client_id or "",
                "redirect_uri": redirect_uri,
                "response_type": "code",
                "scope": ",".join(self.scopes),
                "state": state,
            }
        )
        return f"{self._auth}/oauth/authorize?{query}"

    async def exchange_code(
        self, http: httpx.AsyncClient, *, code: str, redirect_uri: str, code_verifier: str | None
    ) -> TokenSet:
        secret = self._secret()
        # Instagram appends "#_" to the redirect; a pasted code may still carry it.
        code = code.removesuffix("#_")
        short = await graph_request(
            http,
            "POST",
            f"{self._auth}/oauth/access_token",
            what="exchanging the authorization code",
            data={
                "client_id": self.settings.instagram_client_id,
                "client_secret": secret,
                "grant_type": "authorization_code",
                "redirect_uri": redirect_uri,
                "code": code,
            },
        )
        entry: Any = short
        if isinstance(short.get("data"), list) and short["data"]:
            entry = short["data"][0]
        if not isinstance(entry, dict) or not entry.get("access_token"):
            raise Permanent("Instagram's token answer had no access token")
        permissions = entry.get("permissions")
        if isinstance(permissions, list):
            permissions = ",".join(str(p) for p in permissions)
        now = self.clock.now()
        long_lived = await graph_request(
            http,
            "GET",
            f"{self._graph}/access_token",
            what="exchanging for a long-lived token",
            params={
                "grant_type": "ig_exchange_token",
                "client_secret": secret,
                "access_token": entry["access_token"],
            },
        )
        tokens = self._token_set(long_lived, now, scope=permissions)
        user_id = entry.get("user_id")
        if user_id is not None:
            tokens.extra["user_id"] = str(user_id)
        return tokens

    async def refresh(self, http: httpx.AsyncClient, tokens: TokenSet) -> TokenSet:
        now = self.clock.now()
        if tokens.expires_at is not None and tokens.expires_at <= now:
            raise AuthExpired("the Instagram token has expired; reconnect the account")
        try:
            answer = await graph_request(
                http,
                "GET",
                f"{self._graph}/refresh_access_token",
                what="refreshing the token",
                params={"grant_type": "ig_refresh_token", "access_token": tokens.access_token},
            )
        except Permanent as exc:
            # A refused refresh (revoked app, changed password, token too old) is only
            # fixed by connecting again.
            raise AuthExpired(exc.detail) from None
        fresh = self._token_set(answer, now, scope=tokens.scope)
        fresh.extra.update({k: v for k, v in tokens.extra.items() if k != "issued_at"})
        return fresh

    async def identify(self, http: httpx.AsyncClient, tokens: TokenSet) -> Identity:
        me = await graph_request(
            http,
            "GET",
            f"{self._graph}/{self.settings.instagram_graph_version}/me",
            what="reading the connected account",
            params={"fields": "user_id,username,account_type", "access_token": tokens.access_token},
        )
        user_id = me.get("user_id") or tokens.extra.get("user_id")
        if not user_id:
            raise Permanent("Instagram did not say which account the token belongs to")
        kind = me.get("account_type")
        if kind is not None and kind not in PROFESSIONAL_ACCOUNT_TYPES:
            raise Permanent(
                "only Instagram professional accounts (business or creator) can publish "
                "through the API; switch the account to professional in the Instagram app"
            )
        # The professional account id (not the login's app-scoped id) is what media are
        # created on; recorded in the token set too, so a TokenSet stored as is suffices.
        tokens.extra["user_id"] = str(user_id)
        tokens.extra["username"] = me.get("username")
        return Identity(remote_id=str(user_id), name=str(me.get("username") or user_id))

    def _token_set(self, answer: dict[str, Any], now: Any, *, scope: str | None) -> TokenSet:
        token = answer.get("access_token")
        expires_in = answer.get("expires_in")
        if not isinstance(token, str) or not token:
            raise Transient("Instagram's token answer had no access token")
        if isinstance(expires_in, bool) or not isinstance(expires_in, int | float):
            expires_in = 60 * 24 * 3600
        return TokenSet(
            access_token=token,
            expires_at=now + timedelta(seconds=float(expires_in)),
            scope=scope,
            extra={"issued_at": now},
        )
