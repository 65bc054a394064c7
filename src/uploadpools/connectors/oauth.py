"""The OAuth seam: what each OAuth platform provides to the shared connect flow.

The shared flow (``/connect/{platform}`` → platform consent → callback) signs the
``state``, makes the PKCE pair when the provider uses it, calls ``exchange_code`` and
``identify``, and stores the token set encrypted as the account's config. Connectors
refresh through the same provider before expiry and on an auth error, saving rotated
tokens with ``JobStore.save_config``; a refused refresh raises ``AuthExpired`` so the
account goes ``needs_reauth``.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar, Protocol, runtime_checkable

import httpx


@dataclass(frozen=True, slots=True)
class TokenSet:
    access_token: str
    refresh_token: str | None = None
    expires_at: datetime | None = None
    refresh_expires_at: datetime | None = None
    scope: str | None = None
    # Platform specifics the connector needs later (TikTok open_id, Instagram user id).
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Identity:
    """Who the tokens belong to on the platform: becomes the account's name."""

    remote_id: str
    name: str


@runtime_checkable
class OAuthProvider(Protocol):
    platform: ClassVar[str]
    uses_pkce: ClassVar[bool]
    # Scopes asked for at consent, needed to post.
    scopes: ClassVar[tuple[str, ...]]

    def configured(self) -> bool:
        """True when the app credentials (client id/secret) are set in settings."""
        ...

    def authorize_url(self, *, state: str, redirect_uri: str, code_challenge: str | None) -> str:
        """The platform's consent page URL."""
        ...

    async def exchange_code(
        self, http: httpx.AsyncClient, *, code: str, redirect_uri: str, code_verifier: str | None
    ) -> TokenSet:
        """Trade the callback's code for tokens (raises a ConnectorError on refusal)."""
        ...

    async def refresh(self, http: httpx.AsyncClient, tokens: TokenSet) -> TokenSet:
        """New tokens from the refresh token; ``AuthExpired`` when the platform refuses."""
        ...

    async def identify(self, http: httpx.AsyncClient, tokens: TokenSet) -> Identity:
        """The platform account (channel, creator, IG business account) behind the tokens."""
        ...


def pkce_pair() -> tuple[str, str]:
    """A fresh (code_verifier, S256 code_challenge) pair per RFC 7636."""
    verifier = secrets.token_urlsafe(64)[:96]
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    challenge = base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")
    return verifier, challenge
