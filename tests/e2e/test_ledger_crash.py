"""Issue 13: human decisions and the executor's claim are ledger commands, group-committed
through the writer's log like decisions. An approval that was answered survives a `kill -9`, and
the hold it approved is paid exactly once: by the executor after the restart, or — when the kill
caught it mid-execution (`forwarding`, then `unknown` at restart) — by the agent's retry with the
same key, which reuses the intent's upstream idempotency key.

stripe-python is the agent, localstripe the rail, the admin API the humans. localstripe ignores
`Idempotency-Key` and real Stripe does not, so the rail sits behind `FaultProxy(idempotent=True)`
(as in test_crash.py), which deduplicates by key as Stripe does; the guard's part is to resend
with the same key, and the proxy's log shows it did.
"""

from __future__ import annotations

import signal
import uuid

import pytest
import stripe

from admin_client import MEMBER_PASSWORD, human, owner
from conftest import HOLD_THRESHOLD, error_of, new_run_id, wait_for_port
from fault_proxy import FaultProxy

ROUNDS = 4
SETTLED = ("succeeded", "unknown")


def create_pi(client: stripe.StripeClient, amount: int, run: str, key: str):
    return client.v1.payment_intents.create(
        params={"amount": amount, "currency": "usd", "payment_method_types": ["card"],
                "metadata": {"run": run}},
        options={"idempotency_key": key},
    )


def kill_and_restart(guard) -> None:
    guard.proc.send_signal(signal.SIGKILL)
    guard.proc.wait(timeout=10)
    guard.proc = None
    guard.start()
    wait_for_port(guard.admin_port, guard.proc, "payment-guard admin API", guard.log)


@pytest.fixture
def rail(localstripe):
    fp = FaultProxy(localstripe.url, idempotent=True).start()
    try:
        yield fp
    finally:
        fp.stop()


def test_an_answered_approval_survives_kill_9_and_the_hold_is_paid_once(guard_factory, rail,
                                                                        localstripe):
    guard = guard_factory(upstream_url=rail.url)
    boss = owner(guard)
    boss.invite("alice@example.com", "approver")
    alice = human(guard, "alice@example.com", MEMBER_PASSWORD)
    agent = guard.client()
    amount = HOLD_THRESHOLD + 100
    caught = 0  # rounds the kill caught mid-execution
    for n in range(ROUNDS):
        run, key = new_run_id(), str(uuid.uuid4())
        with pytest.raises(stripe.CardError) as info:
            create_pi(agent, amount, run, key)
        err = error_of(info.value)
        assert info.value.http_status == 402 and err["code"] == "guard_approval_required", err
        intent_id = err["guard"]["intent"]

        decided = alice.expect("POST", f"/api/v1/intents/{intent_id}/approve",
                               {"comment": f"round {n}"})
        assert decided["status"] in ("approved", "forwarding", "succeeded"), decided
        # The approval was answered: it is durable. Kill at once, before or while the executor
        # works on it.
        kill_and_restart(guard)

        after = alice.wait_intent(intent_id, lambda i: i["status"] in SETTLED,
                                  deadline_secs=30, what="executed or unknown")
        assert [a["verdict"] for a in after["approvals"]] == ["approve"], after
        if after["status"] == "unknown":
            # Caught mid-execution: the agent's retry sends it again with the same upstream key.
            caught += 1
            pi = create_pi(agent, amount, run, key)
            assert pi.status in ("requires_payment_method", "requires_confirmation",
                                 "succeeded"), pi
            after = alice.intent(intent_id)
        assert after["status"] == "succeeded", after
        upstream = localstripe.payment_intents_of_run(run)
        assert len(upstream) == 1, f"round {n}: {len(upstream)} payments at the rail"
        assert after["upstream_id"] == upstream[0]["id"], after
        # A retry now replays the stored answer: still one payment.
        assert create_pi(agent, amount, run, key).id == upstream[0]["id"]
        assert len(localstripe.payment_intents_of_run(run)) == 1

    print(f"{caught} of {ROUNDS} approved holds were caught mid-execution by the kill")
    approved = [e for e in boss.audit_events() if e["kind"] == "intent.approved"]
    assert len(approved) == ROUNDS, approved
    verify = boss.expect("GET", "/api/v1/audit/verify")
    assert verify["ok"] is True, verify
