"""ADMIN_API.md "Authentication", end to end against the real binary. pyotp is the independent
RFC 6238 implementation: every TOTP code the guard accepts or refuses here was computed by it.
"""

from __future__ import annotations

import time

import pyotp
import requests

from admin_fixtures import OWNER_EMAIL, Admin, admin, error_code, set_cookie_attributes  # noqa: F401
from conftest import OWNER_PASSWORD

STEP = 30


def wait_for_fresh_window(min_left: float = 6.0) -> int:
    """Start of a TOTP step with at least `min_left` seconds to go, so the codes a test computes
    relative to it stay in the same window on the guard's side. Returns the step number."""
    while True:
        now = time.time()
        left = STEP - (now % STEP)
        if left >= min_left:
            return int(now // STEP)
        time.sleep(left + 0.05)


def wait_for_step(step: int) -> None:
    """Wall-clock wait (TOTP is defined by the clock): until step `step` has begun."""
    while time.time() < step * STEP + 0.5:
        time.sleep(min(1.0, step * STEP + 0.5 - time.time()))


def code(totp: pyotp.TOTP, step: int) -> str:
    return totp.at(step * STEP)


def enroll(admin: Admin, s: requests.Session) -> tuple[pyotp.TOTP, list[str], int]:
    """setup → confirm with a pyotp code from the PREVIOUS step (skew -1 accepted)."""
    # setup needs the account's password (a stolen session alone cannot enrol a second factor)
    r = admin.post(s, "/api/v1/me/totp/setup", {"password": "wrong-password-1"})
    assert r.status_code == 422, r.text
    r = admin.post(s, "/api/v1/me/totp/setup", {"password": OWNER_PASSWORD})
    assert r.status_code == 200, r.text
    setup = r.json()
    uri = setup["otpauth_uri"]
    assert uri.startswith("otpauth://totp/Payment%20Guard:owner%40example.com?"), uri
    parsed = pyotp.parse_uri(uri)
    assert parsed.secret == setup["secret"] and parsed.issuer == "Payment Guard"
    assert parsed.digits == 6 and parsed.interval == 30
    totp = pyotp.TOTP(setup["secret"])
    assert admin.get(s, "/api/v1/me").json()["totp_enabled"] is False, "not active before confirm"

    t = wait_for_fresh_window()
    r = admin.post(s, "/api/v1/me/totp/confirm", {"code": wrong_code(totp, t)})
    assert r.status_code == 422 and error_code(r) == "validation_failed", r.text
    r = admin.post(s, "/api/v1/me/totp/confirm", {"code": code(totp, t - 1)})
    assert r.status_code == 200, r.text
    codes = r.json()["recovery_codes"]
    assert len(codes) == 10 and len(set(codes)) == 10, codes
    assert admin.get(s, "/api/v1/me").json()["totp_enabled"] is True
    return totp, codes, t


def wrong_code(totp: pyotp.TOTP, t: int) -> str:
    valid = {code(totp, s) for s in range(t - 2, t + 3)}
    return next(c for c in ("000000", "111111", "222222", "333333", "444444", "555555")
                if c not in valid)


def test_totp_enrollment_second_factor_replay_skew_and_recovery_codes(admin):
    s = admin.login()
    totp, recovery, t = enroll(admin, s)

    # logout ends the session server-side; the old cookie no longer works
    old = s.cookies.get("pg_session")
    r = admin.post(s, "/api/v1/auth/logout")
    assert r.status_code == 200, r.text
    r = admin.get(admin.with_cookie(old), "/api/v1/me")
    assert r.status_code == 401 and error_code(r) == "authentication_required"

    # the password alone no longer signs in
    r = admin.login_raw()
    assert r.status_code == 401 and error_code(r) == "second_factor_required", r.text
    assert "set-cookie" not in r.headers
    r = admin.login_raw(totp_code=wrong_code(totp, t))
    assert r.status_code == 401 and error_code(r) == "second_factor_required", r.text
    # the code used to confirm was accepted once: replaying it is refused
    r = admin.login_raw(totp_code=code(totp, t - 1))
    assert r.status_code == 401 and error_code(r) == "second_factor_required", r.text

    # a recovery code works once
    admin.login(recovery_code=recovery[0])
    r = admin.login_raw(recovery_code=recovery[0])
    assert r.status_code == 401 and error_code(r) == "second_factor_required", r.text

    # skew: in the next window, the code of the previous step (never used) is accepted ...
    wait_for_step(t + 1)
    s2 = admin.login(totp_code=code(totp, t))
    assert admin.get(s2, "/api/v1/me").json()["totp_enabled"] is True
    # ... exactly once: the same code again is a replay
    r = admin.login_raw(totp_code=code(totp, t))
    assert r.status_code == 401 and error_code(r) == "second_factor_required", r.text
    # a wrong password with a valid code is still invalid_credentials
    r = admin.login_raw(password=OWNER_PASSWORD + "x", totp_code=code(totp, t + 1))
    assert r.status_code == 401 and error_code(r) == "invalid_credentials", r.text
    admin.login(totp_code=code(totp, t + 1))

    # new recovery codes: the old set stops working
    r = admin.post(s2, "/api/v1/me/recovery-codes", {"password": "wrong-password-1"})
    assert r.status_code == 422, r.text
    r = admin.post(s2, "/api/v1/me/recovery-codes", {"password": OWNER_PASSWORD})
    assert r.status_code == 200, r.text
    fresh = r.json()["recovery_codes"]
    r = admin.login_raw(recovery_code=recovery[1])
    assert r.status_code == 401 and error_code(r) == "second_factor_required", r.text

    # disabling needs the password and a code (here a recovery code)
    r = admin.post(s2, "/api/v1/me/totp/disable", {"password": "wrong-password-1",
                                                   "code": fresh[0]})
    assert r.status_code == 422, r.text
    r = admin.post(s2, "/api/v1/me/totp/disable", {"password": OWNER_PASSWORD, "code": fresh[0]})
    assert r.status_code == 200 and r.json() == {"totp_enabled": False}, r.text
    admin.login()  # password alone again


def test_session_cookie_attributes_and_a_new_id_at_every_login(admin):
    s = requests.Session()
    r = admin.login_raw(session=s)
    assert r.status_code == 200, r.text
    me = r.json()
    assert me["user"]["email"] == OWNER_EMAIL and me["totp_enabled"] is False
    a = set_cookie_attributes(r)
    assert "httponly" in a and a["samesite"].lower() == "lax" and a["path"] == "/", a["_raw"]
    assert "secure" not in a, f"production = false: no Secure ({a['_raw']})"
    assert len(a["_value"]) >= 43, "256-bit id"

    first = a["_value"]
    r = admin.login_raw(session=s)  # signing in again while holding a session
    assert r.status_code == 200, r.text
    second = set_cookie_attributes(r)["_value"]
    assert second != first, "a new session id at every login"
    assert admin.get(admin.with_cookie(first), "/api/v1/me").status_code == 401, \
        "the id held before signing in is not reused"
    assert admin.get(s, "/api/v1/me").status_code == 200

    other = admin.login()
    assert other.cookies.get("pg_session") not in (first, second)


def test_me_lists_memberships_and_the_active_organization(admin, guard):
    s = admin.login()
    me = admin.get(s, "/api/v1/me").json()
    assert me["authenticated_via"] == "session"
    assert me["active_organization"]["id"] == guard.org_id
    assert me["memberships"] == [{"organization_id": guard.org_id,
                                  "organization_name": "e2e-org", "role": "owner"}]
    r = admin.post(s, "/api/v1/me/active-organization", {"organization_id": "org_000000000000"})
    assert r.status_code == 404 and error_code(r) == "not_found", r.text
    r = admin.post(s, "/api/v1/me/active-organization", {"organization_id": guard.org_id,
                                                         "extra": 1})
    assert r.status_code in (400, 422), "deny_unknown_fields"
    r = admin.get(None, "/api/v1/me")
    assert r.status_code == 401 and error_code(r) == "authentication_required"


def test_deleted_active_organization_requires_reauthentication(admin):
    s = admin.login()
    r = admin.post(s, "/api/v1/organizations", {"name": "short-lived"})
    assert r.status_code == 201, r.text
    org = r.json()["id"]
    r = admin.post(s, "/api/v1/me/active-organization", {"organization_id": org})
    assert r.status_code == 200 and r.json()["active_organization"]["id"] == org, r.text
    other = admin.login()  # a second session, still in the first organization
    r = s.delete(admin.url + f"/api/v1/organizations/{org}", json={}, timeout=30)
    assert r.status_code == 200, r.text
    r = admin.get(s, "/api/v1/me")
    assert r.status_code == 401 and error_code(r) == "reauthentication_required", r.text
    r = admin.get(s, "/api/v1/me")
    assert r.status_code == 401 and error_code(r) == "authentication_required", "session ended"
    assert admin.get(other, "/api/v1/me").status_code == 200


def test_password_change_rules_and_other_sessions_end(admin):
    mine, other = admin.login(), admin.login()
    cases = [
        ("abcdefgh1", "9 characters"),
        ("abcdefghijk", "no digit"),
        ("a1" + "x" * 71, "73 bytes"),
    ]
    for bad, why in cases:
        r = admin.post(mine, "/api/v1/me/password", {"current_password": OWNER_PASSWORD,
                                                     "new_password": bad})
        assert r.status_code == 422 and error_code(r) == "validation_failed", (why, r.text)
    r = admin.post(mine, "/api/v1/me/password", {"current_password": "not-the-password-1",
                                                 "new_password": "brand-new-password-7"})
    assert r.status_code == 422, r.text
    assert admin.get(other, "/api/v1/me").status_code == 200, "nothing changed yet"

    r = admin.post(mine, "/api/v1/me/password", {"current_password": OWNER_PASSWORD,
                                                 "new_password": "brand-new-password-7"})
    assert r.status_code == 200, r.text
    assert admin.get(mine, "/api/v1/me").status_code == 200, "the changing session stays"
    r = admin.get(other, "/api/v1/me")
    assert r.status_code == 401 and error_code(r) == "authentication_required"
    r = admin.login_raw()
    assert r.status_code == 401 and error_code(r) == "invalid_credentials"
    admin.login(password="brand-new-password-7")
    # a 73-byte password is refused at sign-in too, never truncated to a matching 72
    r = admin.login_raw(password="brand-new-password-7" + "x" * 53)
    assert r.status_code == 422, r.text


def test_login_failures_answer_alike_and_are_throttled(admin):
    unknown = admin.login_raw(email="nobody@example.com")
    wrong = admin.login_raw(password="wrong-password-1")
    for r in (unknown, wrong):
        assert r.status_code == 401 and error_code(r) == "invalid_credentials", r.text
    assert unknown.json() == wrong.json(), "same answer for unknown email and wrong password"

    # per account: 5 failures in the window, then 429 even with the right password
    for _ in range(4):
        assert admin.login_raw(password="wrong-password-1").status_code == 401
    r = admin.login_raw()
    assert r.status_code == 429 and error_code(r) == "throttled", r.text
    # the same for an unknown email (no account existence oracle)
    for _ in range(4):
        assert admin.login_raw(email="nobody@example.com").status_code == 401
    r = admin.login_raw(email="nobody@example.com")
    assert r.status_code == 429 and error_code(r) == "throttled", r.text

    # per client address: 20 failures, whatever the accounts
    for i in range(10):
        assert admin.login_raw(email=f"spray{i}@example.com").status_code == 401
    r = admin.login_raw(email="fresh@example.com")
    assert r.status_code == 429 and error_code(r) == "throttled", r.text


def test_unknown_email_costs_the_same_bcrypt_work_as_a_wrong_password(admin):
    """Without the dummy hash an unknown email answers in ~1 ms against ~50 ms of bcrypt cost 10;
    the bound is loose enough for a shared CI machine and still catches that shortcut."""
    def timed(**kw) -> float:
        started = time.perf_counter()
        r = admin.login_raw(**kw)
        elapsed = time.perf_counter() - started
        assert r.status_code == 401 and error_code(r) == "invalid_credentials", r.text
        return elapsed

    wrong = sorted(timed(password=f"wrong-password-{i}") for i in range(4))
    unknown = sorted(timed(email=f"nobody{i}@example.com") for i in range(4))
    median_wrong, median_unknown = (wrong[1] + wrong[2]) / 2, (unknown[1] + unknown[2]) / 2
    assert median_unknown > 0.5 * median_wrong, (unknown, wrong)
    assert median_unknown < 2.0 * median_wrong, (unknown, wrong)


def test_cookie_requests_that_change_state_must_be_json_from_the_origin(admin):
    s = admin.login()
    r = s.post(admin.url + "/api/v1/me/tokens", data='{"name": "x"}',
               headers={"Content-Type": "text/plain"}, timeout=30)
    assert r.status_code == 415 and error_code(r) == "unsupported_media_type", r.text
    r = s.post(admin.url + "/api/v1/auth/logout", timeout=30)  # no body, no content type
    assert r.status_code == 415, r.text
    r = admin.post(s, "/api/v1/me/tokens", {"name": "x"}, headers={"Origin": "https://evil.example"})
    assert r.status_code == 403 and error_code(r) == "forbidden", r.text
    r = requests.post(admin.url + "/api/v1/auth/login",
                      json={"email": OWNER_EMAIL, "password": OWNER_PASSWORD},
                      headers={"Origin": "https://evil.example"}, timeout=30)
    assert r.status_code == 403, "login CSRF: " + r.text
    r = admin.post(s, "/api/v1/me/tokens", {"name": "x"}, headers={"Origin": admin.origin})
    assert r.status_code == 201, r.text
    assert admin.get(s, "/api/v1/me", headers={"Origin": "https://evil.example"}).status_code == 200, \
        "reads are not state-changing"


def test_personal_api_token_reads_me_but_agent_tokens_never_authenticate(admin, guard):
    s = admin.login()
    r = admin.post(s, "/api/v1/me/tokens", {"name": "ci"})
    assert r.status_code == 201, r.text
    created = r.json()
    token = created["token"]
    assert token.startswith("pg_user_") and created["organization_id"] == guard.org_id

    bearer = {"Authorization": f"Bearer {token}"}
    r = requests.get(admin.url + "/api/v1/me", headers=bearer, timeout=30)
    assert r.status_code == 200, r.text
    me = r.json()
    assert me["user"]["email"] == OWNER_EMAIL and me["authenticated_via"] == "api_token"
    assert me["active_organization"]["id"] == guard.org_id

    r = requests.post(admin.url + "/api/v1/me/tokens", json={"name": "more"}, headers=bearer,
                      timeout=30)
    assert r.status_code == 403, "a token cannot mint tokens: " + r.text
    forged = token[:-1] + ("0" if token[-1] != "0" else "1")
    r = requests.get(admin.url + "/api/v1/me", headers={"Authorization": f"Bearer {forged}"},
                     timeout=30)
    assert r.status_code == 401 and error_code(r) == "authentication_required"
    agent = {"Authorization": f"Bearer {guard.tokens['a1']}"}
    r = requests.get(admin.url + "/api/v1/me", headers=agent, timeout=30)
    assert r.status_code == 401 and error_code(r) == "authentication_required", r.text


def test_auth_endpoints_are_in_the_openapi_document(admin):
    doc = requests.get(admin.url + "/api/v1/openapi.json", timeout=30).json()
    paths = doc["paths"]
    for path in ["/api/v1/auth/login", "/api/v1/auth/logout", "/api/v1/me", "/api/v1/me/password",
                 "/api/v1/me/totp/setup", "/api/v1/me/totp/confirm", "/api/v1/me/totp/disable",
                 "/api/v1/me/recovery-codes", "/api/v1/me/active-organization",
                 "/api/v1/me/tokens", "/api/v1/me/tokens/{id}", "/api/v1/me/audit",
                 "/api/v1/me/audit/verify", "/api/v1/invitations/accept"]:
        assert path in paths, path
    login = paths["/api/v1/auth/login"]["post"]
    assert set(login["responses"]) >= {"200", "401", "429"}
    schema = doc["components"]["schemas"]["LoginRequest"]
    assert set(schema["required"]) == {"email", "password"}
