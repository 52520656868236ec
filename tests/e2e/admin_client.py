"""A small client for the admin API (ADMIN_API.md), one per human or per API token.

Each `AdminClient` owns a `requests.Session`, so a signed-in human carries their own
`pg_session` cookie and nothing else. State-changing calls always send
`Content-Type: application/json` (the CSRF rule for cookie requests), with a JSON body for
POST/PUT/PATCH (`{}` when the endpoint takes none) and no body for DELETE, and a fresh random
`Idempotency-Key` (ADMIN_API.md: approve and deny require one) unless the caller passes its own
in `headers` (`{"Idempotency-Key": None}` sends none).

Methods return the raw `requests.Response`: tests assert the exact status and error code
themselves. `expect(...)` is the shorthand for "this call must succeed with this status".
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any, Callable

import requests

from conftest import HTTP_TIMEOUT_SECS, OWNER_PASSWORD, POLL_INTERVAL_SECS

OWNER_EMAIL = "owner@example.com"
# Meets the password rules (>= 10 characters, a letter and a digit, <= 72 bytes).
MEMBER_PASSWORD = "member-Password-2468"
ADMIN_READY_DEADLINE_SECS = 30

STATE_CHANGING = {"POST", "PUT", "PATCH", "DELETE"}


def admin_url(guard) -> str:
    return f"http://127.0.0.1:{guard.admin_port}"


def wait_admin_ready(guard) -> None:
    """The admin listener starts beside the proxy; poll /healthz against a deadline."""
    deadline = time.monotonic() + ADMIN_READY_DEADLINE_SECS
    url = admin_url(guard) + "/healthz"
    last = None
    while time.monotonic() < deadline:
        try:
            r = requests.get(url, timeout=2)
            if r.status_code == 200:
                return
            last = f"{r.status_code} {r.text[:200]}"
        except requests.RequestException as e:
            last = repr(e)
        time.sleep(POLL_INTERVAL_SECS)
    raise TimeoutError(f"admin API at {url} not ready after {ADMIN_READY_DEADLINE_SECS}s: {last}")


def error_code(r: requests.Response) -> str | None:
    """`error.code` of an admin API error body, or None when the body is not one."""
    try:
        body = r.json()
    except ValueError:
        return None
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        return body["error"].get("code")
    return None


def describe(r: requests.Response) -> str:
    return f"{r.request.method} {r.request.path_url} -> {r.status_code} {r.text[:500]}"


def accept_invitation(base_url: str, token: str, password: str,
                      totp_code: str | None = None) -> dict:
    """The invitee's side, not signed in: POST /invitations/accept; returns the 201 body."""
    body = {"token": token, "password": password}
    if totp_code is not None:
        body["totp_code"] = totp_code
    r = requests.post(base_url.rstrip("/") + "/api/v1/invitations/accept", json=body,
                      timeout=HTTP_TIMEOUT_SECS)
    assert r.status_code == 201, describe(r)
    return r.json()


class AdminClient:
    """One human (cookie session) or one API token, talking JSON to the admin API."""

    def __init__(self, base_url: str, *, token: str | None = None, label: str = ""):
        self.base_url = base_url.rstrip("/")
        self.http = requests.Session()
        self.label = label
        self.email: str | None = None
        self.me: dict | None = None
        if token is not None:
            self.http.headers["Authorization"] = f"Bearer {token}"

    @classmethod
    def for_guard(cls, guard, *, token: str | None = None, label: str = "") -> "AdminClient":
        wait_admin_ready(guard)
        return cls(admin_url(guard), token=token, label=label)

    # -- raw calls

    def call(self, method: str, path: str, body: Any = None, *, params: dict | None = None,
             headers: dict | None = None) -> requests.Response:
        method = method.upper()
        h = dict(headers or {})
        data = None
        if method in STATE_CHANGING:
            h.setdefault("Content-Type", "application/json")
            if not any(k.lower() == "idempotency-key" for k in h):
                h["Idempotency-Key"] = str(uuid.uuid4())
            if method != "DELETE":
                data = json.dumps({} if body is None else body)
            elif body is not None:
                data = json.dumps(body)
        elif body is not None:
            raise ValueError(f"{method} takes no body")
        url = path if path.startswith("http") else self.base_url + path
        return self.http.request(method, url, data=data, params=params, headers=h,
                                 timeout=HTTP_TIMEOUT_SECS)

    def get(self, path: str, **params) -> requests.Response:
        return self.call("GET", path, params=params or None)

    def post(self, path: str, body: Any = None) -> requests.Response:
        return self.call("POST", path, body)

    def put(self, path: str, body: Any = None) -> requests.Response:
        return self.call("PUT", path, body)

    def patch(self, path: str, body: Any = None) -> requests.Response:
        return self.call("PATCH", path, body)

    def delete(self, path: str) -> requests.Response:
        return self.call("DELETE", path)

    def expect(self, method: str, path: str, body: Any = None, *, status: int = 200,
               params: dict | None = None) -> Any:
        """Call and require `status`; return the decoded JSON body (or text when not JSON)."""
        r = self.call(method, path, body, params=params)
        assert r.status_code == status, f"[{self.label}] expected {status}: {describe(r)}"
        try:
            return r.json()
        except ValueError:
            return r.text

    # -- authentication

    def login(self, email: str, password: str, totp_code: str | None = None) -> dict:
        body = {"email": email, "password": password}
        if totp_code is not None:
            body["totp_code"] = totp_code
        r = self.post("/api/v1/auth/login", body)
        assert r.status_code == 200, f"[{self.label}] login as {email}: {describe(r)}"
        assert self.http.cookies.get("pg_session"), (
            f"[{self.label}] login set no pg_session cookie: {r.headers.get('Set-Cookie')}")
        self.email = email
        self.me = r.json()
        return self.me

    def whoami(self) -> dict:
        return self.expect("GET", "/api/v1/me")

    def user_id(self) -> str:
        return self.whoami()["user"]["id"]

    def switch_org(self, org_id: str) -> dict:
        return self.expect("POST", "/api/v1/me/active-organization",
                           {"organization_id": org_id})

    def create_api_token(self, name: str = "e2e automation") -> str:
        created = self.expect("POST", "/api/v1/me/tokens", {"name": name}, status=201)
        token = created["token"]
        assert token.startswith("pg_user_"), created
        return token

    # -- common resources

    def invite_only(self, email: str, role: str) -> dict:
        """POST /members: the invitation and its one-time token (no membership yet)."""
        inv = self.expect("POST", "/api/v1/members", {"email": email, "role": role},
                          status=201)
        assert inv["object"] == "invitation" and inv["status"] == "pending", inv
        assert inv["token"].startswith("pg_inv_") and inv["role"] == role, inv
        return inv

    def invite(self, email: str, role: str, password: str = MEMBER_PASSWORD,
               totp_code: str | None = None) -> dict:
        """Invite `email`, then accept as the invitee (setting or proving `password`): the
        member as `GET /members` lists it, with `user_id`."""
        inv = self.invite_only(email, role)
        accepted = accept_invitation(self.base_url, inv["token"], password, totp_code)
        assert accepted["role"] == role, accepted
        members = self.expect("GET", "/api/v1/members")["data"]
        m = next(m for m in members if m["user_id"] == accepted["user_id"])
        assert m["role"] == role and m["user_id"].startswith("usr_"), m
        return m

    def create_agent(self, name: str) -> dict:
        a = self.expect("POST", "/api/v1/agents", {"name": name}, status=201)
        assert a["id"].startswith("agt_") and a["token"].startswith("pg_agent_"), a
        return a

    def intent(self, intent_id: str) -> dict:
        return self.expect("GET", f"/api/v1/intents/{intent_id}")

    def wait_intent(self, intent_id: str, done: Callable[[dict], bool], *,
                    deadline_secs: float = 30, what: str = "") -> dict:
        """Poll GET /api/v1/intents/{id} until `done(intent)` or the deadline."""
        deadline = time.monotonic() + deadline_secs
        while True:
            i = self.intent(intent_id)
            if done(i):
                return i
            if time.monotonic() > deadline:
                raise AssertionError(f"intent {intent_id} never became {what or 'ready'} within "
                                     f"{deadline_secs}s; last seen: {i}")
            time.sleep(POLL_INTERVAL_SECS)

    def audit_events(self) -> list[dict]:
        """Every audit event of the active organization, paging with `after`."""
        out, after = [], 0
        while True:
            page = self.expect("GET", "/api/v1/audit", params={"after": after, "limit": 500})
            data = page["data"]
            out.extend(data)
            if len(data) < 500:
                return out
            after = data[-1]["seq"]


def human(guard, email: str, password: str, label: str | None = None) -> AdminClient:
    """A new client signed in as `email`."""
    c = AdminClient.for_guard(guard, label=label or email)
    c.login(email, password)
    return c


def owner(guard) -> AdminClient:
    """The owner created by `payment-guard init` in the conftest bootstrap."""
    return human(guard, OWNER_EMAIL, OWNER_PASSWORD, label="owner")


# ---------------------------------------------------------------------------- agent side helpers

def _default_hold_threshold() -> int:
    """The amount above which policies/default.cedar holds (a new organization's policy)."""
    import re

    from conftest import REPO

    text = (REPO / "policies" / "default.cedar").read_text()
    m = re.search(r"resource\.amount\s*>\s*(\d+)", text)
    assert m, "policies/default.cedar no longer holds above an amount"
    return int(m.group(1))


DEFAULT_HOLD_THRESHOLD = _default_hold_threshold()


def hold_amount() -> int:
    """An amount held both by the e2e TEST_POLICY and by policies/default.cedar."""
    from conftest import HOLD_THRESHOLD

    return max(HOLD_THRESHOLD, DEFAULT_HOLD_THRESHOLD) + 50000


def proxy_payment(guard, amount: int, *, run: str, key: str, token: str | None = None,
                  agent: str = "a1", headers: dict | None = None,
                  timeout: float | None = None) -> requests.Response:
    """POST /v1/payment_intents through the guard's proxy as the agent, raw (no SDK)."""
    from urllib.parse import quote

    pairs = [("amount", amount), ("currency", "usd"), ("payment_method_types[0]", "card"),
             ("metadata[run]", run)]
    body = "&".join(f"{quote(k, safe='[]')}={quote(str(v), safe='')}" for k, v in pairs)
    h = {"Authorization": f"Bearer {token or guard.tokens[agent]}",
         "Content-Type": "application/x-www-form-urlencoded", "Idempotency-Key": key}
    h.update(headers or {})
    return requests.post(guard.proxy_url + "/v1/payment_intents", data=body, headers=h,
                         timeout=timeout or HTTP_TIMEOUT_SECS)


def new_hold(guard, *, run: str, agent: str = "a1", token: str | None = None) -> str:
    """A fresh held PaymentIntent (402 guard_approval_required); returns its intent id."""
    import uuid

    r = proxy_payment(guard, hold_amount(), run=run, key=str(uuid.uuid4()), agent=agent,
                      token=token)
    assert r.status_code == 402, f"expected a hold: {r.status_code} {r.text}"
    err = r.json()["error"]
    assert err["code"] == "guard_approval_required", r.text
    return err["guard"]["intent"]
