"""Undecided holds expire (PROXY.md step 6, `holds.expire_after_secs`): the expiry worker moves
them to `expired` with an audit event, the agent's retry with the same key gets 410
`guard_approval_expired`, and a late approval is refused."""

from __future__ import annotations

import uuid

from admin_client import describe, error_code, hold_amount, owner, proxy_payment
from conftest import new_run_id

EXPIRE_AFTER_SECS = 1
# The worker checks every 5 s (HOLD_EXPIRY_CHECK_SECS in src/serve.rs): the deadline covers
# expiry plus two checks.
EXPIRY_DEADLINE_SECS = EXPIRE_AFTER_SECS + 12


def test_undecided_hold_expires_then_retry_is_410_and_approval_refused(guard_factory, localstripe):
    guard = guard_factory(env={"GUARD_HOLDS_EXPIRE_AFTER_SECS": str(EXPIRE_AFTER_SECS)})
    boss = owner(guard)
    run, key = new_run_id(), str(uuid.uuid4())

    first = proxy_payment(guard, hold_amount(), run=run, key=key)
    assert first.status_code == 402, describe(first)
    intent_id = first.json()["error"]["guard"]["intent"]

    expired = boss.wait_intent(intent_id, lambda i: i["status"] == "expired",
                               deadline_secs=EXPIRY_DEADLINE_SECS, what="expired")
    assert expired["status"] == "expired", expired

    retry = proxy_payment(guard, hold_amount(), run=run, key=key)
    assert retry.status_code == 410, describe(retry)
    assert error_code(retry) == "guard_approval_expired", describe(retry)
    assert retry.headers.get("Stripe-Should-Retry") == "false"
    assert retry.headers.get("Guard-Intent") == intent_id

    late = boss.post(f"/api/v1/intents/{intent_id}/approve", {})
    assert late.status_code == 409, describe(late)
    assert localstripe.payment_intents_of_run(run) == []
    kinds = [e["kind"] for e in boss.audit_events() if e["data"].get("intent") == intent_id]
    assert kinds.count("intent.expired") == 1, kinds
    assert boss.expect("GET", "/api/v1/audit/verify")["ok"] is True
