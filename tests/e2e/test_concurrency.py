"""Concurrency promises (PROXY.md, POLICIES.md): under any concurrency the allowed spend never
exceeds a cap, and one Idempotency-Key pays at most once. Real threads, real SDK clients."""

from __future__ import annotations

import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

import stripe

from conftest import HTTP_TIMEOUT_SECS, header, new_run_id

AGENTS = ("a1", "a2", "a3", "a4")
REQUESTS_PER_AGENT = 25
AMOUNT = 1000
ORG_DAILY_CAP = 30000


def run_concurrently(calls):
    """Run the callables on one thread each, released together by a barrier."""
    barrier = threading.Barrier(len(calls), timeout=HTTP_TIMEOUT_SECS)

    def go(call):
        barrier.wait()
        return call()

    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        return list(pool.map(go, calls))


def attempt(client: stripe.StripeClient, params: dict, key: str | None = None) -> dict:
    """One create, folded into (status, code, pi id, intent id) so threads never raise."""
    options = {"idempotency_key": key} if key else {}
    try:
        pi = client.v1.payment_intents.create(params=params, options=options)
        return {"status": 200, "code": None, "pi": pi.id,
                "intent": header(pi.last_response.headers, "Guard-Intent")}
    except stripe.StripeError as e:
        body = e.json_body if isinstance(e.json_body, dict) else {}
        err = body.get("error", {})
        return {"status": e.http_status, "code": err.get("code"), "pi": None,
                "exception": f"{type(e).__name__}: {e}",
                "intent": (err.get("guard") or {}).get("intent"), "body": e.http_body,
                "should_retry": header(e.headers, "Stripe-Should-Retry")}


def test_concurrent_agents_never_exceed_org_cap(guard_factory, localstripe):
    guard = guard_factory(agents=AGENTS, caps=[dict(scope="org", currency="usd",
                                                    interval="daily", limit=ORG_DAILY_CAP,
                                                    on_exceed="deny")])
    run = new_run_id()
    params = {"amount": AMOUNT, "currency": "usd", "metadata": {"run": run}}
    clients = {a: guard.client(a) for a in AGENTS}
    calls = [(lambda c=clients[a]: attempt(c, params))
             for a in AGENTS for _ in range(REQUESTS_PER_AGENT)]

    results = run_concurrently(calls)

    allowed = [r for r in results if r["status"] == 200]
    denied = [r for r in results if r["status"] == 403]
    others = [r for r in results if r["status"] not in (200, 403)]
    assert others == [], others[:3]
    assert all(r["code"] == "guard_policy_denied" for r in denied), denied[:3]
    assert len(allowed) * AMOUNT <= ORG_DAILY_CAP
    assert len(allowed) == ORG_DAILY_CAP // AMOUNT  # the cap is filled exactly, not undershot

    upstream = localstripe.payment_intents_of_run(run)
    assert sorted(p["id"] for p in upstream) == sorted(r["pi"] for r in allowed)
    assert sum(p["amount"] for p in upstream) == len(allowed) * AMOUNT

    guard.stop()
    intents = guard.intents()
    assert len(intents) == len(results)
    succeeded = [i for i in intents if i["status"] == "succeeded"]
    assert sum(i["amount"] for i in succeeded) == len(allowed) * AMOUNT
    assert sorted(i["id"] for i in succeeded) == sorted(r["intent"] for r in allowed)
    assert sorted(i["id"] for i in intents if i["status"] == "denied") == sorted(
        r["intent"] for r in denied)
    # Every agent was decided on; the cap is the organization's, not one agent's.
    assert {i["agent"] for i in intents} == set(guard.agent_ids.values())


def test_concurrent_same_key_forwards_once(guard, localstripe):
    run, key = new_run_id(), str(uuid.uuid4())
    params = {"amount": 4200, "currency": "usd", "metadata": {"run": run}}
    client = guard.client()

    results = run_concurrently([lambda: attempt(client, params, key)] * 50)

    ok = [r for r in results if r["status"] == 200]
    busy = [r for r in results if r["status"] == 409]
    assert len(ok) + len(busy) == len(results), [r for r in results
                                                 if r["status"] not in (200, 409)][:3]
    assert all(r["code"] == "guard_request_in_progress" for r in busy), busy[:3]
    # 409 invites the SDK's own retry with the same key (PROXY.md), unlike guard decisions.
    assert all(r["should_retry"] != "false" for r in busy), busy[:3]
    assert len({r["pi"] for r in ok}) <= 1

    final = attempt(client, params, key)
    assert final["status"] == 200, final
    assert all(r["pi"] == final["pi"] for r in ok)
    assert [p["id"] for p in localstripe.payment_intents_of_run(run)] == [final["pi"]]

    guard.stop()
    [stored] = guard.intents()
    assert stored["status"] == "succeeded" and stored["idempotency_key"] == key
    assert stored["id"] == final["intent"]

