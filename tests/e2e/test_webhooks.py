"""Signed webhooks, end to end (WEBHOOKS.md; RELIABILITY.md promise 3 for the outbox).

The real `payment-guard` binary delivers to real loopback HTTP receivers
(webhook_receiver_fixture.py) that verify every delivery with the reference `standardwebhooks`
library using the secret the admin API returned. Events are produced the way production makes
them: holds through the proxy (agent token, amount above the hold threshold) and agents created
through the admin API. Each test checks what the receiver got, the deliveries and attempts the
admin API records, and the audit trail.

Loopback receivers need `webhooks.allow_private_targets`; a small retry base and poll interval
keep the retry tests fast. Nothing sleeps in place of synchronization: waits are bounded polls
of the deliveries API or the receiver's condition variable.
"""

from __future__ import annotations

import time

import pytest
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from admin_client import (MEMBER_PASSWORD, AdminClient, describe, error_code, human, new_hold,
                          owner)
from conftest import new_run_id
from webhook_receiver_fixture import (Receiver, poll,  # noqa: F401 (receivers: fixture)
                                      receivers, reserve_closed_port)

RETRY_BASE_MS = 200
JITTER = 0.2
DELIVERY_DEADLINE_SECS = 30

FAST_WEBHOOKS = {
    "GUARD_WEBHOOKS_ALLOW_PRIVATE_TARGETS": "true",
    "GUARD_WEBHOOKS_RETRY_BASE_MS": str(RETRY_BASE_MS),
    "GUARD_WEBHOOKS_POLL_MS": "50",
    "GUARD_WEBHOOKS_TIMEOUT_SECS": "5",
}


# ---------------------------------------------------------------------------- helpers



def webhook_guard(guard_factory, **env):
    return guard_factory(env={**FAST_WEBHOOKS, **env})


def create_webhook(boss: AdminClient, url: str, events: list[str] | None = None) -> dict:
    body = {"url": url} if events is None else {"url": url, "events": events}
    wh = boss.expect("POST", "/api/v1/webhooks", body, status=201)
    assert wh["id"].startswith("wh_"), wh
    assert wh["url"] == url and wh["enabled"] is True and wh["events"] == events, wh
    assert isinstance(wh.get("secret"), str) and wh["secret"].startswith("whsec_"), wh
    return wh


def deliveries(boss: AdminClient, wh_id: str) -> list[dict]:
    return boss.expect("GET", f"/api/v1/webhooks/{wh_id}/deliveries",
                       params={"limit": 500})["data"]


def wait_deliveries(boss: AdminClient, wh_id: str, done, *, what: str,
                    timeout: float = DELIVERY_DEADLINE_SECS) -> list[dict]:
    return poll(lambda: deliveries(boss, wh_id), done, timeout=timeout, what=what)


def all_delivered(n: int):
    return lambda ds: len(ds) == n and all(d["state"] == "delivered" for d in ds)


def verify(secret: str, rec) -> dict:
    """The reference library's verdict; raises WebhookVerificationError on a bad signature."""
    return Webhook(secret).verify(rec.body, rec.headers)


def audit_by_seq(boss: AdminClient) -> dict[int, dict]:
    return {e["seq"]: e for e in boss.audit_events()}


def assert_audit_head_matches(boss: AdminClient, event: dict, intent_id: str) -> None:
    """`audit_head` names the decision event of this hold: same seq, same hash."""
    head = event["audit_head"]
    assert set(head) == {"seq", "hash"}, head
    assert isinstance(head["seq"], int) and isinstance(head["hash"], str), head
    audit = audit_by_seq(boss)
    assert head["seq"] in audit, f"audit_head.seq {head['seq']} is not in GET /api/v1/audit"
    at = audit[head["seq"]]
    assert at["hash"] == head["hash"], (head, at)
    assert at["kind"] == "decision" and at["data"]["intent"] == intent_id, at
    assert at["data"]["outcome"] == "hold", at


def kill9(guard) -> None:
    """SIGKILL the guard (no graceful shutdown), and forget the process."""
    assert guard.running
    guard.proc.kill()
    guard.proc.wait(timeout=20)
    guard.proc = None


# ---------------------------------------------------------------------------- 1. signed hold


def test_hold_is_delivered_once_as_signed_intent_held_with_audit_head(
        guard_factory, receivers):
    g = webhook_guard(guard_factory)
    boss = owner(g)
    rx = receivers().start()
    wh = create_webhook(boss, rx.url)
    rx.secrets = [wh["secret"]]

    intent_id = new_hold(g, run=new_run_id())

    ds = wait_deliveries(boss, wh["id"], all_delivered(1), what="one delivered delivery")
    got = rx.wait_for(lambda rs: len(rs) >= 1, timeout=DELIVERY_DEADLINE_SECS,
                      what="the intent.held delivery")
    assert len(got) == 1, [(r.webhook_id, r.answered) for r in got]
    rec = got[0]
    assert rec.answered == 200 and rec.verified_with == [wh["secret"]], rec
    event = verify(wh["secret"], rec)  # the reference library, independently of the receiver
    assert rec.path == "/hook"
    assert rec.signature.startswith("v1,") and " " not in rec.signature, rec.signature
    assert abs(int(rec.timestamp) - time.time()) < 60, rec.timestamp

    assert event["id"] == rec.webhook_id and event["id"].startswith("evt_"), event
    assert event["type"] == "intent.held", event
    assert event["org"] == g.org_id, event
    assert isinstance(event["created"], int) and abs(event["created"] - time.time()) < 120, event
    assert event["data"]["intent"] == intent_id, event
    assert_audit_head_matches(boss, event, intent_id)

    # Stored state: one delivery of that event, one attempt, 200, no error, nothing scheduled.
    [d] = ds
    assert d["event_id"] == rec.webhook_id and d["kind"] == "intent.held", d
    assert d["endpoint"] == wh["id"] and d["next_attempt_ms"] is None, d
    assert d["body"].encode() == rec.body, "the stored body is not the bytes sent"
    assert [(a["status"], a["error"]) for a in d["attempts"]] == [(200, None)], d
    ep = boss.expect("GET", "/api/v1/webhooks")["data"]
    assert [(e["id"], e["consecutive_failures"], e["enabled"]) for e in ep] == [
        (wh["id"], 0, True)], ep
    assert "secret" not in ep[0], "the secret is shown only at creation"

    # Receivers can check history: the chain verifies, and the attempt is an audit event.
    assert boss.expect("GET", "/api/v1/audit/verify")["ok"] is True
    attempted = [e for e in boss.audit_events() if e["kind"] == "webhook.delivery_attempted"]
    assert [(e["data"]["event"], e["data"]["status"], e["data"]["state"]) for e in attempted] == [
        (rec.webhook_id, 200, "delivered")], attempted


# ---------------------------------------------------------------------------- 2. retries


def test_failing_receiver_gets_retries_with_exponential_backoff_and_one_webhook_id(
        guard_factory, receivers):
    fails = 3
    g = webhook_guard(guard_factory)
    boss = owner(g)
    rx = receivers(statuses=[500] * fails).start()
    wh = create_webhook(boss, rx.url, ["intent.held"])
    rx.secrets = [wh["secret"]]

    intent_id = new_hold(g, run=new_run_id())

    [d] = wait_deliveries(boss, wh["id"], all_delivered(1), what="delivered after 3 failures")
    got = rx.snapshot()
    assert [r.answered for r in got] == [500] * fails + [200], [(r.webhook_id, r.answered)
                                                                for r in got]
    assert {r.webhook_id for r in got} == {d["event_id"]}, "webhook-id changed between attempts"
    assert all(r.verified_with == [wh["secret"]] for r in got), "an attempt did not verify"
    assert len({r.body for r in got}) == 1, "the body changed between attempts"
    assert got[-1].event["data"]["intent"] == intent_id
    assert len(rx.accepted()) == 1

    attempts = d["attempts"]
    assert [a["status"] for a in attempts] == [500, 500, 500, 200], attempts
    assert [a["error"] is not None for a in attempts] == [True, True, True, False], attempts
    assert all("500" in a["error"] for a in attempts[:3]), attempts
    assert all(isinstance(a["duration_ms"], int) for a in attempts), attempts
    assert d["state"] == "delivered" and d["next_attempt_ms"] is None, d

    at = [a["at_ms"] for a in attempts]
    gaps = [b - a for a, b in zip(at, at[1:])]
    for k, gap in enumerate(gaps, start=1):
        nominal = RETRY_BASE_MS * 2 ** (k - 1)
        assert gap >= (1 - JITTER) * nominal, f"gap {k} is {gap} ms < 0.8 x {nominal}: {gaps}"
        # Generous ceiling (jitter + poll interval + scheduling): retries are not stalled.
        assert gap <= (1 + JITTER) * nominal + 2000, f"gap {k} is {gap} ms: {gaps}"
    assert gaps == sorted(gaps) and len(set(gaps)) == len(gaps), f"gaps not increasing: {gaps}"

    # Each attempt is an audit event; the endpoint's failure streak was reset by the success.
    attempted = [e["data"] for e in boss.audit_events()
                 if e["kind"] == "webhook.delivery_attempted"]
    assert [(a["attempt"], a["status"], a["state"]) for a in attempted] == [
        (1, 500, "pending"), (2, 500, "pending"), (3, 500, "pending"), (4, 200, "delivered")
    ], attempted
    [ep] = boss.expect("GET", "/api/v1/webhooks")["data"]
    assert ep["consecutive_failures"] == 0 and ep["enabled"] is True, ep


# ---------------------------------------------------------------------------- 3. kill -9


def test_pending_deliveries_survive_sigkill_and_are_delivered_once_per_event(
        guard_factory, receivers):
    port = reserve_closed_port()
    # Retries stay frequent while the receiver is down (max delay 1 s) so the test is bounded.
    g = webhook_guard(guard_factory, GUARD_WEBHOOKS_MAX_DELAY_MS="1000")
    boss = owner(g)
    rx = receivers(port=port)  # not started: connections are refused
    wh = create_webhook(boss, rx.url)
    rx.secrets = [wh["secret"]]
    run = new_run_id()

    # Three holds whose deliveries have been attempted and failed (pending, with retries)...
    attempted = [new_hold(g, run=run) for _ in range(3)]
    wait_deliveries(boss, wh["id"],
                    lambda ds: len(ds) == 3 and all(d["state"] == "pending" and d["attempts"]
                                                    and d["attempts"][-1]["status"] is None
                                                    for d in ds),
                    what="3 pending deliveries with a failed attempt")
    # ...and two more killed right after the agent got its answer (outbox or first attempt).
    fresh = [new_hold(g, run=run) for _ in range(2)]
    kill9(g)
    held = attempted + fresh

    rx.start()
    assert rx.port == port
    g.start()

    boss = owner(g)
    ds = wait_deliveries(boss, wh["id"], all_delivered(5),
                         what="all 5 deliveries delivered after the restart")
    rx.wait_for(lambda rs: {r.webhook_id for r in rs if r.answered == 200}
                >= {d["event_id"] for d in ds}, timeout=DELIVERY_DEADLINE_SECS,
                what="every event at the receiver")

    got = rx.snapshot()
    assert all(r.verified_with == [wh["secret"]] for r in got), "a delivery did not verify"
    # Receivers dedupe on webhook-id: one intent, one webhook-id, whatever the retries.
    by_id: dict[str, dict] = {}
    for r in got:
        ev = r.event
        assert ev["id"] == r.webhook_id and ev["type"] == "intent.held", ev
        assert by_id.setdefault(r.webhook_id, ev) == ev, f"{r.webhook_id} carried two bodies"
    ids_per_intent: dict[str, set[str]] = {}
    for wid, ev in by_id.items():
        ids_per_intent.setdefault(ev["data"]["intent"], set()).add(wid)
    assert set(ids_per_intent) == set(held), (sorted(ids_per_intent), sorted(held))
    assert all(len(v) == 1 for v in ids_per_intent.values()), ids_per_intent
    assert set(by_id) == {d["event_id"] for d in ds}, "receiver and store disagree on events"
    assert len({d["event_id"] for d in ds}) == 5, ds

    for ev in by_id.values():
        assert_audit_head_matches(boss, ev, ev["data"]["intent"])
    assert boss.expect("GET", "/api/v1/audit/verify")["ok"] is True


# ---------------------------------------------------------------------------- 4. targets


@pytest.mark.parametrize("url", [
    "http://127.0.0.1:{port}/hook",
    "http://10.0.0.1/",
    "http://169.254.169.254/",
    "http://[::1]/",
    "ftp://example.com/hook",
])
def test_private_and_non_http_targets_are_refused_and_nothing_is_stored(guard, url):
    boss = owner(guard)  # default configuration: allow_private_targets off
    url = url.format(port=guard.admin_port)
    r = boss.post("/api/v1/webhooks", {"url": url})
    assert r.status_code == 422 and error_code(r) == "validation_failed", describe(r)
    assert boss.expect("GET", "/api/v1/webhooks")["data"] == []
    assert not [e for e in boss.audit_events() if e["kind"].startswith("webhook.")]


# ---------------------------------------------------------------------------- 5. redirects


def test_redirect_is_not_followed_and_recorded_as_a_failed_attempt(guard_factory, receivers):
    g = webhook_guard(guard_factory)
    boss = owner(g)
    elsewhere = receivers().start()
    rx = receivers(redirect_to=elsewhere.url).start()
    wh = create_webhook(boss, rx.url)
    rx.secrets = [wh["secret"]]

    new_hold(g, run=new_run_id())

    [d] = wait_deliveries(boss, wh["id"], lambda ds: len(ds) == 1 and ds[0]["attempts"],
                          what="a recorded attempt")
    first = d["attempts"][0]
    assert [r.answered for r in rx.snapshot()][:1] == [302]
    assert d["state"] == "pending" and d["next_attempt_ms"] is not None, d
    assert first["error"] and "redirect" in first["error"].lower(), first
    assert first["status"] == 302, f"the attempt must record the 302 it got: {first}"
    assert elsewhere.snapshot() == [], "the Location target received the delivery"
    [ep] = boss.expect("GET", "/api/v1/webhooks")["data"]
    assert ep["consecutive_failures"] >= 1, ep


# ---------------------------------------------------------------------------- 6. subscriptions


def test_subscription_filters_types_and_rotation_signs_with_both_secrets(
        guard_factory, receivers):
    g = webhook_guard(guard_factory)
    boss = owner(g)
    rx_held = receivers().start()
    rx_all = receivers().start()  # the control: proves agent.created is emitted at all
    wh_held = create_webhook(boss, rx_held.url, ["intent.held"])
    wh_all = create_webhook(boss, rx_all.url)
    rx_held.secrets, rx_all.secrets = [wh_held["secret"]], [wh_all["secret"]]

    agent = boss.create_agent("webhook-subscriber-test")
    wait_deliveries(boss, wh_all["id"],
                    lambda ds: any(d["kind"] == "agent.created" and d["state"] == "delivered"
                                   for d in ds),
                    what="agent.created delivered to the all-events endpoint")
    [rec] = [r for r in rx_all.snapshot() if r.event["type"] == "agent.created"]
    assert rec.verified_with == [wh_all["secret"]]
    assert agent["id"] in str(rec.event["data"]), rec.event
    # The outbox entry is fanned out to every endpoint in one transaction: if the held-only
    # endpoint were subscribed, its delivery would exist now.
    assert deliveries(boss, wh_held["id"]) == []
    assert rx_held.snapshot() == []

    # Rotation: the new secret is shown once; during the overlap both secrets sign.
    old = wh_held["secret"]
    rot = boss.expect("POST", f"/api/v1/webhooks/{wh_held['id']}/rotate-secret")
    new = rot["secret"]
    assert new.startswith("whsec_") and new != old, rot
    assert rot["id"] == wh_held["id"] and rot["previous_secret_valid_for_secs"] > 0, rot
    rx_held.secrets = [new, old]

    intent_id = new_hold(g, run=new_run_id())
    [d] = wait_deliveries(boss, wh_held["id"], all_delivered(1), what="the held delivery")
    assert d["kind"] == "intent.held", d
    [rec] = rx_held.snapshot()
    assert rec.answered == 200 and rec.event["data"]["intent"] == intent_id, rec
    assert len(rec.signature.split(" ")) == 2, f"expected two signatures: {rec.signature}"
    assert verify(new, rec)["id"] == rec.webhook_id
    assert verify(old, rec)["id"] == rec.webhook_id
    assert sorted(rec.verified_with) == sorted([new, old])
    with pytest.raises(WebhookVerificationError):
        verify(wh_all["secret"], rec)  # another endpoint's secret does not verify it
    # And the held-only endpoint still never got agent.created.
    assert [x["kind"] for x in deliveries(boss, wh_held["id"])] == ["intent.held"]


# ---------------------------------------------------------------------------- 7. RBAC


def test_viewer_cannot_create_a_webhook(guard):
    boss = owner(guard)
    boss.invite("viewer@example.com", "viewer")
    viewer = human(guard, "viewer@example.com", MEMBER_PASSWORD, label="viewer")
    r = viewer.post("/api/v1/webhooks", {"url": "https://8.8.8.8/hook"})
    assert r.status_code == 403 and error_code(r) == "forbidden", describe(r)
    # A viewer may read (empty), and nothing was stored.
    assert viewer.expect("GET", "/api/v1/webhooks")["data"] == []
    assert boss.expect("GET", "/api/v1/webhooks")["data"] == []
