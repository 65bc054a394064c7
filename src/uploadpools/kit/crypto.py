"""Secrets at rest: credentials are encrypted, API keys and passwords are hashed."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

API_KEY_PREFIX = "up_"
_hasher = PasswordHasher()


def derive_key(secret: str, purpose: str, length: int = 32) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=None, info=purpose.encode()).derive(
        secret.encode()
    )


class SecretBox:
    """Authenticated encryption (Fernet) under a key derived from the secret key."""

    def __init__(self, secret: str, purpose: str = "credentials") -> None:
        # Each purpose gets its own key: an OAuth state can never decrypt as credentials.
        self._fernet = Fernet(
            base64.urlsafe_b64encode(derive_key(secret, f"uploadpools:{purpose}"))
        )

    def encrypt(self, value: dict[str, Any]) -> bytes:
        return self._fernet.encrypt(json.dumps(value, separators=(",", ":")).encode())

    def decrypt(self, token: bytes) -> dict[str, Any]:
        try:
            result: dict[str, Any] = json.loads(self._fernet.decrypt(token))
        except InvalidToken as exc:
            raise ValueError("credentials cannot be decrypted with this secret key") from exc
        return result


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def generate_password() -> str:
    return secrets.token_urlsafe(12)


def generate_api_key() -> tuple[str, str, str]:
    """A new key as (full key shown once, lookup prefix, stored hash).

    Keys carry 256 bits of randomness, so a plain SHA-256 is the right stored form
    (a slow password hash would only cost time on every request).
    """
    prefix = secrets.token_hex(6)
    full = f"{API_KEY_PREFIX}{prefix}_{secrets.token_urlsafe(32)}"
    return full, prefix, hash_api_key(full)


def hash_api_key(full: str) -> str:
    return hashlib.sha256(full.encode()).hexdigest()


def parse_api_key(full: str) -> str | None:
    """The lookup prefix of a well-formed key, else None."""
    if not full.startswith(API_KEY_PREFIX):
        return None
    prefix, sep, rest = full[len(API_KEY_PREFIX) :].partition("_")
    if not sep or len(prefix) != 12 or not rest:
        return None
    return prefix


def api_key_matches(full: str, stored_hash: str) -> bool:
    return hmac.compare_digest(hash_api_key(full), stored_hash)


class Signer:
    """HMAC-signed, expiring tokens (signed media URLs, OAuth state)."""

    def __init__(self, secret: str, purpose: str) -> None:
        self._key = derive_key(secret, f"uploadpools:sign:{purpose}")

    def sign(self, message: str) -> str:
        digest = hmac.new(self._key, message.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    def verify(self, message: str, signature: str) -> bool:
        return hmac.compare_digest(self.sign(message), signature)
