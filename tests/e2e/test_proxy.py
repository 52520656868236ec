"""PROXY.md, promise by promise, with stripe-python as the agent and localstripe as the rail.

Each test asserts the exact status and error code the agent sees, the intent as the agent reads
it while the guard runs (GET /v1/guard/intents/{id}), the stored intents and audit trail after the
guard stops (`intent list`, `audit verify` in the fixture teardown), and what reached upstream
(localstripe's own PaymentIntent list, tagged per test with metadata[run]).
"""

from __future__ import annotations

import uuid

import pytest
import requests
import stripe

from conftest import (HOLD_THRESHOLD, HTTP_TIMEOUT_SECS, Localstripe, error_of, form, header,
                      master_key, new_run_id)


def create_pi(client: stripe.StripeClient, amount: int, run: str, key: str | None = None,
              currency: str = "usd"):
    options = {"idempotency_key": key} if key else {}
    return client.v1.payment_intents.create(
        params={"amount": amount, "currency": currency, "payment_method_types": ["card"],
                "metadata": {"run": run}},
        options=options,
    )


def assert_guard_error(exc: stripe.StripeError, status: int, code: str, decision: str | None):
    err = error_of(exc)
    assert exc.http_status == status, (exc.http_status, exc.http_body)
    assert err["code"] == code, exc.http_body
    assert header(exc.headers, "Stripe-Should-Retry") == "false", dict(exc.headers)
    if decision is not None:
        assert err["guard"]["decision"] == decision, exc.http_body
        assert err["guard"]["intent"].startswith("int_"), exc.http_body
        assert header(exc.headers, "Guard-Decision") == decision, dict(exc.headers)
        assert header(exc.headers, "Guard-Intent") == err["guard"]["intent"], dict(exc.headers)
    return err


def test_allowed_payment_intent_is_created_upstream(guard, localstripe):
    run, key = new_run_id(), str(uuid.uuid4())

    pi = create_pi(guard.client(), 2000, run, key)

    # The id is localstripe's, and localstripe really holds it.
    assert pi.id.startswith("pi_")
    upstream = localstripe.payment_intents_of_run(run)
    assert [p["id"] for p in upstream] == [pi.id]
    assert upstream[0]["amount"] == 2000 and upstream[0]["currency"] == "usd"
    headers = pi.last_response.headers
    assert header(headers, "Guard-Decision") == "allow"
    intent_id = header(headers, "Guard-Intent")
    assert intent_id and intent_id.startswith("int_")

    seen = guard.intent(intent_id)
    assert seen["id"] == intent_id
    assert seen["status"] == "succeeded" and seen["decision"] == "allow"
    assert (seen["amount"], seen["currency"]) == (2000, "usd")
    assert seen["operation"] == "payment_intents.create"

    guard.stop()
    [stored] = guard.intents()
    assert stored["id"] == intent_id and stored["status"] == "succeeded"
    assert stored["agent"] == guard.agent_ids["a1"]
    assert stored["idempotency_key"] == key
    assert (stored["amount"], stored["currency"]) == (2000, "usd")
    events = guard.audit_export()
    assert any('"kind":"decision"' in e.replace(" ", "") and intent_id in e for e in events)


def test_policy_denial_is_403_and_nothing_reaches_upstream(guard, localstripe):
    payouts_before = localstripe.requests_seen("POST", "/v1/payouts")

    with pytest.raises(stripe.PermissionError) as info:
        guard.client().v1.payouts.create(params={"amount": 1000, "currency": "usd"})

    err = assert_guard_error(info.value, 403, "guard_policy_denied", "deny")
    assert err["type"] == "invalid_request_error"
    assert err["guard"]["policies"] == ["no-payouts"]
    assert "payouts are not allowed for agents" in err["message"]
    seen = guard.intent(err["guard"]["intent"])
    assert seen["status"] == "denied" and seen["decision"] == "deny"
    assert seen["operation"] == "payouts.create"
    assert localstripe.requests_seen("POST", "/v1/payouts") == payouts_before

    guard.stop()
    [stored] = guard.intents()
    assert stored["id"] == err["guard"]["intent"] and stored["status"] == "denied"


def test_amount_over_hold_threshold_is_held_with_402(guard, localstripe):
    run = new_run_id()

    with pytest.raises(stripe.CardError) as info:
        create_pi(guard.client(), HOLD_THRESHOLD + 10000, run)

    err = assert_guard_error(info.value, 402, "guard_approval_required", "hold")
    seen = guard.intent(err["guard"]["intent"])
    assert seen["status"] == "pending_approval" and seen["decision"] == "hold"
    assert seen["amount"] == HOLD_THRESHOLD + 10000
    assert localstripe.payment_intents_of_run(run) == []

    guard.stop()
    [stored] = guard.intents()
    assert stored["status"] == "pending_approval"


def test_cap_crossing_turns_into_hold_without_spending(guard_factory, localstripe):
    guard = guard_factory(caps=[dict(scope="org", currency="usd", interval="daily",
                                     limit=10000, on_exceed="hold")])
    client, run = guard.client(), new_run_id()

    first = create_pi(client, 6000, run)
    assert header(first.last_response.headers, "Guard-Decision") == "allow"

    with pytest.raises(stripe.CardError) as info:
        create_pi(client, 6000, run)
    err = assert_guard_error(info.value, 402, "guard_approval_required", "hold")
    assert guard.cap_ids[0] in str(err["guard"]["caps"]), err
    assert guard.intent(err["guard"]["intent"])["status"] == "pending_approval"

    # The hold reserved nothing: exactly the remaining 4000 still fits under the cap...
    third = create_pi(client, 4000, run)
    assert header(third.last_response.headers, "Guard-Decision") == "allow"
    # ...and one cent more does not.
    with pytest.raises(stripe.CardError) as info:
        create_pi(client, 1, run)
    assert_guard_error(info.value, 402, "guard_approval_required", "hold")

    assert sorted(p["amount"] for p in localstripe.payment_intents_of_run(run)) == [4000, 6000]
    guard.stop()
    by_status = sorted((i["status"], i["amount"]) for i in guard.intents())
    assert by_status == [("pending_approval", 1), ("pending_approval", 6000),
                         ("succeeded", 4000), ("succeeded", 6000)]


def test_mutation_without_idempotency_key_is_refused(guard, localstripe):
    run = new_run_id()

    r = guard.raw_post("/v1/payment_intents", form([("amount", 1000), ("currency", "usd"),
                                                    ("metadata[run]", run)]))

    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == "guard_idempotency_key_required"
    assert r.headers.get("Stripe-Should-Retry") == "false"
    assert localstripe.payment_intents_of_run(run) == []
    guard.stop()
    assert guard.intents() == []


def test_replay_returns_original_outcome_byte_for_byte(guard, localstripe):
    run = new_run_id()
    payouts_before = localstripe.requests_seen("POST", "/v1/payouts")
    cases = {
        "allow": ("/v1/payment_intents", [("amount", 1500), ("currency", "usd"),
                                          ("metadata[run]", run)], 200),
        "deny": ("/v1/payouts", [("amount", 1500), ("currency", "usd")], 403),
        "hold": ("/v1/payment_intents", [("amount", HOLD_THRESHOLD + 1), ("currency", "usd"),
                                         ("metadata[run]", run)], 402),
    }
    for decision, (path, pairs, status) in cases.items():
        key, body = str(uuid.uuid4()), form(pairs)
        first = guard.raw_post(path, body, idempotency_key=key)
        assert first.status_code == status, (decision, first.text)
        assert first.headers.get("Guard-Decision") == decision
        for _ in range(2):
            again = guard.raw_post(path, body, idempotency_key=key)
            assert again.status_code == first.status_code, decision
            assert again.content == first.content, decision
            assert again.headers.get("Guard-Intent") == first.headers.get("Guard-Intent")
            assert again.headers.get("Guard-Decision") == decision

    assert len(localstripe.payment_intents_of_run(run)) == 1
    assert localstripe.requests_seen("POST", "/v1/payouts") == payouts_before
    guard.stop()
    # One decision per key, never a second one for a replay.
    assert sorted(i["status"] for i in guard.intents()) == ["denied", "pending_approval",
                                                            "succeeded"]


def test_reused_key_with_different_body_is_refused(guard, localstripe):
    client, run, key = guard.client(), new_run_id(), str(uuid.uuid4())
    pi = create_pi(client, 1000, run, key)

    with pytest.raises(stripe.IdempotencyError) as info:
        create_pi(client, 2000, run, key)

    err = error_of(info.value)
    assert info.value.http_status == 400
    assert (err["type"], err["code"]) == ("idempotency_error", "guard_idempotency_key_reused")
    assert header(info.value.headers, "Stripe-Should-Retry") == "false"
    assert [p["id"] for p in localstripe.payment_intents_of_run(run)] == [pi.id]
    guard.stop()
    [stored] = guard.intents()
    assert stored["amount"] == 1000 and stored["status"] == "succeeded"


def test_idempotency_keys_are_scoped_per_agent(guard_factory, localstripe):
    guard = guard_factory(agents=("a1", "a2"))
    run, key = new_run_id(), str(uuid.uuid4())

    pi1 = create_pi(guard.client("a1"), 1000, run, key)
    pi2 = create_pi(guard.client("a2"), 2000, run, key)

    assert pi1.id != pi2.id
    assert sorted(p["amount"] for p in localstripe.payment_intents_of_run(run)) == [1000, 2000]


def test_revoked_and_unknown_tokens_are_401(guard_factory, localstripe):
    guard = guard_factory(agents=("a1", "a2"))
    run = new_run_id()
    create_pi(guard.client("a2"), 1000, run)  # a2 works before revocation

    guard.stop()
    guard.cli("agent", "revoke", "--data-dir", str(guard.data_dir), "--org", guard.org_id,
              "--agent", guard.agent_ids["a2"])
    guard.start()

    for client in (guard.client("a2"),
                   guard.client(token="pg_agent_" + uuid.uuid4().hex + uuid.uuid4().hex),
                   guard.client(token="sk_test_not_an_agent_token")):
        with pytest.raises(stripe.AuthenticationError) as info:
            create_pi(client, 1000, run)
        assert info.value.http_status == 401
        assert error_of(info.value)["code"] == "guard_authentication_required"

    no_auth = requests.post(guard.proxy_url + "/v1/payment_intents",
                            data={"amount": 1000, "currency": "usd"},
                            headers={"Idempotency-Key": str(uuid.uuid4())},
                            timeout=HTTP_TIMEOUT_SECS)
    assert no_auth.status_code == 401
    assert no_auth.json()["error"]["code"] == "guard_authentication_required"

    # Revocation is per agent: a1 still pays.
    create_pi(guard.client("a1"), 1000, run)
    assert len(localstripe.payment_intents_of_run(run)) == 2


def test_basic_auth_with_token_as_user_is_accepted(guard, localstripe):
    run = new_run_id()
    r = requests.post(guard.proxy_url + "/v1/payment_intents",
                      data={"amount": 1200, "currency": "usd", "metadata[run]": run},
                      headers={"Idempotency-Key": str(uuid.uuid4())},
                      auth=(guard.tokens["a1"], ""), timeout=HTTP_TIMEOUT_SECS)
    assert r.status_code == 200, r.text
    assert r.headers.get("Guard-Decision") == "allow"
    assert [p["id"] for p in localstripe.payment_intents_of_run(run)] == [r.json()["id"]]


def test_oversize_body_is_413_and_nothing_stored(guard, localstripe):
    run = new_run_id()
    pad = "x" * 70_000  # over the default proxy.max_body_bytes of 65536
    body = form([("amount", 1000), ("currency", "usd"), ("metadata[run]", run),
                 ("metadata[pad]", pad)])

    r = guard.raw_post("/v1/payment_intents", body, idempotency_key=str(uuid.uuid4()))
    assert r.status_code == 413, r.text
    assert r.json()["error"]["code"] == "guard_body_too_large"
    assert r.headers.get("Stripe-Should-Retry") == "false"

    # Without Content-Length the guard must count the bytes itself.
    chunks = (body[i:i + 8192] for i in range(0, len(body), 8192))
    r = guard.raw_post("/v1/payment_intents", chunks, idempotency_key=str(uuid.uuid4()))
    assert r.status_code == 413, r.text
    assert r.json()["error"]["code"] == "guard_body_too_large"

    assert localstripe.payment_intents_of_run(run) == []
    guard.stop()
    assert guard.intents() == []


def test_max_body_bytes_is_configurable(guard_factory, localstripe):
    guard = guard_factory(env={"GUARD_PROXY_MAX_BODY_BYTES": "2048"})
    run = new_run_id()

    def body(pad_len: int) -> bytes:
        return form([("amount", 1000), ("currency", "usd"), ("metadata[run]", run),
                     ("metadata[pad]", "y" * pad_len)])

    small = guard.raw_post("/v1/payment_intents", body(1500), idempotency_key=str(uuid.uuid4()))
    assert small.status_code == 200, small.text
    big = guard.raw_post("/v1/payment_intents", body(3000), idempotency_key=str(uuid.uuid4()))
    assert big.status_code == 413, big.text
    assert big.json()["error"]["code"] == "guard_body_too_large"
    assert [p["id"] for p in localstripe.payment_intents_of_run(run)] == [small.json()["id"]]


def test_upstream_down_is_502_unknown_and_retry_pays_once(guard_factory, tmp_path):
    # Its own localstripe, so stopping it leaves the shared rail alone.
    rail = Localstripe(tmp_path)
    rail.start()
    try:
        guard = guard_factory(upstream_url=rail.url)
        client, run, key = guard.client(), new_run_id(), str(uuid.uuid4())
        create_pi(client, 700, run)  # the rail works
        rail.stop()

        with pytest.raises(stripe.APIError) as info:
            create_pi(client, 1000, run, key)
        assert info.value.http_status == 502, info.value.http_body
        err = error_of(info.value)
        assert err["code"] == "guard_upstream_unavailable"
        intent_id = header(info.value.headers, "Guard-Intent")
        assert intent_id and intent_id.startswith("int_")
        assert header(info.value.headers, "Guard-Decision") == "allow"
        assert guard.intent(intent_id)["status"] == "unknown"

        rail.start()  # same port, empty store (--from-scratch)
        pi = create_pi(client, 1000, run, key)

        assert header(pi.last_response.headers, "Guard-Intent") == intent_id
        assert [p["id"] for p in rail.payment_intents_of_run(run)] == [pi.id]
        assert guard.intent(intent_id)["status"] == "succeeded"
        # A further replay returns the stored success, it does not pay again.
        again = create_pi(client, 1000, run, key)
        assert again.id == pi.id
        assert len(rail.payment_intents_of_run(run)) == 1

        guard.stop()
        stored = {i["id"]: i for i in guard.intents()}
        assert stored[intent_id]["status"] == "succeeded"
        assert len(stored) == 2
    finally:
        rail.stop()


def test_configured_master_key_unlocks_the_rail(guard_factory, localstripe):
    guard = guard_factory(env={"GUARD_SECRETS_MASTER_KEY": master_key()})
    run = new_run_id()
    pi = create_pi(guard.client(), 1000, run)
    assert [p["id"] for p in localstripe.payment_intents_of_run(run)] == [pi.id]


def test_org_without_rail_key_is_503(guard_factory, localstripe):
    guard = guard_factory(rail_key=None)
    run = new_run_id()
    with pytest.raises(stripe.APIError) as info:
        create_pi(guard.client(), 1000, run)
    assert info.value.http_status == 503, info.value.http_body
    assert error_of(info.value)["code"] == "guard_rail_not_configured"
    assert localstripe.payment_intents_of_run(run) == []


def test_agent_reads_only_its_own_intents(guard_factory):
    guard = guard_factory(agents=("a1", "a2"))
    with pytest.raises(stripe.PermissionError) as info:
        guard.client("a1").v1.payouts.create(params={"amount": 100, "currency": "usd"})
    intent_id = error_of(info.value)["guard"]["intent"]

    assert guard.intent(intent_id, "a1")["id"] == intent_id
    r = requests.get(f"{guard.proxy_url}/v1/guard/intents/{intent_id}",
                     headers={"Authorization": f"Bearer {guard.tokens['a2']}"},
                     timeout=HTTP_TIMEOUT_SECS)
    assert r.status_code == 404, r.text
