"""The shared OAuth connect flow: ``/connect/{platform}`` → platform consent → callback.

``start`` makes the platform's consent URL. Its ``state`` is a Fernet token (encrypted and
authenticated under a key of its own) carrying the workspace, the user, the platform, a
nonce, the expiry and, for PKCE, the code verifier — so nothing is kept server-side and
the verifier never shows in a URL. A flow started from the browser is also bound to it:
the nonce goes into a cookie, and the callback refuses a state whose nonce the browser
does not hold (someone else's link cannot connect their channel into your workspace or
yours into theirs).

``complete`` checks the state, trades the code for tokens, asks the platform who they
belong to, and stores the tokens encrypted as the account's config. Connecting an
identity the workspace already has (same platform and remote id) updates that account
and sets it back to ``connected`` instead of adding a second one.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from uploadpools.config import Settings
from uploadpools.connectors.base import ConnectorError, Transient
from uploadpools.connectors.oauth import OAuthProvider, pkce_pair
from uploadpools.connectors.oauth_session import tokens_to_config
from uploadpools.connectors.registry import OAUTH_PLATFORMS, oauth_provider
from uploadpools.exceptions import BadRequest, NotFound, UploadPoolsError
from uploadpools.kit.clock import Clock
from uploadpools.kit.crypto import SecretBox
from uploadpools.models import Account


class PlatformNotConnectable(NotFound):
    title = "Platform cannot be connected"


class ConnectStateInvalid(BadRequest):
    title = "Invalid or expired connect link"


class ConnectRefused(BadRequest):
    title = "The platform did not connect the account"


class PlatformUnavailable(UploadPoolsError):
    status_code = 502
    title = "The platform could not be reached"
    type_slug = "platform-unavailable"


@dataclass(frozen=True, slots=True)
class Started:
    authorize_url: str
    nonce: str


@dataclass(frozen=True, slots=True)
class ConnectState:
    workspace_id: str
    user_id: str | None
    platform: str
    nonce: str
    verifier: str | None
    bound: bool


def cookie_name(platform: str) -> str:
    return f"uploadpools_connect_{platform}"


class OAuthConnect:
    def __init__(self, settings: Settings, clock: Clock, http: httpx.AsyncClient) -> None:
        self.settings = settings
        self.clock = clock
        self.http = http
        self._box = SecretBox(settings.secret(), purpose="oauth-state")

    def provider(self, platform: str) -> OAuthProvider:
        """The platform's provider; 404 naming what is missing when it cannot connect."""
        provider = oauth_provider(platform, self.settings, self.clock)
        if provider is None:
            if platform in OAUTH_PLATFORMS:
                raise PlatformNotConnectable(f"{platform} cannot be connected on this server yet")
            raise PlatformNotConnectable(f"{platform!r} is not a platform that connects by OAuth")
        if not provider.configured():
            names = getattr(
                provider,
                "settings_names",
                (
                    f"UPLOADPOOLS_{platform.upper()}_CLIENT_ID",
                    f"UPLOADPOOLS_{platform.upper()}_CLIENT_SECRET",
                ),
            )
            raise PlatformNotConnectable(
                f"{platform} is not configured on this server: set {' and '.join(names)} "
                f"(see docs/platforms/{platform}.md)"
            )
        return provider

    def redirect_uri(self, platform: str) -> str:
        return f"{self.settings.public_url.rstrip('/')}/connect/{platform}/callback"

    def start(
        self, workspace_id: str, user_id: str | None, platform: str, *, bound: bool = True
    ) -> Started:
        """The consent URL; with ``bound`` the caller must set the nonce cookie."""
        provider = self.provider(platform)
        verifier, challenge = pkce_pair() if provider.uses_pkce else (None, None)
        nonce = secrets.token_urlsafe(16)
        expires = self.clock.now().timestamp() + self.settings.oauth_state_ttl_s
        state = self._box.encrypt(
            {
                "w": workspace_id,
                "u": user_id,
                "p": platform,
                "n": nonce,
                "v": verifier,
                "e": expires,
                "b": bound,
            }
        ).decode()
        url = provider.authorize_url(
            state=state, redirect_uri=self.redirect_uri(platform), code_challenge=challenge
        )
        return Started(url, nonce)

    def read_state(self, state: str, platform: str, cookie_nonce: str | None) -> ConnectState:
        try:
            data: dict[str, Any] = self._box.decrypt(state.encode())
        except (ValueError, TypeError):
            raise ConnectStateInvalid(
                "this connect link is not one this server made; start again from /connect"
            )
        if data.get("p") != platform:
            raise ConnectStateInvalid("this connect link was made for another platform")
        if float(data.get("e", 0)) < self.clock.now().timestamp():
            raise ConnectStateInvalid("this connect link has expired; start again")
        if data.get("b") and not (
            cookie_nonce and secrets.compare_digest(str(cookie_nonce), str(data.get("n")))
        ):
            raise ConnectStateInvalid(
                "this connect link was started in another browser; start again from here"
            )
        return ConnectState(
            workspace_id=str(data["w"]),
            user_id=data.get("u"),
            platform=platform,
            nonce=str(data["n"]),
            verifier=data.get("v"),
            bound=bool(data.get("b")),
        )

    async def complete(
        self,
        session: AsyncSession,
        *,
        platform: str,
        state: str,
        code: str,
        cookie_nonce: str | None,
        now: datetime,
    ) -> Account:
        """Verify, exchange, identify, store. Network first: no transaction is open meanwhile."""
        st = self.read_state(state, platform, cookie_nonce)
        provider = self.provider(platform)
        try:
            tokens = await provider.exchange_code(
                self.http,
                code=code,
                redirect_uri=self.redirect_uri(platform),
                code_verifier=st.verifier,
            )
            identity = await provider.identify(self.http, tokens)
        except Transient as exc:
            raise PlatformUnavailable(f"{platform}: {exc.detail}; try connecting again")
        except ConnectorError as exc:
            raise ConnectRefused(f"{platform}: {exc.detail}")
        box = SecretBox(self.settings.secret())
        credentials = box.encrypt(tokens_to_config(tokens, identity.remote_id))
        account = await session.scalar(
            select(Account).where(
                Account.workspace_id == st.workspace_id,
                Account.platform == platform,
                Account.remote_id == identity.remote_id,
            )
        )
        if account is not None:
            # The same channel again: new tokens, back to connected; the user's name stays.
            account.credentials = credentials
            account.status = "connected"
            account.updated_at = now
        else:
            account = Account(
                workspace_id=st.workspace_id,
                platform=platform,
                name=identity.name[:200],
                status="connected",
                credentials=credentials,
                remote_id=identity.remote_id,
                created_at=now,
                updated_at=now,
            )
            session.add(account)
        await session.flush()
        return account
