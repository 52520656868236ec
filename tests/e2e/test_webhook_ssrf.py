"""Webhook targets and SSRF, end to end (WEBHOOKS.md; issue #12 item 5).

The real `payment-guard` binary, real loopback receivers (webhook_receiver_fixture.py), the
admin API over HTTP. Promises checked:

1. A target written in any spelling of loopback, private or otherwise special-use space (IPv4
   aliases, IPv6 forms embedding IPv4, parse-differential tricks) is refused at creation with 422
   `validation_failed` and a stated reason; nothing is stored and the receiver gets nothing.
2. Delivery re-resolves and re-checks the target before every attempt: a name that resolved to
   a public address at creation and to loopback later (DNS rebinding) is refused at delivery with
   the reason recorded on the attempt, and the receiver gets nothing.
3. The connection goes to the address that was checked, and only there: a name only the test
   resolver knows is delivered to (so the client did no lookup of its own), and each attempt
   goes to what the name resolves to for that attempt.
4. A disabled endpoint (by an administrator, or automatically after failures) gets no further
   attempt: its queued deliveries are `abandoned` with the reason, the receiver's count stays
   fixed; re-enabling does not resurrect them, an explicit retry does.

Name resolution is made deterministic with `webhooks.unsafe_test_hosts_file` (names under
`.invalid` only; refused in production). Waits are bounded polls, never fixed sleeps.
"""

from __future__ import annotations

import ipaddress
import json
import time
from pathlib import Path

import pytest

from admin_client import AdminClient, describe, error_code, new_hold, owner
from conftest import new_run_id
from webhook_receiver_fixture import Receiver, poll, receivers  # noqa: F401 (fixture)

DEADLINE_SECS = 30
BASE_ENV = {
    "GUARD_WEBHOOKS_RETRY_BASE_MS": "200",
    "GUARD_WEBHOOKS_MAX_DELAY_MS": "1000",
    "GUARD_WEBHOOKS_POLL_MS": "50",
    "GUARD_WEBHOOKS_TIMEOUT_SECS": "5",
}



class Hosts:
    """The guard's test resolver: a JSON file it reads at every lookup of a `.invalid` name."""

    def __init__(self, path: Path):
        self.path = path
        self.set({})

    def set(self, mapping: dict[str, list[str]]) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(mapping))
        tmp.replace(self.path)  # atomic: the guard never reads half a file


def guard_with(guard_factory, tmp_path, *, allow_private: bool, test_hosts: bool = True,
               **env) -> tuple:
    """A guard with fast retries; `test_hosts`: with the test resolver (`Hosts`)."""
    hosts = Hosts(tmp_path / "hosts.json")
    hook = {"GUARD_WEBHOOKS_UNSAFE_TEST_HOSTS_FILE": str(hosts.path)} if test_hosts else {}
    g = guard_factory(env={**BASE_ENV,
                           "GUARD_WEBHOOKS_ALLOW_PRIVATE_TARGETS": str(allow_private).lower(),
                           **hook, **env})
    return g, hosts


def deliveries(boss: AdminClient, wh_id: str) -> list[dict]:
    return boss.expect("GET", f"/api/v1/webhooks/{wh_id}/deliveries",
                       params={"limit": 500})["data"]


def wait_deliveries(boss: AdminClient, wh_id: str, done, *, what: str) -> list[dict]:
    return poll(lambda: deliveries(boss, wh_id), done, timeout=DEADLINE_SECS, what=what)


def endpoint(boss: AdminClient, wh_id: str) -> dict:
    [ep] = [e for e in boss.expect("GET", "/api/v1/webhooks")["data"] if e["id"] == wh_id]
    return ep


def worker_has_moved_past(g, boss: AdminClient, rx_sentinel: Receiver, after_ms: int) -> None:
    """Bounded proof that the delivery worker kept running past `after_ms` (unix ms): a fresh
    endpoint gets a fresh event delivered, and the clock is past `after_ms`. Anything the worker
    would still attempt was due by then."""
    wh = boss.expect("POST", "/api/v1/webhooks", {"url": rx_sentinel.url}, status=201)
    poll(lambda: time.time() * 1000, lambda now: now > after_ms, timeout=DEADLINE_SECS,
         what=f"the clock past {after_ms}")
    new_hold(g, run=new_run_id())
    wait_deliveries(boss, wh["id"],
                    lambda ds: len(ds) == 1 and ds[0]["state"] == "delivered",
                    what="the sentinel delivery")


# ---------------------------------------------------------------------------- 1. creation


def special(ip: str, block: str, embedded: str | None = None) -> dict:
    return {"reason": "special_use_address", "address": ip, "block": block,
            "embedded_ipv4": embedded}


MALFORMED = {"reason": "malformed_url"}


def test_special_use_targets_in_every_spelling_are_refused_at_creation_and_nothing_is_stored(
        guard_factory, receivers, tmp_path):
    g, hosts = guard_with(guard_factory, tmp_path, allow_private=False)
    boss = owner(g)
    rx = receivers().start()
    p = rx.port
    hosts.set({"mixed.ssrf.invalid": ["8.8.8.8", "127.0.0.1"]})
    loop4 = special("127.0.0.1", "127.0.0.0/8")
    cases = [
        (f"http://127.0.0.1:{p}/hook", loop4),
        (f"http://127.1:{p}/hook", loop4),
        (f"http://0x7f000001:{p}/hook", loop4),
        (f"http://2130706433:{p}/hook", loop4),
        (f"http://0177.0.0.1:{p}/hook", loop4),
        (f"http://0x7f.0.0.1:{p}/hook", loop4),
        (f"http://127.0.0.1.:{p}/hook", loop4),
        (f"http://[::1]:{p}/hook", special("::1", "::1/128")),
        (f"http://[::ffff:127.0.0.1]:{p}/hook",
         special("::ffff:127.0.0.1", "127.0.0.0/8", "127.0.0.1")),
        (f"http://[::ffff:7f00:1]:{p}/hook",
         special("::ffff:127.0.0.1", "127.0.0.0/8", "127.0.0.1")),
        (f"http://[64:ff9b::7f00:1]:{p}/hook",
         special("64:ff9b::7f00:1", "127.0.0.0/8", "127.0.0.1")),
        (f"http://[2002:7f00:1::]:{p}/hook", special("2002:7f00:1::", "2002::/16", "127.0.0.1")),
        (f"http://[2001:0:4136:e378:8000:63bf:80ff:fffe]:{p}/hook",
         special("2001:0:4136:e378:8000:63bf:80ff:fffe", "2001::/32", "127.0.0.1")),
        (f"http://[::7f00:1]:{p}/hook", special("::7f00:1", "::/96")),
        (f"http://0.0.0.0:{p}/hook", special("0.0.0.0", "0.0.0.0/8")),
        (f"http://[::]:{p}/hook", special("::", "::/128")),
        ("http://100.64.0.1/hook", special("100.64.0.1", "100.64.0.0/10")),
        ("http://169.254.169.254/latest/meta-data/", special("169.254.169.254", "169.254.0.0/16")),
        ("http://10.0.0.1/", special("10.0.0.1", "10.0.0.0/8")),
        ("http://192.168.1.1/", special("192.168.1.1", "192.168.0.0/16")),
        ("http://198.18.0.1/", special("198.18.0.1", "198.18.0.0/15")),
        ("http://192.0.2.1/", special("192.0.2.1", "192.0.2.0/24")),
        ("http://240.0.0.1/", special("240.0.0.1", "240.0.0.0/4")),
        ("http://255.255.255.255/", special("255.255.255.255", "255.255.255.255/32")),
        ("http://[fd00::1]/", special("fd00::1", "fc00::/7")),
        ("http://[fe80::1]/", special("fe80::1", "fe80::/10")),
        ("http://[2001:db8::1]/", special("2001:db8::1", "2001:db8::/32")),
        ("http://[64:ff9b:1::1]/", special("64:ff9b:1::1", "64:ff9b:1::/48")),
        ("http://[ff02::1]/", special("ff02::1", "ff00::/8")),
        # One special answer among public ones refuses the whole name.
        (f"http://mixed.ssrf.invalid:{p}/hook", special("127.0.0.1", "127.0.0.0/8")),
        # Parse differentials: text that another parser could read as another host.
        (f"http://public.example\\@127.0.0.1:{p}/hook", MALFORMED),
        (f"http://127.0.0.1:{p}#@example.com/", MALFORMED),
        (f"http://public.example\t@127.0.0.1:{p}/hook", MALFORMED),
        (f"http://127.0.0.1:{p}\n/hook", MALFORMED),
        (f"http://public.example@127.0.0.1:{p}/hook", MALFORMED),
        (f"http://user:pw@8.8.8.8:{p}/hook", MALFORMED),
        ("gopher://127.0.0.1:70/", MALFORMED),
        ("file:///etc/passwd", MALFORMED),
        # A name nobody can resolve is refused too (nothing to check is not a pass).
        (f"http://nowhere.ssrf.invalid:{p}/hook", {"reason": "unresolvable_host"}),
    ]
    failures = []
    for url, want in cases:
        r = boss.post("/api/v1/webhooks", {"url": url})
        if r.status_code != 422 or error_code(r) != "validation_failed":
            failures.append((url, describe(r)))
            continue
        details = r.json()["error"].get("details") or {}
        got = {k: details.get(k) for k in want}
        if "address" in want and details.get("address"):
            got["address"] = str(ipaddress.ip_address(details["address"]))
            want = {**want, "address": str(ipaddress.ip_address(want["address"]))}
        if got != want or details.get("field") != "url":
            failures.append((url, details))
    assert not failures, "\n".join(f"{u!r}: {d}" for u, d in failures)

    # `localhost` resolves through the system resolver to loopback (v4 or v6): refused.
    r = boss.post("/api/v1/webhooks", {"url": f"http://localhost:{p}/hook"})
    assert r.status_code == 422 and error_code(r) == "validation_failed", describe(r)
    assert r.json()["error"]["details"]["block"] in ("127.0.0.0/8", "::1/128"), describe(r)

    # Nothing stored, nothing audited, nothing sent.
    assert boss.expect("GET", "/api/v1/webhooks")["data"] == []
    assert not [e for e in boss.audit_events() if e["kind"].startswith("webhook.")]
    assert rx.snapshot() == []

    # The same refusal guards a change of URL: a public endpoint cannot be pointed at loopback.
    hosts.set({"public.ssrf.invalid": ["8.8.8.8"]})
    wh = boss.expect("POST", "/api/v1/webhooks", {"url": "https://public.ssrf.invalid/hook"},
                     status=201)
    assert wh["url"] == "https://public.ssrf.invalid/hook", wh
    r = boss.patch(f"/api/v1/webhooks/{wh['id']}", {"url": f"http://[::ffff:7f00:1]:{p}/x"})
    assert r.status_code == 422 and error_code(r) == "validation_failed", describe(r)
    assert r.json()["error"]["details"]["block"] == "127.0.0.0/8", describe(r)
    assert endpoint(boss, wh["id"])["url"] == "https://public.ssrf.invalid/hook"


# ---------------------------------------------------------------------------- 2. rebinding


def test_delivery_rechecks_a_name_rebound_to_loopback_and_sends_nothing(
        guard_factory, receivers, tmp_path):
    g, hosts = guard_with(guard_factory, tmp_path, allow_private=False)
    boss = owner(g)
    rx = receivers().start()
    name = "hook.rebind.invalid"
    url = f"http://{name}:{rx.port}/hook"

    hosts.set({name: ["8.8.8.8"]})  # public at creation: accepted
    wh = boss.expect("POST", "/api/v1/webhooks", {"url": url}, status=201)
    assert wh["url"] == url and wh["enabled"] is True, wh

    hosts.set({name: ["127.0.0.1"]})  # ...then rebound to where the receiver listens
    new_hold(g, run=new_run_id())

    ds = wait_deliveries(boss, wh["id"],
                         lambda ds: len(ds) == 1 and len(ds[0]["attempts"]) >= 2,
                         what="two refused attempts")
    [d] = ds
    assert d["state"] == "pending" and d["next_attempt_ms"] is not None, d
    for a in d["attempts"]:
        assert a["status"] is None, a
        assert a["error"].startswith("target refused (special_use_address): "), a
        assert f"{name} resolves to 127.0.0.1, in 127.0.0.0/8 (loopback)" in a["error"], a
    assert rx.snapshot() == [], "the receiver on the rebound address got a request"
    ep = endpoint(boss, wh["id"])
    assert ep["consecutive_failures"] >= 2 and ep["enabled"] is True, ep
    attempted = [e["data"] for e in boss.audit_events()
                 if e["kind"] == "webhook.delivery_attempted"]
    assert attempted and all("special_use_address" in a["error"] for a in attempted), attempted


# ---------------------------------------------------------------------------- 3. pinning


def test_each_attempt_connects_to_the_address_it_checked_and_nowhere_else(
        guard_factory, receivers, tmp_path):
    # allow_private on: the receiver is on loopback. The check is skipped; the pin is not.
    g, hosts = guard_with(guard_factory, tmp_path, allow_private=True)
    boss = owner(g)
    rx = receivers().start()
    name = "pinned.ssrf.invalid"  # no system resolver knows it: only the checked answer can
    hosts.set({name: ["127.0.0.1"]})
    wh = boss.expect("POST", "/api/v1/webhooks", {"url": f"http://{name}:{rx.port}/hook"},
                     status=201)
    rx.secrets = [wh["secret"]]

    first = new_hold(g, run=new_run_id())
    wait_deliveries(boss, wh["id"], lambda ds: [d["state"] for d in ds] == ["delivered"],
                    what="the first delivery, to the pinned address")
    [rec] = rx.snapshot()
    assert rec.answered == 200 and rec.event["data"]["intent"] == first, rec

    # The name now answers 127.0.0.2, where nobody listens on that port: the attempt goes
    # there (and fails), not to the receiver a cached or second lookup would find.
    hosts.set({name: ["127.0.0.2"]})
    second = new_hold(g, run=new_run_id())
    ds = wait_deliveries(boss, wh["id"],
                         lambda ds: len(ds) == 2 and len(ds[-1]["attempts"]) >= 2,
                         what="the second delivery failing twice")
    assert ds[-1]["state"] == "pending", ds[-1]
    assert all(a["status"] is None and a["error"].startswith("request failed")
               for a in ds[-1]["attempts"]), ds[-1]
    assert len(rx.snapshot()) == 1, "an attempt reached the receiver the name no longer names"

    # Back to 127.0.0.1: the pending delivery arrives, once.
    hosts.set({name: ["127.0.0.1"]})
    wait_deliveries(boss, wh["id"], lambda ds: [d["state"] for d in ds] == ["delivered"] * 2,
                    what="the second delivery after the name points back")
    got = rx.snapshot()
    assert [r.event["data"]["intent"] for r in got] == [first, second], got
    assert all(r.verified_with == [wh["secret"]] for r in got)


# ---------------------------------------------------------------------------- 4. disabled


def test_disabling_an_endpoint_stops_its_queued_deliveries_and_says_why(
        guard_factory, receivers, tmp_path):
    g, _ = guard_with(guard_factory, tmp_path, allow_private=True, test_hosts=False)
    boss = owner(g)
    rx = receivers(default_status=500).start()
    wh = boss.expect("POST", "/api/v1/webhooks", {"url": rx.url}, status=201)
    rx.secrets = [wh["secret"]]
    run = new_run_id()
    new_hold(g, run=run)
    new_hold(g, run=run)
    rx.wait_for(lambda rs: len(rs) >= 4, timeout=DEADLINE_SECS, what="retries of both events")
    before = deliveries(boss, wh["id"])
    assert len(before) == 2 and all(d["state"] == "pending" for d in before), before

    ep = boss.expect("PATCH", f"/api/v1/webhooks/{wh['id']}", {"enabled": False})
    assert ep["enabled"] is False and ep["disabled_reason"] == "disabled by an administrator", ep

    # In the same transaction as the disable: both abandoned, out of the queue, with the reason.
    ds = deliveries(boss, wh["id"])
    assert [(d["state"], d["reason"], d["next_attempt_ms"]) for d in ds] == [
        ("abandoned", "endpoint disabled by an administrator", None)] * 2, ds
    abandoned = [e["data"] for e in boss.audit_events()
                 if e["kind"] == "webhook.deliveries_abandoned"]
    assert abandoned == [{"webhook": wh["id"], "count": 2,
                          "reason": "endpoint disabled by an administrator"}], abandoned

    # An explicit retry is refused while the endpoint is disabled.
    r = boss.post(f"/api/v1/webhooks/{wh['id']}/deliveries/{ds[0]['id']}/retry")
    assert r.status_code == 409 and error_code(r) == "conflict", describe(r)

    # The worker runs on past every time these would have been retried: no further attempt.
    last_due = max(d["next_attempt_ms"] for d in before)
    worker_has_moved_past(g, boss, receivers().start(), last_due + 1500)
    after = deliveries(boss, wh["id"])
    assert [d["state"] for d in after] == ["abandoned"] * 2, after
    attempts = sum(len(d["attempts"]) for d in after)
    # An attempt in flight at the disable is recorded; nothing is sent that is not recorded.
    assert len(rx.snapshot()) == attempts, (len(rx.snapshot()), after)
    sent_before_enable = len(rx.snapshot())

    # Re-enabling does not resurrect them: a new event is delivered, the abandoned ones are not.
    rx.default_status = 200
    ep = boss.expect("PATCH", f"/api/v1/webhooks/{wh['id']}", {"enabled": True})
    assert ep["enabled"] is True and ep["disabled_reason"] is None, ep
    third = new_hold(g, run=run)
    ds = wait_deliveries(boss, wh["id"],
                         lambda ds: len(ds) == 3 and ds[-1]["state"] == "delivered",
                         what="the event after re-enabling")
    assert [d["state"] for d in ds] == ["abandoned", "abandoned", "delivered"], ds
    new = rx.snapshot()[sent_before_enable:]
    assert [r.event["data"]["intent"] for r in new] == [third], new

    # An explicit retry is the way back, one delivery at a time.
    d0 = boss.expect("POST", f"/api/v1/webhooks/{wh['id']}/deliveries/{ds[0]['id']}/retry")
    assert d0["state"] == "pending" and "reason" not in d0, d0
    ds = wait_deliveries(boss, wh["id"],
                         lambda ds: [d["state"] for d in ds].count("delivered") == 2,
                         what="the retried delivery")
    assert {d["id"]: d["state"] for d in ds}[ds[1]["id"]] == "abandoned", ds


def test_endpoint_disabled_after_repeated_failures_gets_no_further_attempt(
        guard_factory, receivers, tmp_path):
    g, _ = guard_with(guard_factory, tmp_path, allow_private=True, test_hosts=False,
                      GUARD_WEBHOOKS_DISABLE_AFTER_FAILURES="3")
    boss = owner(g)
    rx = receivers(default_status=500).start()
    wh = boss.expect("POST", "/api/v1/webhooks", {"url": rx.url}, status=201)
    rx.secrets = [wh["secret"]]
    new_hold(g, run=new_run_id())

    [d] = wait_deliveries(boss, wh["id"],
                          lambda ds: len(ds) == 1 and ds[0]["state"] != "pending",
                          what="the delivery to stop")
    assert d["state"] == "abandoned", d
    assert d["reason"] == "endpoint disabled after repeated failures", d
    assert [a["status"] for a in d["attempts"]] == [500, 500, 500], d
    assert d["next_attempt_ms"] is None, d
    ep = endpoint(boss, wh["id"])
    assert (ep["enabled"], ep["disabled_reason"], ep["consecutive_failures"]) == (
        False, "3 failed attempts in a row", 3), ep

    worker_has_moved_past(g, boss, receivers().start(), d["attempts"][-1]["at_ms"] + 2500)
    assert len(rx.snapshot()) == 3, [r.answered for r in rx.snapshot()]
    [d2] = deliveries(boss, wh["id"])
    assert d2["state"] == "abandoned" and len(d2["attempts"]) == 3, d2
    kinds = [e["kind"] for e in boss.audit_events() if e["kind"].startswith("webhook.")]
    assert kinds.count("webhook.delivery_attempted") >= 4, kinds  # 3 here + the sentinel's
    assert kinds.count("webhook.disabled") == 1, kinds
