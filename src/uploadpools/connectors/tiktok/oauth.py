"""TikTok's OAuth 2 provider for the shared connect flow (Login Kit, v2 endpoints).

* consent: ``{auth_base}/v2/auth/authorize/`` with ``client_key`` (TikTok's name for the
  client id), comma-separated scopes and a PKCE challenge;
* tokens: ``POST {api_base}/v2/oauth/token/``, form-encoded, for both the code exchange
  and refreshes. Answers carry ``open_id``, ``expires_in`` and ``refresh_expires_in``;
  refresh tokens rotate (the old one stops working), so a refresh's answer must be saved;
* identity: ``GET {api_base}/v2/user/info/`` (display name; the handle would need the
  ``user.info.profile`` scope, which posting does not).

The PKCE challenge: TikTok's Login Kit docs ask for the hex SHA-256 of the verifier
where RFC 7636 says base64url. The shared flow hands us the RFC form; both encode the
same digest, so it is re-encoded here as ``tiktok_pkce_challenge`` says.
"""

from __future__ import annotations

import base64
import json
from datetime import timedelta
from typing import Any, ClassVar
from urllib.parse import urlencode

import httpx

from uploadpools.config import Settings
from uploadpools.connectors.base import AuthExpired, Permanent, Transient
from uploadpools.connectors.oauth import Identity, TokenSet
from uploadpools.connectors.tiktok.api import envelope, network_error
from uploadpools.kit.clock import Clock, clock_for

__all__ = ["TikTokOAuth"]

PUBLISH_SCOPE = "video.publish"


def _hex_challenge(challenge: str) -> str:
    return base64.urlsafe_b64decode(challenge + "=" * (-len(challenge) % 4)).hex()


class TikTokOAuth:
    platform: ClassVar[str] = "tiktok"
    uses_pkce: ClassVar[bool] = True
    scopes: ClassVar[tuple[str, ...]] = ("user.info.basic", PUBLISH_SCOPE)

    def __init__(self, settings: Settings, *, clock: Clock | None = None) -> None:
        self.settings = settings
        self.clock = clock or clock_for(settings.clock_offset_file)

    @property
    def _api(self) -> str:
        return self.settings.tiktok_api_base.rstrip("/")

    def configured(self) -> bool:
        secret = self.settings.tiktok_client_secret
        return bool(self.settings.tiktok_client_key and secret and secret.get_secret_value())

    def authorize_url(self, *, state: str, redirect_uri: str, code_challenge: str | None) -> str:
        params = {
            "client_key": self.settings.tiktok_client_key or "",
            "response_type": "code",
            "scope": ",".join(self.scopes),
            "redirect_uri": redirect_uri,
            "state": state,
        }
        if code_challenge:
            if self.settings.tiktok_pkce_challenge == "hex":
                code_challenge = _hex_challenge(code_challenge)
            params["code_challenge"] = code_challenge
            params["code_challenge_method"] = "S256"
        return (
            f"{self.settings.tiktok_auth_base.rstrip('/')}/v2/auth/authorize/?{urlencode(params)}"
        )

    async def exchange_code(
        self, http: httpx.AsyncClient, *, code: str, redirect_uri: str, code_verifier: str | None
    ) -> TokenSet:
        form = {"code": code, "grant_type": "authorization_code", "redirect_uri": redirect_uri}
        if code_verifier:
            form["code_verifier"] = code_verifier
        answer, why = await self._token(http, form, "connecting the account")
        if answer is None:
            raise Permanent(f"TikTok refused the authorization code{why}; connect again")
        tokens = self._token_set(answer)
        granted = set((tokens.scope or "").replace(" ", ",").split(","))
        if tokens.scope is not None and PUBLISH_SCOPE not in granted:
            raise Permanent(
                "the TikTok account did not allow posting videos (video.publish); "
                "connect it again and keep that permission ticked"
            )
        return tokens

    async def refresh(self, http: httpx.AsyncClient, tokens: TokenSet) -> TokenSet:
        if not tokens.refresh_token:
            raise AuthExpired("the TikTok account has no refresh token; reconnect it")
        form = {"grant_type": "refresh_token", "refresh_token": tokens.refresh_token}
        answer, why = await self._token(http, form, "refreshing the access token")
        if answer is None:
            raise AuthExpired(f"TikTok refused to refresh the account's access{why}; reconnect it")
        fresh = self._token_set(answer)
        # Keep what a refresh answer may leave out.
        return TokenSet(
            access_token=fresh.access_token,
            refresh_token=fresh.refresh_token or tokens.refresh_token,
            expires_at=fresh.expires_at,
            refresh_expires_at=fresh.refresh_expires_at or tokens.refresh_expires_at,
            scope=fresh.scope or tokens.scope,
            extra={**tokens.extra, **fresh.extra},
        )

    async def identify(self, http: httpx.AsyncClient, tokens: TokenSet) -> Identity:
        try:
            response = await http.get(
                f"{self._api}/v2/user/info/",
                params={"fields": "open_id,display_name"},
                headers={"Authorization": f"Bearer {tokens.access_token}"},
            )
        except httpx.HTTPError as exc:
            raise network_error("the account's profile", exc) from None
        user = envelope(response).get("user") or {}
        open_id = str(user.get("open_id") or tokens.extra.get("open_id") or "")
        if not open_id:
            raise Permanent("TikTok did not say which account the tokens belong to")
        return Identity(remote_id=open_id, name=str(user.get("display_name") or open_id))

    async def _token(
        self, http: httpx.AsyncClient, form: dict[str, str], what: str
    ) -> tuple[dict[str, Any] | None, str]:
        """The token endpoint's answer, or None and TikTok's words when it refused."""
        secret = self.settings.tiktok_client_secret
        if not self.configured() or secret is None:
            raise Permanent(
                "TikTok is not configured on this server: set UPLOADPOOLS_TIKTOK_CLIENT_KEY "
                "and UPLOADPOOLS_TIKTOK_CLIENT_SECRET"
            )
        body = {
            "client_key": self.settings.tiktok_client_key or "",
            "client_secret": secret.get_secret_value(),
            **form,
        }
        try:
            response = await http.post(
                f"{self._api}/v2/oauth/token/",
                data=body,
                headers={"Content-Type": "application/x-www-form-urlencoded"},
            )
        except httpx.HTTPError as exc:
            raise network_error(what, exc) from None
        if response.status_code >= 500 or response.status_code == 429:
            raise Transient(f"TikTok answered {response.status_code} while {what}")
        try:
            answer = json.loads(response.content)
        except ValueError:
            answer = None
        if (
            response.status_code == 200
            and isinstance(answer, dict)
            and isinstance(answer.get("access_token"), str)
            and answer["access_token"]
        ):
            return answer, ""
        said = ""
        if isinstance(answer, dict):
            bits = [
                str(answer[k])
                for k in ("error", "error_description")
                if isinstance(answer.get(k), str) and answer[k]
            ]
            said = f" ({': '.join(bits)})" if bits else ""
        return None, said or f" (HTTP {response.status_code})"

    def _token_set(self, answer: dict[str, Any]) -> TokenSet:
        now = self.clock.now()

        def after(key: str) -> Any:
            value = answer.get(key)
            if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
                return now + timedelta(seconds=value)
            return None

        extra = {"open_id": answer["open_id"]} if answer.get("open_id") else {}
        return TokenSet(
            access_token=answer["access_token"],
            refresh_token=answer.get("refresh_token") or None,
            expires_at=after("expires_in"),
            refresh_expires_at=after("refresh_expires_in"),
            scope=answer.get("scope") or None,
            extra=extra,
        )
