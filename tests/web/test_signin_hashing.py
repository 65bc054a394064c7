"""Password hashing never runs on the event loop, and only a few hashes run at once."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import threading
from collections.abc import Callable
from typing import Any

import pytest

from uploadpools.auth.service import create_user
from uploadpools.kit import crypto
from uploadpools.store.engine import session_scope
from webhelpers import PASSWORD, csrf_of, sign_in

# Only a deadlock breaker, for the code before the fix (whose verification blocks the
# event loop, so the test can never release it): no test waits this long when it passes.
STUCK_S = 20.0


class BlockingHasher:
    """argon2-cffi's hasher, but `verify` (and `hash`, once `block_hash` is set) waits for
    `release` once it has started."""

    def __init__(self) -> None:
        self.real = crypto._hasher
        self.entered = threading.Event()
        self.release = threading.Event()
        self.verified: list[str] = []
        self.hashed = 0
        self.block_hash = False
        self.active = 0
        self.peak = 0
        self._lock = threading.Lock()

    def hash(self, password: str) -> str:
        with self._lock:
            self.hashed += 1
        if self.block_hash:
            self.entered.set()
            self.release.wait(STUCK_S)
        return self.real.hash(password)

    def verify(self, password_hash: str, password: str) -> bool:
        with self._lock:
            self.active += 1
            self.peak = max(self.peak, self.active)
            self.verified.append(password_hash)
        self.entered.set()
        try:
            self.release.wait(STUCK_S)
            return self.real.verify(password_hash, password)
        finally:
            with self._lock:
                self.active -= 1


@pytest.fixture
def hasher(monkeypatch: pytest.MonkeyPatch) -> BlockingHasher:
    blocking = BlockingHasher()
    monkeypatch.setattr(crypto, "_hasher", blocking)
    return blocking


async def until(condition: Callable[[], bool]) -> None:
    for _ in range(3000):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the condition never came true")


async def thread_event(event: threading.Event) -> None:
    assert await asyncio.to_thread(event.wait, STUCK_S), "it never started"


class TestSignIn:
    async def test_other_requests_are_served_while_a_password_is_verified(
        self, client: Any, tenant: Any, hasher: BlockingHasher
    ) -> None:
        token = csrf_of((await client.get("/signin")).text)
        form = {"email": tenant.email, "password": PASSWORD, "csrf": token}
        signing_in = asyncio.create_task(client.post("/signin", data=form))
        await thread_event(hasher.entered)

        # The API, the database included (SQLite: the process's one connection).
        other = await client.get("/api/v1/pools", headers=tenant.headers)
        served_during_verification = not signing_in.done()
        hasher.release.set()
        signed_in = await signing_in

        assert other.status_code == 200
        assert served_during_verification
        assert signed_in.status_code == 303

    async def test_unknown_email_is_still_verified_against_a_dummy_hash(
        self, client: Any, tenant: Any, hasher: BlockingHasher
    ) -> None:
        hasher.release.set()
        token = csrf_of((await client.get("/signin")).text)

        r = await client.post(
            "/signin", data={"email": "nobody@example.com", "password": "x", "csrf": token}
        )

        assert r.status_code == 400
        assert len(hasher.verified) == 1
        assert hasher.verified[0].startswith("$argon2")

    async def test_password_change_verifies_and_hashes_off_the_loop(
        self, client: Any, tenant: Any, hasher: BlockingHasher
    ) -> None:
        hasher.release.set()
        r = await client.get("/signin")
        r = await client.post(
            "/signin", data={"email": tenant.email, "password": PASSWORD, "csrf": csrf_of(r.text)}
        )
        csrf = csrf_of((await client.get("/pools")).text)
        hasher.release.clear()
        hasher.entered.clear()
        changing = asyncio.create_task(
            client.post(
                "/password", data={"current": PASSWORD, "new": "a-new-password", "csrf": csrf}
            )
        )
        await thread_event(hasher.entered)

        other = await client.get("/api/v1/pools", headers=tenant.headers)
        served_during_verification = not changing.done()
        hasher.release.set()
        changed = await changing

        assert other.status_code == 200
        assert served_during_verification
        assert changed.status_code == 200
        assert "is not your current password" not in changed.text
        r = await client.get("/signin")
        r = await client.post(
            "/signin",
            data={"email": tenant.email, "password": "a-new-password", "csrf": csrf_of(r.text)},
        )
        assert r.status_code == 303


def connections_in_use(app: Any) -> int:
    pool = app.state.uploadpools.engine.sync_engine.pool
    return int(pool.checkedout())


class TestInvite:
    async def invite_while_hashing(
        self, client: Any, tenant: Any, hasher: BlockingHasher, email: str
    ) -> tuple[asyncio.Task[Any], str]:
        """Sign in as the owner, then start inviting `email`; returns once the invitee's
        password is being hashed (and held there until `hasher.release`)."""
        hasher.release.set()
        csrf = await sign_in(client, tenant.email)
        hasher.release.clear()
        hasher.entered.clear()
        hasher.block_hash = True
        inviting = asyncio.create_task(client.post("/members", data={"csrf": csrf, "email": email}))
        await thread_event(hasher.entered)
        return inviting, csrf

    async def test_no_transaction_is_held_while_the_invitees_password_is_hashed(
        self, app: Any, client: Any, tenant: Any, hasher: BlockingHasher
    ) -> None:
        inviting, _ = await self.invite_while_hashing(client, tenant, hasher, "new@example.com")

        held = connections_in_use(app)
        # The API, the database included (SQLite: the process's one connection).
        other = await client.get("/api/v1/pools", headers=tenant.headers)
        served_during_hashing = not inviting.done()
        hasher.release.set()
        invited = await inviting

        assert held == 0
        assert other.status_code == 200
        assert served_during_hashing
        assert invited.status_code == 200
        shown = re.search(r'id="initial-password">([^<]+)<', invited.text)
        assert shown is not None
        assert hasher.hashed == 1
        client.cookies.clear()
        await sign_in(client, "new@example.com", shown.group(1))

    async def test_an_email_registered_while_hashing_gets_no_new_password(
        self, app: Any, client: Any, tenant: Any, hasher: BlockingHasher, clock: Any
    ) -> None:
        inviting, csrf = await self.invite_while_hashing(client, tenant, hasher, "Late@Example.com")
        # Meanwhile someone registers that email (another invite, `users create`).
        hasher.block_hash = False
        async with session_scope(app.state.uploadpools.maker) as session:
            await create_user(session, email="late@example.com", password=PASSWORD, now=clock.now())
        hasher.release.set()
        invited = await inviting

        assert invited.status_code == 200
        assert "initial-password" not in invited.text and "late@example.com" in invited.text
        again = await client.post("/members", data={"csrf": csrf, "email": "late@example.com"})
        assert again.status_code == 422 and "already a member" in again.text
        client.cookies.clear()
        await sign_in(client, "late@example.com", PASSWORD)  # their own password still

    async def test_nothing_is_hashed_for_a_registered_user_or_a_refused_invite(
        self, client: Any, tenant: Any, make_tenant: Any, hasher: BlockingHasher
    ) -> None:
        other = await make_tenant()
        hasher.release.set()
        csrf = await sign_in(client, tenant.email)
        hasher.hashed = 0  # (make_tenant hashed `other`'s password)
        hasher.block_hash = True  # a hash would now hang: none must be made

        added = await client.post(
            "/members", data={"csrf": csrf, "email": other.email, "role": "admin"}
        )
        again = await client.post("/members", data={"csrf": csrf, "email": other.email})
        bad_email = await client.post("/members", data={"csrf": csrf, "email": "nope"})
        bad_role = await client.post(
            "/members", data={"csrf": csrf, "email": "x@example.com", "role": "owner"}
        )

        assert added.status_code == 200 and "initial-password" not in added.text
        assert again.status_code == 422 and "already a member" in again.text
        assert bad_email.status_code == 422 and "is not an email address" in bad_email.text
        assert bad_role.status_code == 422 and "Role: must be admin or member" in bad_role.text
        assert hasher.hashed == 0


class TestHashSlots:
    async def test_at_most_two_hashes_run_at_once_and_the_rest_wait(
        self, hasher: BlockingHasher
    ) -> None:
        slots = crypto.hash_slots
        assert slots.size == 2
        stored = crypto._hasher.real.hash("pw")

        calls = [asyncio.create_task(crypto.verify_password(stored, "pw")) for _ in range(5)]
        await until(lambda: (slots.running, slots.waiting) == (2, 3))
        active = hasher.active
        calls[-1].cancel()  # a caller that gives up leaves the queue
        await until(lambda: slots.waiting == 2)
        hasher.release.set()
        results = await asyncio.gather(*calls[:-1])

        assert active == 2
        assert results == [True] * 4
        assert hasher.peak == 2
        assert (slots.running, slots.waiting) == (0, 0)

    def test_code_without_an_event_loop_hashes_through_the_same_slots(self) -> None:
        hashed = crypto.hash_password_blocking("pw")

        assert asyncio.run(crypto.verify_password(hashed, "pw"))
        assert not asyncio.run(crypto.verify_password(hashed, "other"))

    def test_the_dummy_hash_is_not_made_at_start_up(self) -> None:
        code = (
            "import sys, uploadpools.app, uploadpools.web.session as s; "
            "sys.exit(0 if s._dummy is None else 1)"
        )
        assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
