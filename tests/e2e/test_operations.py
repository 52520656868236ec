"""PROXY.md step 2, end to end: what the operation table makes of a request, and what follows.

The guard classifies every request through its operation table (docs/OPERATIONS.md): an action,
a class and a way to value it (fields of the body, a lookup of the object at the rail, or
"unvaluable"). These tests drive the real binary with raw HTTP (several requests here are ones
an SDK would never send) and check, for each promise, the exact status and error code, the
intent as the agent and the store see it, the spending caps that counted it, and what reached
the rail: a `FaultProxy` in `pass` mode sits between the guard and localstripe and records every
request the guard sent upstream, lookups included.

localstripe implements neither top-ups, `/v2`, subscriptions deletion nor the legacy refund
routes; where the guard forwards one of those, its 404 is what the agent gets, and the tests
assert the guard's decision and the upstream request, not localstripe's answer.
"""

from __future__ import annotations

import json
import uuid

import pytest
import requests
import stripe

from admin_client import AdminClient, owner
from conftest import (HOLD_THRESHOLD, HTTP_TIMEOUT_SECS, RAIL_KEY, REPO, TEST_POLICY, error_of,
                      form, new_run_id)
from fault_proxy import FaultProxy

FORM = "application/x-www-form-urlencoded"
JSON = "application/json"
DEFAULT_POLICY = (REPO / "policies" / "default.cedar").read_text()
SETTLE_DEADLINE_SECS = 30

ALLOW_X = ('@id("allow-x") permit (principal, action == Action::"unknown", resource) '
           'when { resource.path == "/v1/no_such_things" };\n')

CONNECTED = "acct_connected1"
AGENT_STRIPE_VERSION = "2024-06-20"

V2_OUTBOUND = {"amount": {"value": 1234, "currency": "usd"},
               "from": {"financial_account": "fa_1", "currency": "usd"},
               "to": {"recipient": "acct_1", "currency": "usd"}}


@pytest.fixture
def fault_proxy(localstripe):
    fp = FaultProxy(localstripe.url).start()
    yield fp
    fp.stop()


# ---------------------------------------------------------------------------- helpers


def call(guard, method: str, path: str, body: bytes = b"", *, content_type: str | None = FORM,
         key: str | None = "new", headers: dict | None = None, agent: str = "a1"
         ) -> requests.Response:
    """One request to the guard's proxy as the agent, exactly as given (path may carry a query).

    `key="new"` gives a mutation a fresh Idempotency-Key; `None` sends none (reads)."""
    h = {"Authorization": f"Bearer {guard.tokens[agent]}"}
    if content_type is not None and body:
        h["Content-Type"] = content_type
    if key == "new":
        key = str(uuid.uuid4()) if method in ("POST", "DELETE") else None
    if key is not None:
        h["Idempotency-Key"] = key
    h.update(headers or {})
    return requests.request(method, guard.proxy_url + path, data=body or None, headers=h,
                            timeout=HTTP_TIMEOUT_SECS)


def guard_error(r: requests.Response, status: int, code: str,
                decision: str | None = None) -> dict:
    """The guard's own Stripe-shaped error: exact status and code, never to be retried."""
    assert r.status_code == status, f"expected {status} {code}: {r.status_code} {r.text}"
    err = r.json()["error"]
    assert err["code"] == code, r.text
    assert r.headers.get("Stripe-Should-Retry") == "false", dict(r.headers)
    if decision is None:
        assert "Guard-Intent" not in r.headers, dict(r.headers)
    else:
        assert err["guard"]["decision"] == decision, r.text
        assert r.headers.get("Guard-Decision") == decision, dict(r.headers)
        assert err["guard"]["intent"].startswith("int_"), r.text
        assert r.headers.get("Guard-Intent") == err["guard"]["intent"], dict(r.headers)
    return err


def upstream(fp: FaultProxy, method: str | None = None, path: str | None = None) -> list:
    """What the rail was sent, optionally one method and path (query ignored)."""
    return [s for s in fp.requests(path) if method is None or s.method == method]


def by_id(guard) -> dict:
    """The stored intents (`intent list`, guard stopped), by id."""
    return {i["id"]: i for i in guard.intents()}


def add_cap(boss: AdminClient, **cap) -> str:
    """A cap through the admin API (the CLI cannot restrict operations)."""
    body = {"scope": "org", "currency": "usd", "interval": "daily", "on_exceed": "hold", **cap}
    created = boss.expect("POST", "/api/v1/caps", body, status=201)
    assert created["id"].startswith("cap_"), created
    for k in ("scope", "limit", "on_exceed"):
        assert created[k] == body[k], created
    return created["id"]


def settled(i: dict) -> bool:
    return i["status"] in ("succeeded", "failed", "unknown", "denied", "expired")


# ---------------------------------------------------------------------------- unknown operations


def test_unknown_mutation_is_403_guard_unknown_operation_and_never_forwarded(
        guard_factory, fault_proxy):
    """A POST the operation table does not know is refused with its own code, recorded as a
    denied intent of operation `unknown`, and nothing reaches the rail; a replay with the same
    key answers the same denial."""
    guard = guard_factory(upstream_url=fault_proxy.url)
    key = str(uuid.uuid4())
    body = form([("amount", 100), ("currency", "usd")])

    r = call(guard, "POST", "/v1/no_such_things", body, key=key)
    err = guard_error(r, 403, "guard_unknown_operation", "deny")
    intent_id = err["guard"]["intent"]
    assert err["guard"]["policies"] == [] and err["guard"]["caps"] == [], err
    seen = guard.intent(intent_id)
    assert (seen["operation"], seen["decision"], seen["status"]) == ("unknown", "deny", "denied")

    again = call(guard, "POST", "/v1/no_such_things", body, key=key)
    assert (again.status_code, again.content) == (403, r.content)
    assert again.headers.get("Guard-Intent") == intent_id

    # A DELETE of an unknown route is no different.
    d = call(guard, "DELETE", "/v1/no_such_things/nst_1")
    guard_error(d, 403, "guard_unknown_operation", "deny")

    assert upstream(fault_proxy) == [], [(s.method, s.path) for s in fault_proxy.seen]
    guard.stop()
    stored = by_id(guard)
    assert len(stored) == 2, stored
    i = stored[intent_id]
    assert (i["operation"], i["class"], i["decision"], i["status"]) == (
        "unknown", "unknown", "deny", "denied"), i
    assert i["path"] == "/v1/no_such_things" and i["method"] == "POST", i
    assert i["reservation"] is None and i["attempts"] == 0, i
    other = stored[d.headers["Guard-Intent"]]
    assert (other["method"], other["operation"], other["status"]) == (
        "DELETE", "unknown", "denied"), other


def test_policy_naming_action_unknown_lets_exactly_that_path_through(guard_factory,
                                                                     fault_proxy):
    """`permit (..., action == Action::"unknown", ...) when { resource.path == ... }` forwards
    that one unknown route (allowed, sent upstream with the intent's key) and no other."""
    guard = guard_factory(upstream_url=fault_proxy.url, policy=TEST_POLICY + ALLOW_X)
    body = form([("name", "x"), ("metadata[run]", new_run_id())])

    r = call(guard, "POST", "/v1/no_such_things", body)
    # localstripe has no such route: its 404 is the agent's answer, the decision was allow.
    assert r.headers.get("Guard-Decision") == "allow", (r.status_code, r.text, dict(r.headers))
    assert r.status_code == 404, (r.status_code, r.text)
    allowed = r.headers.get("Guard-Intent")
    assert allowed and allowed.startswith("int_"), dict(r.headers)
    seen = guard.intent(allowed)
    assert (seen["operation"], seen["decision"]) == ("unknown", "allow"), seen

    [sent] = upstream(fault_proxy, "POST", "/v1/no_such_things")
    assert sent.body == body and sent.forwarded and sent.status == 404
    assert sent.headers.get("idempotency-key") == f"pg-{allowed}"
    assert sent.headers.get("authorization") == f"Bearer {RAIL_KEY}"

    other = call(guard, "POST", "/v1/other_unknown_things", body)
    denied = guard_error(other, 403, "guard_unknown_operation", "deny")["guard"]["intent"]
    sub = call(guard, "POST", "/v1/no_such_things/nst_1", body)
    guard_error(sub, 403, "guard_unknown_operation", "deny")
    assert [(s.method, s.path) for s in upstream(fault_proxy)] == [("POST", "/v1/no_such_things")]

    guard.stop()
    stored = by_id(guard)
    a, d = stored[allowed], stored[denied]
    assert (a["decision"], a["policies"], a["status"], a["class"]) == (
        "allow", ["allow-x"], "failed", "unknown"), a
    assert (d["decision"], d["status"], d["operation"]) == ("deny", "denied", "unknown"), d


# ---------------------------------------------------------------------------- request shape


def test_post_with_query_string_is_400_and_nothing_is_decided(guard_factory, fault_proxy):
    """Stripe merges a POST's query string into its parameters, out of the guard's sight: a POST
    with one is refused before anything is decided or forwarded, and no intent is recorded."""
    guard = guard_factory(upstream_url=fault_proxy.url)
    body = form([("amount", 100), ("currency", "usd")])

    for path in ("/v1/payment_intents?amount=999999", "/v1/refunds?charge=ch_1",
                 "/v1/no_such_things?x=1"):
        r = call(guard, "POST", path, body)
        err = guard_error(r, 400, "guard_query_string_not_allowed")
        assert err["type"] == "invalid_request_error", err

    assert upstream(fault_proxy) == [], [(s.method, s.path) for s in fault_proxy.seen]
    guard.stop()
    assert guard.intents() == []


def test_body_of_the_wrong_content_type_is_415(guard_factory, fault_proxy):
    """`/v1` bodies are form-encoded and `/v2` bodies JSON; a non-empty body of another type
    is 415 guard_unsupported_content_type, undecided and never forwarded."""
    guard = guard_factory(upstream_url=fault_proxy.url)

    cases = [
        ("/v1/payment_intents", json.dumps({"amount": 100, "currency": "usd"}).encode(), JSON),
        ("/v1/payment_intents", b"amount=100&currency=usd", "text/plain"),
        ("/v2/money_management/outbound_payments",
         form([("amount[value]", 1234), ("amount[currency]", "usd")]), FORM),
        ("/v2/money_management/outbound_payments", json.dumps(V2_OUTBOUND).encode(),
         "text/plain"),
    ]
    for path, body, ctype in cases:
        r = call(guard, "POST", path, body, content_type=ctype)
        err = guard_error(r, 415, "guard_unsupported_content_type")
        assert err["type"] == "invalid_request_error", (path, ctype, err)

    assert upstream(fault_proxy) == [], [(s.method, s.path) for s in fault_proxy.seen]
    guard.stop()
    assert guard.intents() == []


# ---------------------------------------------------------------------------- DELETE parameters


def test_delete_parameters_travel_in_the_query_and_are_classified(guard_factory, fault_proxy):
    """A DELETE's parameters are its query string, as the SDKs send them: cancelling a
    subscription with `invoice_now=true` bills a final invoice the guard cannot value. Under
    the default policy set it is a held `subscriptions.delete` (commit_money, valued false);
    after approval the executor sends it with its query, once."""
    guard = guard_factory(upstream_url=fault_proxy.url, policy=DEFAULT_POLICY)

    r = call(guard, "DELETE", "/v1/subscriptions/sub_x?invoice_now=true")
    err = guard_error(r, 402, "guard_approval_required", "hold")
    billed = err["guard"]["intent"]
    assert err["guard"]["policies"] == ["commitments-need-a-human"], err
    seen = guard.intent(billed)
    assert (seen["operation"], seen["status"], seen["amount"]) == (
        "subscriptions.delete", "pending_approval", None), seen

    # The same route without parameters is valued (it moves nothing); still a commitment.
    plain = call(guard, "DELETE", "/v1/subscriptions/sub_y")
    plain_id = guard_error(plain, 402, "guard_approval_required", "hold")["guard"]["intent"]
    assert upstream(fault_proxy) == [], [(s.method, s.path) for s in fault_proxy.seen]

    boss = owner(guard)
    boss.expect("POST", f"/api/v1/intents/{billed}/approve", {"comment": "end of contract"})
    final = boss.wait_intent(billed, settled, deadline_secs=SETTLE_DEADLINE_SECS, what="settled")
    # localstripe does not implement DELETE /v1/subscriptions/{id}: a definitive 404.
    assert final["status"] == "failed", final
    [sent] = upstream(fault_proxy, "DELETE")
    assert sent.path == "/v1/subscriptions/sub_x?invoice_now=true", sent.path
    assert sent.headers.get("idempotency-key") == f"pg-{billed}"

    guard.stop()
    stored = by_id(guard)
    i = stored[billed]
    assert (i["operation"], i["class"], i["valued"]) == (
        "subscriptions.delete", "commit_money", False), i
    assert (i["method"], i["path"], i["query"]) == (
        "DELETE", "/v1/subscriptions/sub_x", "invoice_now=true"), i
    p = stored[plain_id]
    assert (p["operation"], p["class"], p["valued"], p["status"]) == (
        "subscriptions.delete", "commit_money", True, "pending_approval"), p


def test_stripe_python_sends_delete_parameters_and_v2_json_the_guard_understands(
        guard_factory, fault_proxy):
    """The official SDK as the agent: `subscriptions.cancel(..., invoice_now=True)` on a
    connected account is a DELETE whose parameters are in the query, and a `/v2` outbound
    payment is a JSON body; the guard classifies and values both from what the SDK sent."""
    guard = guard_factory(upstream_url=fault_proxy.url, policy=DEFAULT_POLICY,
                          caps=[dict(scope="org", currency="usd", interval="daily", limit=1000,
                                     on_exceed="hold")])
    [cap] = guard.cap_ids
    client = guard.client()

    with pytest.raises(stripe.StripeError) as info:
        client.v1.subscriptions.cancel(
            "sub_sdk", params={"invoice_now": True},
            options={"idempotency_key": str(uuid.uuid4()), "stripe_account": CONNECTED})
    exc = info.value
    assert exc.http_status == 402, exc.http_body
    err = error_of(exc)
    assert err["code"] == "guard_approval_required", exc.http_body
    cancel_id = err["guard"]["intent"]

    with pytest.raises(stripe.StripeError) as info:
        client.v2.money_management.outbound_payments.create(params=V2_OUTBOUND)
    exc = info.value
    assert exc.http_status == 402, exc.http_body
    body = json.loads(exc.http_body)
    assert body["error"]["code"] == "guard_approval_required", exc.http_body
    assert body["error"]["guard"]["caps"] == [cap], exc.http_body
    v2_id = body["error"]["guard"]["intent"]

    assert upstream(fault_proxy) == [], [(s.method, s.path) for s in fault_proxy.seen]
    guard.stop()
    stored = by_id(guard)
    c = stored[cancel_id]
    assert (c["method"], c["path"], c["operation"], c["class"], c["valued"], c["account"]) == (
        "DELETE", "/v1/subscriptions/sub_sdk", "subscriptions.delete", "commit_money", False,
        CONNECTED), c
    assert "invoice_now=true" in c["query"], c["query"]
    v = stored[v2_id]
    assert (v["operation"], v["amount"], v["currency"], v["counterparty"], v["caps"]) == (
        "v2.money_management.outbound_payments.create", 1234, "usd", "acct_1", [cap]), v
    assert ["content-type", JSON] in [[k, val.split(";")[0]] for k, val in v["request_headers"]]


# ---------------------------------------------------------------------------- valuation


def test_refund_through_a_charges_legacy_route_is_valued_and_capped(guard_factory, fault_proxy,
                                                                    localstripe):
    """`POST /v1/charges/{ch}/refunds` and `/refund` are `refunds.create`: without an amount
    the guard looks the charge up at the rail and values the refund at what is left to refund,
    and a cap restricted to `refunds.create` counts it (and not the charge itself)."""
    guard = guard_factory(upstream_url=fault_proxy.url)
    boss = owner(guard)
    cap = add_cap(boss, limit=2000, operations=["refunds.create"])
    run = new_run_id()

    # 3000 charged: more than the cap, which does not count charges.
    r = call(guard, "POST", "/v1/charges", form([("amount", 3000), ("currency", "usd"),
                                                 ("source", "pm_card_visa"),
                                                 ("metadata[run]", run)]))
    assert r.status_code == 200 and r.headers.get("Guard-Decision") == "allow", r.text
    charge = r.json()
    ch = charge["id"]
    assert ch.startswith("ch_") and charge["status"] == "succeeded", charge

    # A partial refund through the pinned route: 500 of the cap's 2000, forwarded.
    part = call(guard, "POST", "/v1/refunds", form([("charge", ch), ("amount", 500)]))
    assert part.status_code == 200 and part.headers.get("Guard-Decision") == "allow", part.text
    assert part.json()["amount"] == 500
    part_id = part.headers["Guard-Intent"]
    assert (guard.intent(part_id)["operation"], guard.intent(part_id)["amount"]) == (
        "refunds.create", 500)

    # The rest through the legacy routes, no amount: 2500 left, 500 + 2500 > 2000: held.
    held = {}
    for route in ("refunds", "refund"):
        before = len(upstream(fault_proxy, "GET", f"/v1/charges/{ch}"))
        r = call(guard, "POST", f"/v1/charges/{ch}/{route}", b"")
        err = guard_error(r, 402, "guard_approval_required", "hold")
        assert err["guard"]["caps"] == [cap], err
        held[route] = err["guard"]["intent"]
        seen = guard.intent(held[route])
        assert (seen["operation"], seen["amount"], seen["currency"]) == (
            "refunds.create", 2500, "usd"), seen
        # The guard read the charge at the rail, with the rail key, to value the refund.
        lookups = upstream(fault_proxy, "GET", f"/v1/charges/{ch}")
        assert len(lookups) > before, [(s.method, s.path) for s in fault_proxy.seen]
        assert lookups[-1].headers.get("authorization") == f"Bearer {RAIL_KEY}"

    assert upstream(fault_proxy, "POST", f"/v1/charges/{ch}/refunds") == []
    assert upstream(fault_proxy, "POST", f"/v1/charges/{ch}/refund") == []
    assert [s.status for s in upstream(fault_proxy, "POST", "/v1/refunds")] == [200]

    guard.stop()
    stored = by_id(guard)
    for route, intent_id in held.items():
        i = stored[intent_id]
        assert (i["operation"], i["class"], i["amount"], i["currency"], i["counted"]) == (
            "refunds.create", "move_money", 2500, "usd", 2500), (route, i)
        assert (i["counterparty"], i["valued"], i["status"]) == (
            ch, True, "pending_approval"), (route, i)
        assert i["caps"] == [cap], i
    p = stored[part_id]
    assert (p["status"], p["counted"], p["caps"]) == ("succeeded", 500, []), p
    assert p["reservation"] and p["reservation"]["released"] is False, p


def test_refund_cap_with_on_exceed_deny_refuses_the_full_refund(guard_factory, fault_proxy):
    """The same valuation under a denying cap: the full refund of a 3000 charge through
    `/v1/charges/{ch}/refund` is 403 guard_policy_denied naming the cap, never forwarded."""
    guard = guard_factory(upstream_url=fault_proxy.url)
    cap = add_cap(owner(guard), limit=2999, on_exceed="deny", operations=["refunds.create"])

    r = call(guard, "POST", "/v1/charges", form([("amount", 3000), ("currency", "usd"),
                                                 ("source", "pm_card_visa")]))
    assert r.status_code == 200, r.text
    ch = r.json()["id"]

    r = call(guard, "POST", f"/v1/charges/{ch}/refund", b"")
    err = guard_error(r, 403, "guard_policy_denied", "deny")
    assert err["guard"]["caps"] == [cap], err
    seen = guard.intent(err["guard"]["intent"])
    assert (seen["operation"], seen["amount"], seen["currency"], seen["status"]) == (
        "refunds.create", 3000, "usd", "denied"), seen
    assert upstream(fault_proxy, "POST", f"/v1/charges/{ch}/refund") == []


def test_topup_is_move_money_counted_toward_a_usd_cap(guard_factory, fault_proxy):
    """`POST /v1/topups` is `topups.create`, move_money, valued from amount and currency: a usd
    cap counts it (over the limit: held, not forwarded), a top-up that fits is forwarded."""
    guard = guard_factory(upstream_url=fault_proxy.url,
                          caps=[dict(scope="org", currency="usd", interval="daily", limit=1000,
                                     on_exceed="hold")])
    [cap] = guard.cap_ids

    r = call(guard, "POST", "/v1/topups", form([("amount", 5000), ("currency", "usd"),
                                                ("description", "float")]))
    err = guard_error(r, 402, "guard_approval_required", "hold")
    assert err["guard"]["caps"] == [cap], err
    held = err["guard"]["intent"]
    seen = guard.intent(held)
    assert (seen["operation"], seen["amount"], seen["currency"], seen["status"]) == (
        "topups.create", 5000, "usd", "pending_approval"), seen
    assert upstream(fault_proxy) == []

    # Within the cap: allowed and forwarded (localstripe has no top-ups: 404, released).
    small = call(guard, "POST", "/v1/topups", form([("amount", 600), ("currency", "usd")]))
    assert small.headers.get("Guard-Decision") == "allow", (small.status_code, small.text)
    [sent] = upstream(fault_proxy, "POST", "/v1/topups")
    assert sent.body == form([("amount", 600), ("currency", "usd")])

    guard.stop()
    stored = by_id(guard)
    h = stored[held]
    assert (h["operation"], h["class"], h["amount"], h["currency"], h["counted"], h["valued"]) == (
        "topups.create", "move_money", 5000, "usd", 5000, True), h
    assert h["caps"] == [cap], h
    s = stored[small.headers["Guard-Intent"]]
    assert (s["operation"], s["decision"], s["amount"]) == ("topups.create", "allow", 600), s


def test_v2_json_outbound_payment_is_valued_from_its_json_body(guard_factory, fault_proxy):
    """A `/v2` JSON body is parsed like a form one: an outbound payment of
    `{"amount": {"value": 1234, "currency": "usd"}}` to `acct_1` is 1234 usd paid to acct_1,
    and a usd cap of 1000 holds it."""
    guard = guard_factory(upstream_url=fault_proxy.url,
                          caps=[dict(scope="org", currency="usd", interval="daily", limit=1000,
                                     on_exceed="hold")])
    [cap] = guard.cap_ids
    body = json.dumps(V2_OUTBOUND).encode()

    r = call(guard, "POST", "/v2/money_management/outbound_payments", body, content_type=JSON)
    err = guard_error(r, 402, "guard_approval_required", "hold")
    assert err["guard"]["caps"] == [cap], err
    intent_id = err["guard"]["intent"]
    seen = guard.intent(intent_id)
    assert (seen["operation"], seen["amount"], seen["currency"], seen["status"]) == (
        "v2.money_management.outbound_payments.create", 1234, "usd", "pending_approval"), seen
    assert upstream(fault_proxy) == []

    guard.stop()
    [i] = guard.intents()
    assert i["id"] == intent_id
    assert (i["operation"], i["class"], i["amount"], i["currency"], i["counterparty"]) == (
        "v2.money_management.outbound_payments.create", "move_money", 1234, "usd", "acct_1"), i
    assert (i["counted"], i["valued"], i["caps"]) == (1234, True, [cap]), i


# ---------------------------------------------------------------------------- Connect


def test_held_request_on_a_connected_account_executes_with_the_agents_headers(guard_factory,
                                                                              fault_proxy,
                                                                              localstripe):
    """A request on a connected account (`Stripe-Account`) is decided with that account as a
    fact; when held and approved, the executor sends upstream exactly what the agent sent:
    the same body bytes, `Stripe-Account` and the agent's `Stripe-Version`, exactly once."""
    guard = guard_factory(upstream_url=fault_proxy.url)
    run, key = new_run_id(), str(uuid.uuid4())
    amount = HOLD_THRESHOLD + 10000
    body = form([("amount", amount), ("currency", "usd"), ("payment_method_types[0]", "card"),
                 ("metadata[run]", run)])
    connect = {"Stripe-Account": CONNECTED, "Stripe-Version": AGENT_STRIPE_VERSION}

    r = call(guard, "POST", "/v1/payment_intents", body, key=key, headers=connect)
    err = guard_error(r, 402, "guard_approval_required", "hold")
    assert err["guard"]["policies"] == ["big-needs-approval"], err
    intent_id = err["guard"]["intent"]
    seen = guard.intent(intent_id)
    assert (seen["amount"], seen["status"]) == (amount, "pending_approval"), seen
    # The agent's own view names the connected account too (PROXY.md "The agent's own view").
    assert seen["account"] == CONNECTED, seen
    boss = owner(guard)
    pending = boss.intent(intent_id)
    assert (pending["account"], pending["operation"]) == (CONNECTED, "payment_intents.create"), (
        pending)
    assert upstream(fault_proxy) == []

    boss.expect("POST", f"/api/v1/intents/{intent_id}/approve", {"comment": "connected ok"})
    final = boss.wait_intent(intent_id, settled, deadline_secs=SETTLE_DEADLINE_SECS,
                             what="settled")
    assert final["status"] == "succeeded", final

    [sent] = upstream(fault_proxy, "POST", "/v1/payment_intents")
    assert sent.body == body
    assert sent.headers.get("stripe-account") == CONNECTED, sent.headers
    assert sent.headers.get("stripe-version") == AGENT_STRIPE_VERSION, sent.headers
    assert sent.headers.get("idempotency-key") == f"pg-{intent_id}", sent.headers
    assert sent.headers.get("authorization") == f"Bearer {RAIL_KEY}", sent.headers
    assert sent.forwarded and sent.status == 200
    created = json.loads(sent.response)
    assert final["upstream_id"] == created["id"], final
    assert [p["id"] for p in localstripe.payment_intents_of_run(run)] == [created["id"]]

    # The agent's retry gets the stored response; nothing more goes upstream.
    again = call(guard, "POST", "/v1/payment_intents", body, key=key, headers=connect)
    assert again.status_code == 200 and again.json()["id"] == created["id"], again.text
    assert again.headers.get("Guard-Intent") == intent_id

    # The same key on another account (or on the platform) is another request.
    for other in ({"Stripe-Account": "acct_other2"}, {}):
        r = call(guard, "POST", "/v1/payment_intents", body, key=key,
                 headers={"Stripe-Version": AGENT_STRIPE_VERSION, **other})
        err = guard_error(r, 400, "guard_idempotency_key_reused")
        assert err["type"] == "idempotency_error", err

    assert len(upstream(fault_proxy, "POST", "/v1/payment_intents")) == 1
    guard.stop()
    [i] = guard.intents()
    assert (i["id"], i["account"], i["status"]) == (intent_id, CONNECTED, "succeeded"), i
    assert ["stripe-account", CONNECTED] in i["request_headers"], i["request_headers"]
    assert ["stripe-version", AGENT_STRIPE_VERSION] in i["request_headers"], i["request_headers"]


def test_cap_scoped_to_a_connected_account_counts_only_that_account(guard_factory, fault_proxy,
                                                                   localstripe):
    """A cap `account:acct_connected1` counts what agents do on that account (named by
    `Stripe-Account` or `Stripe-Context`) and nothing done on the platform or elsewhere."""
    guard = guard_factory(upstream_url=fault_proxy.url)
    boss = owner(guard)
    cap = add_cap(boss, scope=f"account:{CONNECTED}", limit=1000, on_exceed="deny")
    run = new_run_id()

    def pay(amount: int, headers: dict) -> requests.Response:
        return call(guard, "POST", "/v1/payment_intents",
                    form([("amount", amount), ("currency", "usd"),
                          ("payment_method_types[0]", "card"), ("metadata[run]", run)]),
                    headers=headers)

    on_it = pay(800, {"Stripe-Account": CONNECTED})
    assert on_it.status_code == 200, on_it.text
    # Neither the platform nor another account counts toward it.
    for headers in ({}, {"Stripe-Account": "acct_other2"}, {"Stripe-Context": "acct_other3"}):
        r = pay(800, headers)
        assert r.status_code == 200 and r.headers.get("Guard-Decision") == "allow", (
            headers, r.status_code, r.text)

    # 800 + 300 on the account exceeds 1000, however the account is named.
    denied = []
    for headers in ({"Stripe-Account": CONNECTED}, {"Stripe-Context": CONNECTED}):
        r = pay(300, headers)
        err = guard_error(r, 403, "guard_policy_denied", "deny")
        assert err["guard"]["caps"] == [cap], err
        denied.append(err["guard"]["intent"])
        assert boss.intent(denied[-1])["account"] == CONNECTED
    # 200 still fits.
    fits = pay(200, {"Stripe-Account": CONNECTED})
    assert fits.status_code == 200, fits.text

    assert len(localstripe.payment_intents_of_run(run)) == 5
    guard.stop()
    stored = guard.intents()
    by_account = sorted((i["account"], i["amount"], i["status"], tuple(i["caps"]))
                        for i in stored)
    assert by_account == [
        ("", 800, "succeeded", ()),
        (CONNECTED, 200, "succeeded", ()),
        (CONNECTED, 300, "denied", (cap,)),
        (CONNECTED, 300, "denied", (cap,)),
        (CONNECTED, 800, "succeeded", ()),
        ("acct_other2", 800, "succeeded", ()),
        ("acct_other3", 800, "succeeded", ()),
    ], by_account


@pytest.mark.parametrize("name,value", [
    ("Stripe-Account", "acct_1/../x"),
    ("Stripe-Account", "acct 1"),
    ("Stripe-Account", "acct_1/acct_2"),
    ("Stripe-Account", "acct_1;x"),
    ("Stripe-Account", ""),
    ("Stripe-Context", "acct_1//acct_2"),
    ("Stripe-Context", "/acct_1"),
    ("Stripe-Context", "acct_1/../x"),
])
def test_account_header_that_is_not_an_account_id_is_400(name, value, guard_factory,
                                                         fault_proxy):
    """`Stripe-Account` (or `Stripe-Context`) that is not an account id is refused before
    anything is decided, on a mutation and on a read alike; nothing reaches the rail."""
    guard = guard_factory(upstream_url=fault_proxy.url)

    r = call(guard, "POST", "/v1/payment_intents", form([("amount", 100), ("currency", "usd")]),
             headers={name: value})
    err = guard_error(r, 400, "guard_invalid_account_header")
    assert err["type"] == "invalid_request_error", err
    g = call(guard, "GET", "/v1/payment_intents", headers={name: value})
    guard_error(g, 400, "guard_invalid_account_header")

    assert upstream(fault_proxy) == [], [(s.method, s.path) for s in fault_proxy.seen]
    guard.stop()
    assert guard.intents() == []


def test_stripe_account_and_stripe_context_naming_different_accounts_is_400(guard_factory,
                                                                           fault_proxy):
    """Both headers at once must name the same account: the rail could act on either."""
    guard = guard_factory(upstream_url=fault_proxy.url)
    r = call(guard, "POST", "/v1/payment_intents", form([("amount", 100), ("currency", "usd")]),
             headers={"Stripe-Account": "acct_1", "Stripe-Context": "acct_2"})
    guard_error(r, 400, "guard_invalid_account_header")
    assert upstream(fault_proxy) == []
    guard.stop()
    assert guard.intents() == []


# ---------------------------------------------------------------------------- default policy set


def test_default_policy_set_holds_account_changes_and_hides_card_numbers(guard_factory,
                                                                        fault_proxy,
                                                                        localstripe):
    """policies/default.cedar, a new organization's policy: an agent cannot subscribe itself to
    the account's events without a human (webhook endpoints are `admin`: held), cannot read card
    numbers or CVCs (`no-card-numbers`, refused before the rail), and small payments pass."""
    guard = guard_factory(upstream_url=fault_proxy.url, policy=DEFAULT_POLICY)

    hook = call(guard, "POST", "/v1/webhook_endpoints",
                form([("url", "https://agent.example/hook"), ("enabled_events[0]", "*")]))
    err = guard_error(hook, 402, "guard_approval_required", "hold")
    assert err["guard"]["policies"] == ["account-changes-need-a-human"], err
    hook_id = err["guard"]["intent"]
    assert guard.intent(hook_id)["operation"] == "webhook_endpoints.create"

    for query in ("expand[]=number", "expand%5B%5D=number", "expand[0]=cvc",
                  "expand[]=cardholder&expand[]=number"):
        r = call(guard, "GET", f"/v1/issuing/cards/ic_1?{query}")
        err = guard_error(r, 403, "guard_policy_denied")
        assert r.headers.get("Guard-Decision") == "deny", (query, dict(r.headers))
        assert err["guard"]["policies"] == ["no-card-numbers"], (query, err)
        assert err["guard"]["decision"] == "deny", err
    assert upstream(fault_proxy, "GET", "/v1/issuing/cards/ic_1") == []

    # The same card without its number is an ordinary read: forwarded (localstripe: 404).
    plain = call(guard, "GET", "/v1/issuing/cards/ic_1?expand[]=cardholder")
    assert plain.status_code == 404 and plain.headers.get("Guard-Decision") == "allow", (
        plain.status_code, plain.text, dict(plain.headers))
    assert len(upstream(fault_proxy, "GET", "/v1/issuing/cards/ic_1")) == 1

    run = new_run_id()
    pi = call(guard, "POST", "/v1/payment_intents",
              form([("amount", 2000), ("currency", "usd"), ("payment_method_types[0]", "card"),
                    ("metadata[run]", run)]))
    assert pi.status_code == 200 and pi.headers.get("Guard-Decision") == "allow", pi.text
    assert [p["id"] for p in localstripe.payment_intents_of_run(run)] == [pi.json()["id"]]

    unknown = call(guard, "POST", "/v1/no_such_things", form([("a", 1)]))
    guard_error(unknown, 403, "guard_unknown_operation", "deny")

    assert upstream(fault_proxy, "POST", "/v1/webhook_endpoints") == []
    assert [(s.method, s.path.split("?")[0]) for s in upstream(fault_proxy)] == [
        ("GET", "/v1/issuing/cards/ic_1"), ("POST", "/v1/payment_intents")]

    guard.stop()
    stored = by_id(guard)
    assert len(stored) == 3, stored  # reads create no intent
    h = stored[hook_id]
    assert (h["operation"], h["class"], h["status"], h["policies"]) == (
        "webhook_endpoints.create", "admin", "pending_approval",
        ["account-changes-need-a-human"]), h
    p = stored[pi.headers["Guard-Intent"]]
    assert (p["operation"], p["status"], p["amount"]) == ("payment_intents.create", "succeeded",
                                                         2000), p
