"""Signed, expiring media URLs for pull-based platforms and webhook receivers.

``{public_url}/media/{media_id}?exp=<unix seconds>&sig=<HMAC>``: the signature covers
the media id and the expiry, under a key derived from the secret key for this purpose
only, so the link is the credential and cannot be stretched or pointed elsewhere.
"""

from __future__ import annotations

import re
from datetime import datetime
from urllib.parse import quote

from uploadpools.config import Settings
from uploadpools.kit.crypto import Signer

__all__ = ["sign_media_url", "verify_media_signature"]

_PURPOSE = "media"
_EXP_RE = re.compile(r"[0-9]{1,12}")
_SIG_RE = re.compile(r"[A-Za-z0-9_-]{1,128}")


def _signer(settings: Settings) -> Signer:
    return Signer(settings.secret(), _PURPOSE)


def sign_media_url(settings: Settings, media_id: str, expires_at: datetime) -> str:
    if expires_at.tzinfo is None:
        raise ValueError("expires_at must be timezone-aware")
    exp = int(expires_at.timestamp())
    sig = _signer(settings).sign(f"{media_id}:{exp}")
    base = settings.public_url.rstrip("/")
    return f"{base}/media/{quote(media_id, safe='')}?exp={exp}&sig={sig}"


def verify_media_signature(
    settings: Settings, media_id: str, exp: str, sig: str, now: datetime
) -> bool:
    """True when ``sig`` signs ``media_id`` and ``exp``, and ``now`` is before ``exp``."""
    # Shape checks first: hmac.compare_digest refuses non-ASCII strings with TypeError.
    if not _EXP_RE.fullmatch(exp) or not _SIG_RE.fullmatch(sig):
        return False
    if now.timestamp() >= int(exp):
        return False
    return _signer(settings).verify(f"{media_id}:{exp}", sig)
