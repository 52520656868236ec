"""Helpers for the admin API end-to-end tests: the admin listener of a `Guard` (conftest.py),
sign-in through `POST /api/v1/auth/login`, and the error shape of ADMIN_API.md.

A browser-like client is a `requests.Session` (it keeps the `pg_session` cookie); automation is a
bare request with `Authorization: Bearer pg_user_...`.
"""

from __future__ import annotations

import time
from http.cookies import SimpleCookie

import pytest
import requests

from conftest import HTTP_TIMEOUT_SECS, OWNER_PASSWORD, POLL_INTERVAL_SECS, START_DEADLINE_SECS

OWNER_EMAIL = "owner@example.com"


def admin_url(guard) -> str:
    return f"http://127.0.0.1:{guard.admin_port}"


def wait_for_admin(guard) -> str:
    """The proxy port answering does not mean the admin listener does: poll /healthz."""
    url = admin_url(guard)
    deadline = time.monotonic() + START_DEADLINE_SECS
    while True:
        try:
            if requests.get(url + "/healthz", timeout=1).status_code == 200:
                return url
        except requests.RequestException:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"admin API not answering on {url} after {START_DEADLINE_SECS}s")
        time.sleep(POLL_INTERVAL_SECS)


class Admin:
    """The admin API of one running guard."""

    def __init__(self, guard):
        self.guard = guard
        self.url = wait_for_admin(guard)
        self.origin = self.url  # conftest sets GUARD_ADMIN_ORIGIN to the admin URL

    def login_raw(self, email: str = OWNER_EMAIL, password: str = OWNER_PASSWORD,
                  session: requests.Session | None = None, **extra) -> requests.Response:
        body = {"email": email, "password": password, **extra}
        client = session or requests
        return client.post(self.url + "/api/v1/auth/login", json=body, timeout=HTTP_TIMEOUT_SECS)

    def login(self, email: str = OWNER_EMAIL, password: str = OWNER_PASSWORD,
              **extra) -> requests.Session:
        s = requests.Session()
        r = self.login_raw(email, password, session=s, **extra)
        assert r.status_code == 200, f"login: {r.status_code} {r.text}"
        assert s.cookies.get("pg_session"), r.headers
        return s

    def get(self, s, path: str, **kw) -> requests.Response:
        return (s or requests).get(self.url + path, timeout=HTTP_TIMEOUT_SECS, **kw)

    def post(self, s, path: str, body: dict | None = None, **kw) -> requests.Response:
        """A console-like POST: JSON body (requests sets Content-Type: application/json)."""
        return (s or requests).post(self.url + path, json=body if body is not None else {},
                                    timeout=HTTP_TIMEOUT_SECS, **kw)

    def with_cookie(self, value: str) -> requests.Session:
        s = requests.Session()
        s.cookies.set("pg_session", value, domain="127.0.0.1", path="/")
        return s


def error_code(r: requests.Response) -> str:
    body = r.json()
    assert set(body) == {"error"} and {"code", "message"} <= set(body["error"]), body
    return body["error"]["code"]


def set_cookie_attributes(r: requests.Response) -> dict:
    """The `pg_session` Set-Cookie of a response, as {attribute-lowercase: value}."""
    raw = r.headers.get("set-cookie")
    assert raw and raw.startswith("pg_session="), raw
    c = SimpleCookie()
    c.load(raw)
    morsel = c["pg_session"]
    attrs = {k.lower(): v for k, v in morsel.items() if v not in ("", False)}
    attrs["_raw"] = raw
    attrs["_value"] = morsel.value
    return attrs


@pytest.fixture
def admin(guard) -> Admin:
    return Admin(guard)
