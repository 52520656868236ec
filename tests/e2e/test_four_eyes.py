"""Four eyes that are really four (issue #12, items 1-4): invitations instead of chosen
passwords, quorums of members accepted before the hold, step-up TOTP on every decision, the kill
switch re-checked at approve, deny and the executor's claim, throttling that holds under
concurrency and behind a trusted proxy, and personal API tokens bound to one organization.

Real HTTP against the real binary, pyotp for every TOTP code, localstripe as the rail. Each test
asserts the exact status and error code, and what was (not) stored.
"""

from __future__ import annotations

import concurrent.futures
import time

import pyotp
import requests

from admin_client import (MEMBER_PASSWORD, OWNER_EMAIL, AdminClient, accept_invitation,
                          admin_url, describe, error_code, human, new_hold, owner)
from conftest import HTTP_TIMEOUT_SECS, OWNER_PASSWORD, TEST_POLICY, new_run_id
from fault_proxy import FaultProxy

FOUR_EYES_POLICY = TEST_POLICY.replace(
    '@hold("payments over 500.00 need a human")',
    '@hold("payments over 500.00 need two humans") @approvals("2")')

PUPPET_PASSWORD = "puppet-Password-1357"


def kinds(client: AdminClient) -> list[str]:
    return [e["kind"] for e in client.audit_events()]


def accept_raw(guard, body: dict, headers: dict | None = None) -> requests.Response:
    return requests.post(admin_url(guard) + "/api/v1/invitations/accept", json=body,
                         headers=headers or {}, timeout=HTTP_TIMEOUT_SECS)


def login_raw(guard, email: str, password: str, headers: dict | None = None,
              totp_code: str | None = None) -> requests.Response:
    body = {"email": email, "password": password}
    if totp_code is not None:
        body["totp_code"] = totp_code
    return requests.post(admin_url(guard) + "/api/v1/auth/login", json=body,
                         headers=headers or {}, timeout=HTTP_TIMEOUT_SECS)


def enroll_2fa(client: AdminClient, password: str,
               codes: list[str] | None = None) -> pyotp.TOTP:
    """Enrol the signed-in user; returns their authenticator (and appends the recovery codes to
    `codes`). The confirmation spends the current step: the next usable code is the next
    step's (`next_code`), accepted within the ±1 step of skew."""
    setup = client.expect("POST", "/api/v1/me/totp/setup", {"password": password})
    totp = pyotp.TOTP(setup["secret"])
    confirmed = client.expect("POST", "/api/v1/me/totp/confirm", {"code": totp.now()})
    if codes is not None:
        codes.extend(confirmed["recovery_codes"])
    return totp


def next_code(totp: pyotp.TOTP, steps: int = 1) -> str:
    """The code of a later step (accepted with ±1 step of skew, never spent yet)."""
    return totp.at(time.time() + 30 * steps)


# ---------------------------------------------------------------------------- 1. invitations


def test_no_human_chooses_another_humans_password(guard):
    boss = owner(guard)
    before = kinds(boss)
    r = boss.post("/api/v1/members", {"email": "victim@example.com", "role": "approver",
                                      "initial_password": "chosen-By-Admin-1"})
    assert r.status_code in (400, 422), describe(r)
    assert error_code(r) in ("bad_request", "validation_failed"), describe(r)
    assert "victim@example.com" not in [m["email"] for m in boss.expect("GET", "/api/v1/members")["data"]]
    assert boss.expect("GET", "/api/v1/invitations")["data"] == []
    assert login_raw(guard, "victim@example.com", "chosen-By-Admin-1").status_code == 401
    assert kinds(boss) == before


def test_invitation_answer_is_the_same_whether_or_not_the_email_has_an_account(guard_factory):
    guard = guard_factory()
    boss = owner(guard)
    # `known@example.com` has an account (a member of a second organization of the owner).
    org2 = boss.expect("POST", "/api/v1/organizations", {"name": "other"}, status=201)
    boss.switch_org(org2["id"])
    boss.invite("known@example.com", "viewer")
    boss.switch_org(guard.org_id)

    known = boss.invite_only("known@example.com", "approver")
    unknown = boss.invite_only("nobody-yet@example.com", "approver")
    assert set(known) == set(unknown), (known, unknown)
    for inv in (known, unknown):
        assert inv["status"] == "pending" and inv["role"] == "approver"
        assert inv["invited_by"]["email"] == OWNER_EMAIL
        assert inv["accepted_by"] is None and inv["accepted_at"] is None
    # Membership exists only after acceptance.
    emails = [m["email"] for m in boss.expect("GET", "/api/v1/members")["data"]]
    assert "known@example.com" not in emails and "nobody-yet@example.com" not in emails
    listed = {i["email"]: i for i in boss.expect("GET", "/api/v1/invitations")["data"]}
    assert listed["known@example.com"]["status"] == "pending"
    assert "token" not in listed["known@example.com"], "the token is shown once, at creation"


def test_the_invitee_sets_their_own_password_and_the_trail_says_who_invited_whom(guard):
    boss = owner(guard)
    inv = boss.invite_only("newcomer@example.com", "approver")
    # A password that breaks the rules is refused and changes nothing.
    r = accept_raw(guard, {"token": inv["token"], "password": "short1"})
    assert r.status_code == 422 and error_code(r) == "validation_failed", describe(r)
    accepted = accept_invitation(admin_url(guard), inv["token"], "newcomer-Pass-97531")
    assert accepted["new_account"] is True and accepted["role"] == "approver"
    assert accepted["organization_id"] == guard.org_id
    # The token is one-time.
    r = accept_raw(guard, {"token": inv["token"], "password": "newcomer-Pass-97531"})
    assert r.status_code == 404 and error_code(r) == "invitation_invalid", describe(r)
    me = human(guard, "newcomer@example.com", "newcomer-Pass-97531")
    assert me.me["memberships"][0]["role"] == "approver"
    member = next(m for m in boss.expect("GET", "/api/v1/members")["data"]
                  if m["email"] == "newcomer@example.com")
    assert member["invited_by"]["email"] == OWNER_EMAIL and member["accepted_at"]
    events = boss.audit_events()
    invited = next(e for e in events if e["kind"] == "member.invited")
    added = [e for e in events if e["kind"] == "member.added"][-1]
    assert invited["actor"]["id"] == boss.user_id() and invited["data"]["email"] == "newcomer@example.com"
    assert added["actor"]["id"] == accepted["user_id"]
    assert added["data"]["invited_by"] == boss.user_id()
    assert added["data"]["invitation"] == inv["id"]
    listed = {i["id"]: i for i in boss.expect("GET", "/api/v1/invitations")["data"]}
    assert listed[inv["id"]]["status"] == "accepted"
    assert listed[inv["id"]]["accepted_by"] == accepted["user_id"]


def test_an_existing_account_joins_only_with_its_own_password_and_second_factor(guard):
    boss = owner(guard)
    org2 = boss.expect("POST", "/api/v1/organizations", {"name": "second"}, status=201)
    boss.switch_org(org2["id"])
    boss.invite("dana@example.com", "viewer", password=MEMBER_PASSWORD)
    dana = human(guard, "dana@example.com", MEMBER_PASSWORD)
    totp = enroll_2fa(dana, MEMBER_PASSWORD)
    boss.switch_org(guard.org_id)
    inv = boss.invite_only("dana@example.com", "approver")

    r = accept_raw(guard, {"token": inv["token"], "password": "someone-Elses-1"})
    assert r.status_code == 401 and error_code(r) == "invalid_credentials", describe(r)
    r = accept_raw(guard, {"token": inv["token"], "password": MEMBER_PASSWORD})
    assert r.status_code == 401 and error_code(r) == "second_factor_required", describe(r)
    assert "dana@example.com" not in [m["email"] for m in boss.expect("GET", "/api/v1/members")["data"]]
    accepted = accept_invitation(admin_url(guard), inv["token"], MEMBER_PASSWORD,
                                 totp_code=next_code(totp))
    assert accepted["new_account"] is False
    assert accepted["user_id"] == dana.user_id()


def test_a_revoked_or_unknown_invitation_opens_nothing(guard):
    boss = owner(guard)
    inv = boss.invite_only("late@example.com", "viewer")
    revoked = boss.expect("DELETE", f"/api/v1/invitations/{inv['id']}")
    assert revoked["status"] == "revoked"
    for token in (inv["token"], "pg_inv_0123456789abcdef_" + "0" * 64, "pg_inv_nope", ""):
        r = accept_raw(guard, {"token": token, "password": "late-Password-2468"})
        assert r.status_code == 404 and error_code(r) == "invitation_invalid", describe(r)
    assert login_raw(guard, "late@example.com", "late-Password-2468").status_code == 401
    assert "member.invitation_revoked" in kinds(boss)


def test_an_invitation_dies_with_its_inviters_authority(guard):
    boss = owner(guard)
    mallory = boss.invite("mallory@example.com", "admin")
    mal = human(guard, "mallory@example.com", MEMBER_PASSWORD, label="mallory")
    kept = mal.invite_only("mallory2@example.com", "admin")
    demoted = mal.invite_only("mallory3@example.com", "viewer")
    # Mallory is removed: her pending invitation no longer opens anything.
    boss.expect("DELETE", f"/api/v1/members/{mallory['user_id']}")
    r = accept_raw(guard, {"token": kept["token"], "password": "mallory-Back-2468"})
    assert r.status_code == 404 and error_code(r) == "invitation_invalid", describe(r)
    # An Admin demoted to Viewer cannot grant anything either.
    boss.invite("ann@example.com", "admin")
    ann = human(guard, "ann@example.com", MEMBER_PASSWORD, label="ann")
    ann_inv = ann.invite_only("ann2@example.com", "approver")
    ann_id = next(m["user_id"] for m in boss.expect("GET", "/api/v1/members")["data"]
                  if m["email"] == "ann@example.com")
    boss.expect("PATCH", f"/api/v1/members/{ann_id}", {"role": "viewer"})
    r = accept_raw(guard, {"token": ann_inv["token"], "password": "ann2-Password-2468"})
    assert r.status_code == 404 and error_code(r) == "invitation_invalid", describe(r)
    emails = [m["email"] for m in boss.expect("GET", "/api/v1/members")["data"]]
    assert not {"mallory2@example.com", "mallory3@example.com", "ann2@example.com"} & set(emails)
    del demoted


def test_credential_events_go_to_the_users_own_trail_not_to_the_orgs_that_added_them(guard):
    boss = owner(guard)
    boss.invite("erin@example.com", "viewer")
    erin = human(guard, "erin@example.com", MEMBER_PASSWORD)
    before = boss.audit_events()
    erin.expect("POST", "/api/v1/me/password", {"current_password": MEMBER_PASSWORD,
                                                "new_password": "erin-New-Pass-8642"})
    enroll_2fa(erin, "erin-New-Pass-8642")
    after = boss.audit_events()
    new_kinds = [e["kind"] for e in after[len(before):]]
    assert not [k for k in new_kinds if k.startswith("user.")], new_kinds
    own = erin.expect("GET", "/api/v1/me/audit")["data"]
    own_kinds = [e["kind"] for e in own]
    assert own_kinds[:1] == ["user.created"], own_kinds
    for k in ("user.invitation_accepted", "user.password_changed", "user.2fa_enabled"):
        assert k in own_kinds, own_kinds
    assert all(e["user"] == erin.user_id() for e in own)
    report = erin.expect("GET", "/api/v1/me/audit/verify")
    assert report["ok"] is True and report["events"] == len(own), report


# ---------------------------------------------------------------------------- 2. approvals


def test_an_admin_cannot_invite_a_puppet_to_be_the_second_approver(guard_factory):
    guard = guard_factory(policy=FOUR_EYES_POLICY)
    boss = owner(guard)
    boss.invite("adam@example.com", "admin")
    adam = human(guard, "adam@example.com", MEMBER_PASSWORD, label="adam")
    intent_id = new_hold(guard, run=new_run_id())
    adam.expect("POST", f"/api/v1/intents/{intent_id}/approve", {})
    # Adam invites a puppet and accepts the invitation himself.
    inv = adam.invite_only("puppet@example.com", "approver")
    accept_invitation(admin_url(guard), inv["token"], PUPPET_PASSWORD)
    puppet = human(guard, "puppet@example.com", PUPPET_PASSWORD, label="puppet")
    r = puppet.post(f"/api/v1/intents/{intent_id}/approve", {})
    assert r.status_code == 403 and error_code(r) == "joined_after_hold", describe(r)
    r = puppet.post(f"/api/v1/intents/{intent_id}/deny", {})
    assert r.status_code == 403 and error_code(r) == "joined_after_hold", describe(r)
    i = boss.intent(intent_id)
    assert i["status"] == "pending_approval" and len(i["approvals"]) == 1, i
    # What the approver sees: who created the agent, who invited each human who decided.
    ctx = i["context"]
    assert ctx["agent"]["id"] == guard.agent_ids["a1"]
    assert [d["user"]["email"] for d in ctx["decisions"]] == ["adam@example.com"]
    assert ctx["decisions"][0]["invited_by"]["email"] == OWNER_EMAIL
    # A member who was there before the hold completes the quorum.
    boss.expect("POST", f"/api/v1/intents/{intent_id}/approve", {})
    assert boss.intent(intent_id)["status"] in ("approved", "forwarding", "succeeded")


def test_the_approver_sees_who_created_the_requesting_agent(guard):
    boss = owner(guard)
    agent = boss.create_agent("made-by-owner")
    intent_id = new_hold(guard, run=new_run_id(), token=agent["token"])
    ctx = boss.intent(intent_id)["context"]
    assert ctx["agent"]["id"] == agent["id"]
    assert ctx["agent"]["created_by"] == {"id": boss.user_id(), "email": OWNER_EMAIL}
    assert ctx["decisions"] == []


def test_step_up_every_decision_carries_a_fresh_totp_code(guard):
    boss = owner(guard)
    boss.invite("sam@example.com", "approver")
    sam = human(guard, "sam@example.com", MEMBER_PASSWORD, label="sam")
    # Enrolling needs the password again.
    r = sam.post("/api/v1/me/totp/setup", {})
    assert r.status_code in (400, 422), describe(r)
    r = sam.post("/api/v1/me/totp/setup", {"password": "not-Sams-Pass-1"})
    assert r.status_code == 422 and error_code(r) == "validation_failed", describe(r)
    codes: list[str] = []
    totp = enroll_2fa(sam, MEMBER_PASSWORD, codes)
    spent = totp.now()  # the step the confirmation spent
    boss.expect("PATCH", f"/api/v1/organizations/{guard.org_id}",
                {"require_2fa_for_approvals": True})
    # Sign in with a recovery code, so the next TOTP step stays unspent for the decision.
    sam = AdminClient.for_guard(guard, label="sam")
    r = sam.post("/api/v1/auth/login", {"email": "sam@example.com", "password": MEMBER_PASSWORD,
                                        "recovery_code": codes[0]})
    assert r.status_code == 200, describe(r)
    intent_id = new_hold(guard, run=new_run_id())

    # Enrolled and signed in with 2FA is not enough.
    r = sam.post(f"/api/v1/intents/{intent_id}/approve", {})
    assert r.status_code == 403 and error_code(r) == "step_up_required", describe(r)
    # A code already spent is not fresh.
    r = sam.post(f"/api/v1/intents/{intent_id}/approve", {"totp_code": spent})
    assert r.status_code == 403 and error_code(r) == "step_up_failed", describe(r)
    r = sam.post(f"/api/v1/intents/{intent_id}/deny", {"totp_code": "000000"})
    assert r.status_code == 403 and error_code(r) == "step_up_failed", describe(r)
    i = boss.intent(intent_id)
    assert i["status"] == "pending_approval" and i["approvals"] == [], i
    assert [e for e in boss.audit_events() if e["kind"].startswith("intent.appro")] == []
    fresh = next_code(totp)
    sam.expect("POST", f"/api/v1/intents/{intent_id}/approve", {"totp_code": fresh})
    approved = [e for e in boss.audit_events() if e["kind"] == "intent.approved"]
    assert approved[-1]["data"]["step_up"] is True
    # And the same code cannot decide a second hold.
    second = new_hold(guard, run=new_run_id())
    r = sam.post(f"/api/v1/intents/{second}/deny", {"totp_code": fresh})
    assert r.status_code == 403 and error_code(r) == "step_up_failed", describe(r)
    assert boss.intent(second)["status"] == "pending_approval"


def test_a_frozen_organization_or_agent_stops_decisions(guard):
    boss = owner(guard)
    intent_id = new_hold(guard, run=new_run_id())
    boss.expect("POST", f"/api/v1/organizations/{guard.org_id}/freeze")
    for verb in ("approve", "deny"):
        r = boss.post(f"/api/v1/intents/{intent_id}/{verb}", {})
        assert r.status_code == 409 and error_code(r) == "organization_frozen", describe(r)
    boss.expect("POST", f"/api/v1/organizations/{guard.org_id}/unfreeze")
    agent_id = guard.agent_ids["a1"]
    boss.expect("POST", f"/api/v1/agents/{agent_id}/freeze")
    r = boss.post(f"/api/v1/intents/{intent_id}/approve", {})
    assert r.status_code == 409 and error_code(r) == "agent_frozen", describe(r)
    boss.expect("POST", f"/api/v1/agents/{agent_id}/revoke")
    r = boss.post(f"/api/v1/intents/{intent_id}/approve", {})
    assert r.status_code == 409 and error_code(r) == "agent_revoked", describe(r)
    i = boss.intent(intent_id)
    assert i["status"] == "pending_approval" and i["approvals"] == [], i
    assert "intent.approved" not in kinds(boss)


def test_a_frozen_organizations_approved_hold_is_cancelled_at_the_claim(guard_factory, localstripe):
    """The executor sends approved holds one at a time. While it is stuck on a first hold (the
    rail hangs), a second is approved and the organization frozen: the executor's claim of the
    second must meet the kill switch and cancel it, never send it."""
    with FaultProxy(localstripe.url) as rail:
        guard = guard_factory(upstream_url=rail.url, env={"GUARD_UPSTREAM_TIMEOUT_SECS": "3"})
        boss = owner(guard)
        first, second = new_hold(guard, run=new_run_id()), new_hold(guard, run=(run := new_run_id()))
        rail.set_mode("hang")
        boss.expect("POST", f"/api/v1/intents/{first}/approve", {})
        rail.wait_for(lambda seen: any(r.path == "/v1/payment_intents" for r in seen),
                      timeout=30, what="the executor sending the first hold")
        boss.expect("POST", f"/api/v1/intents/{second}/approve", {})
        assert boss.intent(second)["status"] == "approved"
        boss.expect("POST", f"/api/v1/organizations/{guard.org_id}/freeze")
        rail.set_mode("pass")
        i = boss.wait_intent(second, lambda i: i["status"] != "approved", deadline_secs=30,
                             what="claimed")
        assert i["status"] == "denied", i
        assert "organization is frozen" in i["reason"], i
        assert i["upstream_status"] is None and i["upstream_id"] is None, i
        events = boss.audit_events()
        cancelled = [e for e in events if e["kind"] == "intent.cancelled"]
        assert [e["data"]["intent"] for e in cancelled] == [second], cancelled
        executing = [e["data"]["intent"] for e in events if e["kind"] == "intent.executing"]
        assert second not in executing and first in executing, executing
        sent = [r for r in rail.requests("/v1/payment_intents")]
        assert len(sent) == 1, [(r.method, r.path) for r in sent]
        assert localstripe.payment_intents_of_run(run) == []


# ---------------------------------------------------------------------------- 3. throttling


def test_wrong_sign_ins_by_anyone_do_not_lock_a_signed_in_approver_out_of_deciding(guard):
    boss = owner(guard)
    boss.invite("val@example.com", "approver")
    val = human(guard, "val@example.com", MEMBER_PASSWORD, label="val")
    codes: list[str] = []
    totp = enroll_2fa(val, MEMBER_PASSWORD, codes)
    boss.expect("PATCH", f"/api/v1/organizations/{guard.org_id}",
                {"require_2fa_for_approvals": True})
    intent_id = new_hold(guard, run=new_run_id())
    # An attacker spends Val's sign-in budget.
    for i in range(5):
        assert login_raw(guard, "val@example.com", f"wrong-{i}-Password").status_code == 401
    assert login_raw(guard, "val@example.com", MEMBER_PASSWORD).status_code == 429
    # Val, signed in, still decides with her step-up code.
    i = val.expect("POST", f"/api/v1/intents/{intent_id}/deny", {"totp_code": next_code(totp)})
    assert i["status"] == "denied", i



def test_concurrent_guesses_are_counted_before_bcrypt(guard):
    owner(guard)  # the admin API is up
    guesses = 16

    def guess(i: int) -> int:
        return login_raw(guard, OWNER_EMAIL, f"wrong-guess-{i}").status_code

    with concurrent.futures.ThreadPoolExecutor(max_workers=guesses) as pool:
        codes = list(pool.map(guess, range(guesses)))
    assert codes.count(401) == 5 and codes.count(429) == guesses - 5, codes
    # The account is throttled now, even with the right password.
    assert login_raw(guard, OWNER_EMAIL, OWNER_PASSWORD).status_code == 429


def test_throttling_buckets_clients_behind_a_trusted_proxy(guard_factory):
    guard = guard_factory(env={"GUARD_ADMIN_TRUSTED_PROXIES": "127.0.0.1"})
    owner(guard)
    attacker = {"X-Forwarded-For": "203.0.113.66"}
    for i in range(20):
        r = login_raw(guard, f"nobody{i}@example.com", "wrong-Password-1", headers=attacker)
        assert r.status_code == 401, describe(r)
    r = login_raw(guard, "nobody-more@example.com", "wrong-Password-1", headers=attacker)
    assert r.status_code == 429 and error_code(r) == "throttled", describe(r)
    # Another client behind the same proxy still signs in.
    r = login_raw(guard, OWNER_EMAIL, OWNER_PASSWORD, headers={"X-Forwarded-For": "198.51.100.7"})
    assert r.status_code == 200, describe(r)
    # The client cannot pick its own bucket: the proxy's appended entry is what counts.
    spoof = {"X-Forwarded-For": "198.51.100.7, 203.0.113.66"}
    r = login_raw(guard, OWNER_EMAIL, OWNER_PASSWORD, headers=spoof)
    assert r.status_code == 429, describe(r)


def test_without_trusted_proxies_forwarded_for_is_ignored(guard):
    owner(guard)
    for i in range(20):
        r = login_raw(guard, f"x{i}@example.com", "wrong-Password-1",
                      headers={"X-Forwarded-For": f"198.51.100.{i}"})
        assert r.status_code == 401, describe(r)
    r = login_raw(guard, OWNER_EMAIL, OWNER_PASSWORD, headers={"X-Forwarded-For": "192.0.2.1"})
    assert r.status_code == 429, describe(r)


def test_password_change_and_2fa_actions_are_throttled(guard):
    boss = owner(guard)
    for i in range(5):
        r = boss.post("/api/v1/me/password", {"current_password": f"wrong-Pass-{i}",
                                              "new_password": "another-Pass-999"})
        assert r.status_code == 422, describe(r)
    r = boss.post("/api/v1/me/password", {"current_password": OWNER_PASSWORD,
                                          "new_password": "another-Pass-999"})
    assert r.status_code == 429 and error_code(r) == "throttled", describe(r)
    r = boss.post("/api/v1/me/recovery-codes", {"password": OWNER_PASSWORD})
    assert r.status_code == 429, describe(r)
    r = boss.post("/api/v1/me/totp/setup", {"password": OWNER_PASSWORD})
    assert r.status_code == 429, describe(r)
    # Nothing changed: the old password still signs in once the window is over (not waited
    # for here); the audit shows no change.
    assert "user.password_changed" not in [e["kind"] for e in
                                           boss.expect("GET", "/api/v1/me/audit")["data"]]


# ---------------------------------------------------------------------------- 4. API tokens


def test_api_tokens_are_bound_to_their_organization(guard):
    boss = owner(guard)
    org2 = boss.expect("POST", "/api/v1/organizations", {"name": "elsewhere"}, status=201)
    token = boss.create_api_token("bound")
    bot = AdminClient.for_guard(guard, token=token, label="bot")
    assert [o["id"] for o in bot.expect("GET", "/api/v1/organizations")["data"]] == [guard.org_id]
    for method, path, body in (
            ("PATCH", f"/api/v1/organizations/{org2['id']}", {"name": "taken"}),
            ("POST", f"/api/v1/organizations/{org2['id']}/freeze", None),
            ("DELETE", f"/api/v1/organizations/{org2['id']}", None)):
        r = bot.call(method, path, body)
        assert r.status_code == 404 and error_code(r) == "not_found", describe(r)
    r = bot.post("/api/v1/organizations", {"name": "spawned"})
    assert r.status_code == 403, describe(r)
    r = bot.post("/api/v1/me/active-organization", {"organization_id": org2["id"]})
    assert r.status_code == 403, describe(r)
    # Nor does it see the user's other organizations or their own trail.
    me = bot.expect("GET", "/api/v1/me")
    assert [m["organization_id"] for m in me["memberships"]] == [guard.org_id], me
    assert bot.get("/api/v1/me/audit").status_code == 403
    orgs = {o["id"]: o for o in boss.expect("GET", "/api/v1/organizations")["data"]}
    assert orgs[org2["id"]]["name"] == "elsewhere" and orgs[org2["id"]]["frozen"] is False
    assert len(orgs) == 2


def test_api_tokens_are_listed_revoked_and_ended_by_a_password_change_or_2fa_reset(guard):
    boss = owner(guard)
    boss.invite("tess@example.com", "admin")
    tess = human(guard, "tess@example.com", MEMBER_PASSWORD, label="tess")
    t1, t2 = tess.create_api_token("one"), tess.create_api_token("two")
    listed = tess.expect("GET", "/api/v1/me/tokens")["data"]
    assert [t["name"] for t in listed] == ["one", "two"]
    assert all(t["organization_id"] == guard.org_id and "token" not in t for t in listed)
    assert all(t1 not in str(t) for t in listed)
    # Revoke one through the API.
    tess.expect("DELETE", f"/api/v1/me/tokens/{listed[0]['id']}")
    r = AdminClient.for_guard(guard, token=t1).get("/api/v1/agents")
    assert r.status_code == 401, describe(r)
    assert AdminClient.for_guard(guard, token=t2).get("/api/v1/agents").status_code == 200
    r = tess.delete(f"/api/v1/me/tokens/{listed[0]['id']}")
    assert r.status_code == 404, describe(r)
    # A password change ends the rest.
    tess.expect("POST", "/api/v1/me/password", {"current_password": MEMBER_PASSWORD,
                                                "new_password": "tess-New-Pass-1357"})
    assert AdminClient.for_guard(guard, token=t2).get("/api/v1/agents").status_code == 401
    assert tess.expect("GET", "/api/v1/me/tokens")["data"] == []
    # So does a 2FA reset.
    totp = enroll_2fa(tess, "tess-New-Pass-1357")
    t3 = tess.create_api_token("three")
    tess.expect("POST", "/api/v1/me/totp/disable", {"password": "tess-New-Pass-1357",
                                                    "code": next_code(totp)})
    assert AdminClient.for_guard(guard, token=t3).get("/api/v1/agents").status_code == 401
    own = [e["kind"] for e in tess.expect("GET", "/api/v1/me/audit")["data"]]
    assert "user.password_changed" in own and "user.2fa_disabled" in own


def test_removing_a_member_ends_their_tokens_there(guard):
    boss = owner(guard)
    member = boss.invite("rita@example.com", "admin")
    rita = human(guard, "rita@example.com", MEMBER_PASSWORD)
    token = rita.create_api_token("rita-bot")
    boss.expect("DELETE", f"/api/v1/members/{member['user_id']}")
    # Re-invited later, the old token does not come back to life.
    inv = boss.invite_only("rita@example.com", "admin")
    accept_invitation(admin_url(guard), inv["token"], MEMBER_PASSWORD)
    r = AdminClient.for_guard(guard, token=token).get("/api/v1/agents")
    assert r.status_code == 401, describe(r)
