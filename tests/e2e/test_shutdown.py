"""OPERATIONS.md "Shutdown": SIGTERM stops accepting, finishes in-flight requests (bounded),
flushes the store and exits 0. The rail is slowed down by a `FaultProxy` so requests are
provably in flight (the proxy has received them) when the signal arrives.
"""

from __future__ import annotations

import signal
import threading
import time
import uuid

import pytest
import requests

from conftest import HTTP_TIMEOUT_SECS, form, new_run_id, tail
from fault_proxy import FaultProxy

IN_FLIGHT = 4
RAIL_DELAY_SECS = 1.0
EXIT_BOUND_SECS = 15  # rail delay + a loaded 2-core machine
# serve.rs: graceful_shutdown_timeout_seconds = 10; a stuck request must not hold the exit longer.
STUCK_EXIT_BOUND_SECS = 25


@pytest.fixture
def fault_proxy(localstripe):
    fp = FaultProxy(localstripe.url).start()
    yield fp
    fp.stop()


def pay(guard, agent: str, key: str, run: str, amount: int, out: dict) -> None:
    body = form([("amount", amount), ("currency", "usd"), ("metadata[run]", run),
                 ("metadata[key]", key)])
    try:
        out[key] = guard.raw_post("/v1/payment_intents", body, agent=agent, idempotency_key=key)
    except requests.RequestException as e:
        out[key] = e


def test_sigterm_finishes_in_flight_requests_and_exits_0(guard_factory, fault_proxy,
                                                         localstripe):
    agents = tuple(f"a{i}" for i in range(1, IN_FLIGHT + 1))
    # The drain ends when the last request does; a roomy grace keeps a loaded machine's slow
    # requests inside it (the exit bound below still holds the drain to account).
    guard = guard_factory(upstream_url=fault_proxy.url, agents=agents,
                          env={"GUARD_PROXY_SHUTDOWN_GRACE_SECS": "10"})
    run = new_run_id()
    fault_proxy.set_mode("pass", delay=RAIL_DELAY_SECS)
    keys = {a: str(uuid.uuid4()) for a in agents}
    results: dict = {}
    threads = [threading.Thread(target=pay, args=(guard, a, keys[a], run, 1000 + n, results))
               for n, a in enumerate(agents)]
    for t in threads:
        t.start()
    # Every request decided and forwarded: the rail holds them for RAIL_DELAY_SECS.
    fault_proxy.wait_for(lambda seen: len(seen) >= IN_FLIGHT, timeout=HTTP_TIMEOUT_SECS,
                         what=f"{IN_FLIGHT} requests at the rail")

    proc = guard.proc
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    try:
        rc = proc.wait(timeout=EXIT_BOUND_SECS)
    except Exception:
        proc.kill()
        proc.wait(timeout=10)
        raise AssertionError(f"guard did not exit within {EXIT_BOUND_SECS}s of SIGTERM\n"
                             f"{tail(guard.log)}")
    took = time.monotonic() - t0
    guard.proc = None
    for t in threads:
        t.join(timeout=HTTP_TIMEOUT_SECS)
    assert rc == 0, f"exit code {rc} after SIGTERM\n{tail(guard.log)}"

    answered = {}
    for agent, key in keys.items():
        r = results.get(key)
        assert isinstance(r, requests.Response), f"{agent}: no answer, {r!r}"
        assert r.status_code == 200, (agent, r.status_code, r.text)
        answered[r.headers["Guard-Intent"]] = r.json()["id"]
    print(f"exit {took:.2f}s after SIGTERM with {IN_FLIGHT} requests in flight")

    # The store was flushed: every answered intent is settled, and the chain verifies.
    intents = {i["id"]: i for i in guard.intents()}
    assert set(intents) == set(answered)
    for intent_id, pi in answered.items():
        assert intents[intent_id]["status"] == "succeeded", intents[intent_id]
        assert intents[intent_id]["upstream_id"] == pi
    rc, results_, stderr = guard.audit_verify()
    assert rc == 0 and all(r["ok"] for r in results_), (results_, stderr)
    assert sorted(p["id"] for p in localstripe.payment_intents_of_run(run)) == sorted(
        answered.values())

    # The next start finds nothing left forwarding and replays the stored answers.
    guard.start()
    for agent, key in keys.items():
        body = form([("amount", 1000 + list(keys).index(agent)), ("currency", "usd"),
                     ("metadata[run]", run), ("metadata[key]", key)])
        again = guard.raw_post("/v1/payment_intents", body, agent=agent, idempotency_key=key)
        assert again.status_code == 200 and again.content == results[key].content, again.text
    assert len(fault_proxy.requests("/v1/payment_intents")) == IN_FLIGHT


def test_sigterm_with_a_stuck_rail_exits_within_the_bound(guard_factory, fault_proxy,
                                                          localstripe):
    """A request the rail never answers does not hold the shutdown longer than its bound; the
    intent it leaves is `unknown` at the next start and a retry resolves it."""
    guard = guard_factory(upstream_url=fault_proxy.url,
                          env={"GUARD_UPSTREAM_TIMEOUT_SECS": "120"})
    run, key = new_run_id(), str(uuid.uuid4())
    fault_proxy.set_mode("hang")
    results: dict = {}
    t = threading.Thread(target=pay, args=(guard, "a1", key, run, 1500, results))
    t.start()
    fault_proxy.wait_for(lambda seen: len(seen) >= 1, timeout=HTTP_TIMEOUT_SECS,
                         what="the request at the rail")

    proc = guard.proc
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    try:
        rc = proc.wait(timeout=STUCK_EXIT_BOUND_SECS)
    except Exception:
        proc.kill()
        proc.wait(timeout=10)
        raise AssertionError(f"guard did not exit within {STUCK_EXIT_BOUND_SECS}s of SIGTERM "
                             f"with a stuck upstream request\n{tail(guard.log)}")
    took = time.monotonic() - t0
    guard.proc = None
    t.join(timeout=HTTP_TIMEOUT_SECS)
    print(f"exit {took:.2f}s after SIGTERM with a stuck rail, rc {rc}")
    assert rc == 0, f"exit code {rc}\n{tail(guard.log)}"
    r = results.get(key)
    # Whatever the agent got, it is not a success (the rail never answered).
    assert not (isinstance(r, requests.Response) and r.status_code == 200), r.text
    rc_v, res, stderr = guard.audit_verify()
    assert rc_v == 0 and all(x["ok"] for x in res), (res, stderr)
    [stored] = guard.intents()
    assert stored["status"] in ("forwarding", "unknown"), stored
    assert stored["reservation"] and stored["reservation"]["released"] is False

    fault_proxy.clear()
    guard.start()
    intent = guard.intent(stored["id"])
    assert intent["status"] == "unknown", intent
    body = form([("amount", 1500), ("currency", "usd"), ("metadata[run]", run),
                 ("metadata[key]", key)])
    retry = guard.raw_post("/v1/payment_intents", body, idempotency_key=key)
    assert retry.status_code == 200, retry.text
    assert retry.headers["Guard-Intent"] == stored["id"]
    assert [p["id"] for p in localstripe.payment_intents_of_run(run)] == [retry.json()["id"]]
