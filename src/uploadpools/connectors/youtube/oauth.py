"""Google OAuth 2.0 for YouTube: authorization code with PKCE (S256), offline access.

``access_type=offline`` and ``prompt=consent`` make Google return a refresh token on
every consent (also when the user connected before). Google does not rotate refresh
tokens; a refused refresh is ``invalid_grant`` (revoked, unused for six months, or the
7-day limit of apps whose consent screen is in "Testing").
"""

from __future__ import annotations

from typing import ClassVar
from urllib.parse import urlencode

import httpx

from uploadpools.config import Settings
from uploadpools.connectors.base import AuthExpired, Permanent, Transient
from uploadpools.connectors.oauth import Identity, TokenSet
from uploadpools.connectors.oauth_session import expires_in
from uploadpools.connectors.youtube.errors import google_error
from uploadpools.kit.clock import Clock, SystemClock

SCOPE_UPLOAD = "https://www.googleapis.com/auth/youtube.upload"
SCOPE_READONLY = "https://www.googleapis.com/auth/youtube.readonly"


class YouTubeOAuth:
    platform: ClassVar[str] = "youtube"
    uses_pkce: ClassVar[bool] = True
    scopes: ClassVar[tuple[str, ...]] = (SCOPE_UPLOAD, SCOPE_READONLY)
    settings_names: ClassVar[tuple[str, ...]] = (
        "UPLOADPOOLS_YOUTUBE_CLIENT_ID",
        "UPLOADPOOLS_YOUTUBE_CLIENT_SECRET",
    )

    def __init__(self, settings: Settings, clock: Clock | None = None) -> None:
        self.settings = settings
        self.clock = clock or SystemClock()

    def configured(self) -> bool:
        s = self.settings
        return bool(s.youtube_client_id and s.youtube_client_secret)

    def _client(self) -> tuple[str, str]:
        s = self.settings
        if not (s.youtube_client_id and s.youtube_client_secret):
            raise Permanent("YouTube is not configured on this server (no client id/secret)")
        return s.youtube_client_id, s.youtube_client_secret.get_secret_value()

    def authorize_url(self, *, state: str, redirect_uri: str, code_challenge: str | None) -> str:
        client_id, _ = self._client()
        params = {
            "client_id": client_id,
            "redirect_uri": redirect_uri,
            "response_type": "code",
            "scope": " ".join(self.scopes),
            "access_type": "offline",
            "prompt": "consent",
            "include_granted_scopes": "true",
            "state": state,
        }
        if code_challenge is not None:
            params |= {"code_challenge": code_challenge, "code_challenge_method": "S256"}
        return f"{self.settings.google_auth_url}?{urlencode(params)}"

    async def _token(self, http: httpx.AsyncClient, form: dict[str, str], doing: str) -> TokenSet:
        client_id, secret = self._client()
        try:
            r = await http.post(
                self.settings.google_token_url,
                data={**form, "client_id": client_id, "client_secret": secret},
                headers={"Accept": "application/json"},
            )
        except httpx.HTTPError as exc:
            raise Transient(f"YouTube {doing}: {type(exc).__name__} talking to Google")
        if r.status_code != 200:
            raise google_error(r, doing)
        try:
            body = r.json()
            access = str(body["access_token"])
        except (ValueError, KeyError, TypeError):
            raise Transient(f"YouTube {doing}: Google's answer had no access_token")
        return TokenSet(
            access_token=access,
            refresh_token=body.get("refresh_token"),
            expires_at=expires_in(self.clock.now(), body.get("expires_in")),
            scope=body.get("scope"),
        )

    async def exchange_code(
        self, http: httpx.AsyncClient, *, code: str, redirect_uri: str, code_verifier: str | None
    ) -> TokenSet:
        form = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri}
        if code_verifier is not None:
            form["code_verifier"] = code_verifier
        return await self._token(http, form, "code exchange")

    async def refresh(self, http: httpx.AsyncClient, tokens: TokenSet) -> TokenSet:
        if not tokens.refresh_token:
            raise AuthExpired("YouTube: no refresh token stored; reconnect the account")
        form = {"grant_type": "refresh_token", "refresh_token": tokens.refresh_token}
        try:
            return await self._token(http, form, "token refresh")
        except Permanent as exc:
            # A refresh that Google refuses for any non-transient reason cannot post.
            raise AuthExpired(exc.detail)

    async def identify(self, http: httpx.AsyncClient, tokens: TokenSet) -> Identity:
        try:
            r = await http.get(
                f"{self.settings.youtube_api_base}/channels",
                params={"part": "id,snippet", "mine": "true"},
                headers={"Authorization": f"Bearer {tokens.access_token}"},
            )
        except httpx.HTTPError as exc:
            raise Transient(f"YouTube channel lookup: {type(exc).__name__}")
        if r.status_code != 200:
            raise google_error(r, "channel lookup")
        items = r.json().get("items") or []
        if not items:
            raise Permanent(
                "this Google account has no YouTube channel: create one on youtube.com, "
                "then connect again"
            )
        ch = items[0]
        title = (ch.get("snippet") or {}).get("title") or ch["id"]
        return Identity(remote_id=str(ch["id"]), name=str(title))
