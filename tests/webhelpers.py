"""Helpers for testing the web pages over httpx (no browser)."""

from __future__ import annotations

import re

import httpx

CSRF = re.compile(r'name="csrf" value="([^"]+)"')
PASSWORD = "pw-123456"  # the `make_tenant` fixture's password


def csrf_of(html: str) -> str:
    m = CSRF.search(html)
    assert m, "no csrf field on the page"
    return m.group(1)


async def sign_in(client: httpx.AsyncClient, email: str, password: str = PASSWORD) -> str:
    """Sign in through the form; returns the session's CSRF token."""
    r = await client.get("/signin")
    r = await client.post(
        "/signin", data={"email": email, "password": password, "csrf": csrf_of(r.text)}
    )
    assert r.status_code == 303, r.text
    r = await client.get("/pools")
    assert r.status_code == 200, r.text
    return csrf_of(r.text)
