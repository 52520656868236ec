"""RELIABILITY.md promise 4, upstream faults: rail down, slow past the timeout, 500s, connection
reset mid-response. The intent is `unknown` with its reservation held, the agent gets `502
guard_upstream_unavailable`, and a retry with the same Idempotency-Key, once the fault is gone,
resolves it without paying twice.

A `FaultProxy` (fault_proxy.py) sits between the guard and localstripe. Every fault is answered
by the proxy itself, *before* anything reaches localstripe: localstripe ignores
`Idempotency-Key`, so a fault injected after it created the PaymentIntent would make the guard's
correct retry (same upstream key, which real Stripe deduplicates) create a second one there and
the "exactly one PaymentIntent" assertion would test localstripe, not the guard. What the guard
controls is still checked: both attempts carry the same intent-derived upstream
`Idempotency-Key`.
"""

from __future__ import annotations

import time
import uuid

import pytest
import requests

from conftest import HTTP_TIMEOUT_SECS, form, new_run_id
from fault_proxy import FaultProxy

UPSTREAM_TIMEOUT_SECS = 2
CAP = 1500
AMOUNT = 1000

FAULTS = {
    # connection refused: the proxy's listening socket is closed
    "refused": ("refuse", {}),
    # accepted, the request read, never answered: the upstream timeout fires
    "timeout": ("hang", {}),
    # a complete 500 from the rail
    "http_500": ("status", {"status": 500}),
    # status line, headers and part of the body, then RST
    "reset_mid_response": ("reset", {}),
    # headers at once, then one body byte every 250 ms: past the timeout
    "slow_body": ("trickle", {"interval": 0.25}),
}


@pytest.fixture
def fault_proxy(localstripe):
    fp = FaultProxy(localstripe.url).start()
    yield fp
    fp.stop()


def pay(guard, key: str, run: str, amount: int = AMOUNT) -> requests.Response:
    body = form([("amount", amount), ("currency", "usd"), ("payment_method_types[0]", "card"),
                 ("metadata[run]", run), ("metadata[key]", key)])
    return guard.raw_post("/v1/payment_intents", body, idempotency_key=key)


@pytest.mark.parametrize("fault", list(FAULTS))
def test_upstream_fault_is_502_unknown_and_retry_pays_once(fault, guard_factory, fault_proxy,
                                                           localstripe):
    mode, params = FAULTS[fault]
    guard = guard_factory(upstream_url=fault_proxy.url,
                          env={"GUARD_UPSTREAM_TIMEOUT_SECS": str(UPSTREAM_TIMEOUT_SECS)},
                          caps=[dict(scope="org", currency="usd", interval="daily", limit=CAP,
                                     on_exceed="deny")])
    run, key = new_run_id(), str(uuid.uuid4())

    fault_proxy.set_mode(mode, **params)
    started = time.monotonic()
    first = pay(guard, key, run)
    took = time.monotonic() - started

    assert first.status_code == 502, (fault, first.status_code, first.text)
    assert first.json()["error"]["code"] == "guard_upstream_unavailable", first.text
    assert first.headers.get("Guard-Decision") == "allow"
    assert first.headers.get("Stripe-Should-Retry") != "false"  # 502 invites the SDK's retry
    intent_id = first.headers.get("Guard-Intent")
    assert intent_id and intent_id.startswith("int_"), dict(first.headers)
    # The timeout bounds how long the agent waits (generous slack for a loaded machine).
    assert took < UPSTREAM_TIMEOUT_SECS + 8, took
    assert guard.intent(intent_id)["status"] == "unknown"
    assert localstripe.payment_intents_of_run(run) == []

    # Reservation held: the unknown 1000 still counts, so another 1000 exceeds the 1500 cap.
    other = pay(guard, str(uuid.uuid4()), run)
    assert other.status_code == 403, other.text
    assert other.json()["error"]["code"] == "guard_policy_denied"

    # A replay while the fault persists does not make up an answer: still 502, same intent.
    if fault == "http_500":
        again = pay(guard, key, run)
        assert again.status_code == 502 and again.headers.get("Guard-Intent") == intent_id, (
            again.status_code, again.text)

    fault_proxy.clear()
    retry = pay(guard, key, run)
    assert retry.status_code == 200, (retry.status_code, retry.text)
    assert retry.headers.get("Guard-Intent") == intent_id
    pi = retry.json()
    assert pi["id"].startswith("pi_") and pi["amount"] == AMOUNT
    assert [p["id"] for p in localstripe.payment_intents_of_run(run)] == [pi["id"]]
    assert guard.intent(intent_id)["status"] == "succeeded"

    # Another replay returns the stored success byte for byte and reaches nobody.
    forwarded = len(fault_proxy.requests("/v1/payment_intents"))
    replay = pay(guard, key, run)
    assert (replay.status_code, replay.content) == (200, retry.content)
    assert len(fault_proxy.requests("/v1/payment_intents")) == forwarded
    assert [p["id"] for p in localstripe.payment_intents_of_run(run)] == [pi["id"]]

    # Every attempt the rail saw for this intent carried the same intent-derived upstream key.
    attempts = [s for s in fault_proxy.requests("/v1/payment_intents")
                if f"metadata%5Bkey%5D={key}" in s.body.decode() or
                f"metadata[key]={key}" in s.body.decode()]
    expected_attempts = 1 if fault == "refused" else (3 if fault == "http_500" else 2)
    assert len(attempts) == expected_attempts, [(a.mode, a.path) for a in attempts]
    assert {a.headers.get("idempotency-key") for a in attempts} == {f"pg-{intent_id}"}
    assert all(a.headers.get("authorization") == "Bearer sk_test_payment_guard_e2e"
               for a in attempts)
    assert [a.forwarded for a in attempts] == [False] * (expected_attempts - 1) + [True]

    guard.stop()
    stored = {i["id"]: i for i in guard.intents()}
    assert len(stored) == 2, stored
    mine = stored[intent_id]
    assert mine["status"] == "succeeded" and mine["upstream_id"] == pi["id"], mine
    assert mine["reservation"] and mine["reservation"]["released"] is False, mine
    assert mine["reservation"]["amount"] == AMOUNT
    [denied] = [i for i in stored.values() if i["id"] != intent_id]
    assert denied["status"] == "denied" and denied["reservation"] is None, denied
    events = [line for line in guard.audit_export() if intent_id in line]
    kinds = [e.split('"kind":"', 1)[1].split('"', 1)[0] for e in events]
    assert kinds[0] == "decision" and kinds[-1] == "intent.succeeded", kinds
    assert "intent.unknown" in kinds and "intent.retry" in kinds, kinds


def test_upstream_timeout_is_bounded_under_concurrency(guard_factory, fault_proxy, localstripe):
    """Several agents stuck on a hanging rail at once are all answered within the timeout."""
    import concurrent.futures as cf

    guard = guard_factory(upstream_url=fault_proxy.url, agents=("a1", "a2", "a3"),
                          env={"GUARD_UPSTREAM_TIMEOUT_SECS": str(UPSTREAM_TIMEOUT_SECS)})
    run = new_run_id()
    fault_proxy.set_mode("hang")
    keys = {a: str(uuid.uuid4()) for a in guard.tokens}

    def one(agent):
        body = form([("amount", 300), ("currency", "usd"), ("metadata[run]", run),
                     ("metadata[key]", keys[agent])])
        t0 = time.monotonic()
        r = guard.raw_post("/v1/payment_intents", body, agent=agent,
                           idempotency_key=keys[agent])
        return r, time.monotonic() - t0

    with cf.ThreadPoolExecutor(3) as pool:
        results = list(pool.map(one, list(keys)))
    for r, took in results:
        assert r.status_code == 502, r.text
        assert r.json()["error"]["code"] == "guard_upstream_unavailable"
        assert took < UPSTREAM_TIMEOUT_SECS + 8, took

    fault_proxy.clear()
    for agent, key in keys.items():
        body = form([("amount", 300), ("currency", "usd"), ("metadata[run]", run),
                     ("metadata[key]", key)])
        r = guard.raw_post("/v1/payment_intents", body, agent=agent, idempotency_key=key)
        assert r.status_code == 200, r.text
    assert len(localstripe.payment_intents_of_run(run)) == 3
    assert HTTP_TIMEOUT_SECS > UPSTREAM_TIMEOUT_SECS
