"""Holds and human approvals (PROXY.md steps 5-6, ADMIN_API.md, POLICIES.md `@approvals`).

stripe-python is the agent (through the proxy), localstripe is the rail, and humans act through
the admin API with their own signed-in sessions. Each test asserts what the agent sees (status,
error code), the intent as the admin API shows it, what reached localstripe (its PaymentIntent
list filtered by this test's metadata[run] tag), and the audit trail.
"""

from __future__ import annotations

import threading
import time
import uuid

import pyotp
import pytest
import stripe

from admin_client import (MEMBER_PASSWORD, AdminClient, describe, error_code, hold_amount, human,
                          owner, proxy_payment)
from conftest import (HOLD_THRESHOLD, POLL_INTERVAL_SECS, TEST_POLICY, error_of, header,
                      new_run_id)

DECIDE_DEADLINE_SECS = 30
PREFER_WAIT_SECS = 20


def create_pi(client: stripe.StripeClient, amount: int, run: str, key: str):
    return client.v1.payment_intents.create(
        params={"amount": amount, "currency": "usd", "payment_method_types": ["card"],
                "metadata": {"run": run}},
        options={"idempotency_key": key},
    )


def held(client: stripe.StripeClient, amount: int, run: str, key: str) -> dict:
    """Submit as the agent; the guard must hold it: 402 guard_approval_required."""
    with pytest.raises(stripe.CardError) as info:
        create_pi(client, amount, run, key)
    exc = info.value
    err = error_of(exc)
    assert exc.http_status == 402 and err["code"] == "guard_approval_required", exc.http_body
    assert err["guard"]["decision"] == "hold", exc.http_body
    assert header(exc.headers, "Guard-Intent") == err["guard"]["intent"], dict(exc.headers)
    return err


def approver(guard, boss: AdminClient, email: str, role: str = "approver") -> AdminClient:
    boss.invite(email, role)
    return human(guard, email, MEMBER_PASSWORD, label=email)


def succeeded(i: dict) -> bool:
    return i["status"] in ("succeeded", "failed", "unknown", "denied", "expired")


def audit_by_kind(client: AdminClient, kind: str) -> list[dict]:
    return [e for e in client.audit_events() if e["kind"] == kind]


def assert_audit_verifies(client: AdminClient) -> None:
    report = client.expect("GET", "/api/v1/audit/verify")
    assert report["ok"] is True, report


# ---------------------------------------------------------------------------- approve


def test_over_cap_hold_approved_by_an_approver_executes_upstream_exactly_once(guard, localstripe):
    boss = owner(guard)
    cap = boss.expect("POST", "/api/v1/caps", {"scope": "org", "currency": "usd",
                                                "interval": "daily", "limit": 10000,
                                                "on_exceed": "hold"}, status=201)
    alice = approver(guard, boss, "alice@example.com")
    agent, run, key = guard.client(), new_run_id(), str(uuid.uuid4())
    amount = 20000
    assert amount < HOLD_THRESHOLD, "held by the cap, not by the policy"

    err = held(agent, amount, run, key)
    intent_id = err["guard"]["intent"]
    assert cap["id"] in str(err["guard"]["caps"]), err
    assert boss.intent(intent_id)["status"] == "pending_approval"
    assert localstripe.payment_intents_of_run(run) == []

    decided = alice.expect("POST", f"/api/v1/intents/{intent_id}/approve",
                           {"comment": "expected invoice"})
    assert decided["id"] == intent_id
    assert decided["status"] in ("approved", "forwarding", "succeeded"), decided

    final = alice.wait_intent(intent_id, succeeded, deadline_secs=DECIDE_DEADLINE_SECS,
                              what="settled")
    assert final["status"] == "succeeded", final
    upstream = localstripe.payment_intents_of_run(run)
    assert len(upstream) == 1, f"the executor created {len(upstream)} payments upstream"
    assert upstream[0]["amount"] == amount
    assert final["upstream_id"] == upstream[0]["id"], final
    assert [(a["user"], a["verdict"]) for a in final["approvals"]] == [
        (alice.user_id(), "approve")], final

    # The agent's retry with the same key gets the stored response: the same PaymentIntent.
    pi = create_pi(agent, amount, run, key)
    assert pi.id == upstream[0]["id"]
    assert header(pi.last_response.headers, "Guard-Intent") == intent_id
    assert len(localstripe.payment_intents_of_run(run)) == 1, "the retry paid a second time"

    assert_audit_verifies(boss)
    approved = [e for e in audit_by_kind(boss, "intent.approved")
                if e["data"].get("intent") == intent_id]
    assert len(approved) == 1, approved
    assert approved[0]["actor"] == {"type": "user", "id": alice.user_id()}, approved


def test_denied_hold_is_403_guard_approval_denied_on_retry(guard, localstripe):
    boss = owner(guard)
    bob = approver(guard, boss, "bob@example.com")
    agent, run, key = guard.client(), new_run_id(), str(uuid.uuid4())

    intent_id = held(agent, hold_amount(), run, key)["guard"]["intent"]
    decided = bob.expect("POST", f"/api/v1/intents/{intent_id}/deny", {"comment": "not ours"})
    assert decided["status"] == "denied", decided

    with pytest.raises(stripe.PermissionError) as info:
        create_pi(agent, hold_amount(), run, key)
    exc = info.value
    assert exc.http_status == 403, exc.http_body
    assert error_of(exc)["code"] == "guard_approval_denied", exc.http_body
    assert header(exc.headers, "Stripe-Should-Retry") == "false", dict(exc.headers)

    # A late approval cannot resurrect it.
    r = boss.post(f"/api/v1/intents/{intent_id}/approve", {})
    assert r.status_code == 409 and error_code(r) == "conflict", describe(r)
    assert boss.intent(intent_id)["status"] == "denied"
    assert localstripe.payment_intents_of_run(run) == []
    assert_audit_verifies(boss)
    denied = [e for e in audit_by_kind(boss, "intent.denied") if e["data"].get("intent") == intent_id]
    assert [e["actor"] for e in denied] == [{"type": "user", "id": bob.user_id()}], denied


# ---------------------------------------------------------------------------- four eyes


FOUR_EYES_POLICY = TEST_POLICY.replace(
    '@hold("payments over 500.00 need a human")',
    '@hold("payments over 500.00 need two humans") @approvals("2")')


def test_approvals_2_needs_two_different_humans(guard, localstripe):
    assert FOUR_EYES_POLICY != TEST_POLICY
    boss = owner(guard)
    stored = boss.expect("PUT", "/api/v1/policies", {"text": FOUR_EYES_POLICY})
    assert stored["active"] is True, stored
    carol = approver(guard, boss, "carol@example.com")
    dave = approver(guard, boss, "dave@example.com", role="admin")
    agent, run, key = guard.client(), new_run_id(), str(uuid.uuid4())

    intent_id = held(agent, hold_amount(), run, key)["guard"]["intent"]
    assert boss.intent(intent_id)["approvals_required"] == 2

    first = carol.expect("POST", f"/api/v1/intents/{intent_id}/approve", {})
    assert first["status"] == "pending_approval" and len(first["approvals"]) == 1, first

    # The same human twice is still one human.
    r = carol.post(f"/api/v1/intents/{intent_id}/approve", {})
    assert r.status_code == 409 and error_code(r) == "conflict", describe(r)
    i = boss.intent(intent_id)
    assert i["status"] == "pending_approval" and len(i["approvals"]) == 1, i
    assert localstripe.payment_intents_of_run(run) == []

    # A second, different human completes it.
    second = dave.expect("POST", f"/api/v1/intents/{intent_id}/approve", {})
    assert second["status"] in ("approved", "forwarding", "succeeded"), second
    final = boss.wait_intent(intent_id, succeeded, deadline_secs=DECIDE_DEADLINE_SECS,
                             what="settled")
    assert final["status"] == "succeeded", final
    assert [a["user"] for a in final["approvals"]] == [carol.user_id(), dave.user_id()], final
    upstream = localstripe.payment_intents_of_run(run)
    assert len(upstream) == 1 and upstream[0]["id"] == final["upstream_id"], upstream

    assert_audit_verifies(boss)
    events = [e for e in boss.audit_events() if e["data"].get("intent") == intent_id
              and e["kind"] in ("intent.approval_recorded", "intent.approved")]
    assert [(e["kind"], e["actor"]["id"]) for e in events] == [
        ("intent.approval_recorded", carol.user_id()),
        ("intent.approved", dave.user_id())], events


# ---------------------------------------------------------------------------- Prefer: wait


def test_prefer_wait_returns_the_real_response_when_approved_in_time(guard, localstripe):
    boss = owner(guard)
    erin = approver(guard, boss, "erin@example.com")
    run, key = new_run_id(), str(uuid.uuid4())
    outcome: dict = {}

    def approve_when_pending():
        try:
            deadline = time.monotonic() + PREFER_WAIT_SECS
            while time.monotonic() < deadline:
                pending = erin.expect("GET", "/api/v1/intents",
                                      params={"status": "pending_approval"})["data"]
                mine = [i for i in pending if (i.get("metadata") or {}).get("run") == run]
                if mine:
                    outcome["intent"] = mine[0]["id"]
                    outcome["approval"] = erin.call(
                        "POST", f"/api/v1/intents/{mine[0]['id']}/approve", {})
                    return
                time.sleep(POLL_INTERVAL_SECS)
            outcome["error"] = "the held request never showed up as pending_approval"
        except Exception as e:  # reported by the main thread
            outcome["error"] = repr(e)

    t = threading.Thread(target=approve_when_pending, daemon=True)
    t.start()
    started = time.monotonic()
    r = proxy_payment(guard, hold_amount(), run=run, key=key,
                      headers={"Prefer": f"wait={PREFER_WAIT_SECS}"},
                      timeout=PREFER_WAIT_SECS + 20)
    elapsed = time.monotonic() - started
    t.join(timeout=PREFER_WAIT_SECS + 5)

    assert "error" not in outcome, outcome
    assert outcome["approval"].status_code == 200, describe(outcome["approval"])
    assert r.status_code == 200, f"expected the real upstream answer: {r.status_code} {r.text}"
    assert elapsed < PREFER_WAIT_SECS, f"answered after {elapsed:.1f}s, not when approved"
    pi = r.json()
    assert pi["object"] == "payment_intent" and pi["amount"] == hold_amount(), pi
    assert r.headers.get("Guard-Intent") == outcome["intent"], dict(r.headers)
    upstream = localstripe.payment_intents_of_run(run)
    assert [p["id"] for p in upstream] == [pi["id"]], upstream
    assert boss.intent(outcome["intent"])["status"] == "succeeded"

    # Replaying the same request answers the same bytes' worth: the same PaymentIntent.
    again = proxy_payment(guard, hold_amount(), run=run, key=key)
    assert again.status_code == 200 and again.json()["id"] == pi["id"], again.text
    assert len(localstripe.payment_intents_of_run(run)) == 1


# ---------------------------------------------------------------------------- 2FA for approvers


def test_org_requiring_2fa_refuses_approval_without_2fa(guard, localstripe):
    boss = owner(guard)
    frank = approver(guard, boss, "frank@example.com")
    org = boss.expect("PATCH", f"/api/v1/organizations/{guard.org_id}",
                      {"require_2fa_for_approvals": True})
    assert org["require_2fa_for_approvals"] is True, org
    agent, run, key = guard.client(), new_run_id(), str(uuid.uuid4())
    intent_id = held(agent, hold_amount(), run, key)["guard"]["intent"]

    assert frank.whoami()["totp_enabled"] is False
    # Without 2FA (and so without a step-up code) neither an Approver nor the Owner may decide.
    for who in (frank, boss):
        for verb in ("approve", "deny"):
            r = who.post(f"/api/v1/intents/{intent_id}/{verb}", {})
            assert r.status_code == 403 and error_code(r) == "step_up_required", (
                f"{who.label} {verb}: {describe(r)}")
    # A code from an account without 2FA proves nothing.
    r = frank.post(f"/api/v1/intents/{intent_id}/approve", {"totp_code": "123456"})
    assert r.status_code == 403 and error_code(r) == "step_up_failed", describe(r)
    i = boss.intent(intent_id)
    assert i["status"] == "pending_approval" and i["approvals"] == [], i
    assert localstripe.payment_intents_of_run(run) == []

    # Once Frank turns on 2FA, the same session may approve with a fresh code (not the one
    # spent confirming 2FA: a code is accepted once in its window, so use the next step's).
    setup = frank.expect("POST", "/api/v1/me/totp/setup", {"password": MEMBER_PASSWORD})
    totp = pyotp.TOTP(setup["secret"])
    frank.expect("POST", "/api/v1/me/totp/confirm", {"code": totp.now()})
    assert frank.whoami()["totp_enabled"] is True
    r = frank.post(f"/api/v1/intents/{intent_id}/approve", {})
    assert r.status_code == 403 and error_code(r) == "step_up_required", describe(r)
    assert boss.intent(intent_id)["approvals"] == []
    frank.expect("POST", f"/api/v1/intents/{intent_id}/approve",
                 {"totp_code": totp.at(time.time() + 30)})
    final = boss.wait_intent(intent_id, succeeded, deadline_secs=DECIDE_DEADLINE_SECS,
                             what="settled")
    assert final["status"] == "succeeded", final
    assert len(localstripe.payment_intents_of_run(run)) == 1
    approved = [e for e in audit_by_kind(boss, "intent.approved")
                if e["data"]["intent"] == intent_id]
    assert [e["data"]["step_up"] for e in approved] == [True], approved
    assert_audit_verifies(boss)
