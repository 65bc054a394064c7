"""Secrets at rest: credentials are encrypted, API keys and passwords are hashed."""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import hashlib
import hmac
import json
import secrets
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

API_KEY_PREFIX = "up_"
_hasher = PasswordHasher()
# Each argon2 run maps 64 MiB and takes tens of ms of CPU; this many at once, at most.
MAX_CONCURRENT_HASHES = 2

T = TypeVar("T")


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


class HashSlots:
    """Where this process runs argon2: off the event loop, at most ``size`` at once.

    A small pool of threads, made on first use: a run never blocks the event loop (the
    API, the web UI and the in-process engine keep being served), and however many
    sign-ins arrive together, the rest queue without holding a thread or memory, so
    argon2 adds at most ``size`` x 64 MiB to the server. One per process, shared by
    every event loop and by code that has none (the CLI before the server starts).
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self.running = 0
        self.waiting = 0
        self._lock = threading.Lock()
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None

    def submit(self, fn: Callable[..., T], *args: Any) -> concurrent.futures.Future[T]:
        def run() -> T:
            with self._lock:
                self.waiting -= 1
                self.running += 1
            try:
                return fn(*args)
            finally:
                with self._lock:
                    self.running -= 1

        with self._lock:
            if self._executor is None:
                self._executor = concurrent.futures.ThreadPoolExecutor(
                    self.size, thread_name_prefix="argon2"
                )
            self.waiting += 1
            future = self._executor.submit(run)
        future.add_done_callback(self._forget_if_cancelled)
        return future

    def _forget_if_cancelled(self, future: concurrent.futures.Future[Any]) -> None:
        if future.cancelled():  # never ran: it left the queue
            with self._lock:
                self.waiting -= 1

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        # A cancelled caller stops waiting at once; a run already started finishes in
        # its thread (and keeps its slot until then, so memory stays bounded).
        return await asyncio.wrap_future(self.submit(fn, *args))

    def run_blocking(self, fn: Callable[..., T], *args: Any) -> T:
        """For code without an event loop: the same slots, waited for in this thread."""
        return self.submit(fn, *args).result()


hash_slots = HashSlots(MAX_CONCURRENT_HASHES)


def _hash(password: str) -> str:
    return _hasher.hash(password)


def _verify(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


async def hash_password(password: str) -> str:
    return await hash_slots.run(_hash, password)


async def verify_password(password_hash: str, password: str) -> bool:
    return await hash_slots.run(_verify, password_hash, password)


def hash_password_blocking(password: str) -> str:
    """``hash_password`` for code that has no event loop (the CLI before serving)."""
    return hash_slots.run_blocking(_hash, password)


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
