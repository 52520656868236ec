"""RELIABILITY.md promises 1–3 under `kill -9`: nothing acknowledged is lost, the audit chain
verifies, caps hold, and one Idempotency-Key pays at most once, across crashes.

Three agents load the guard from several threads with an organization daily cap kept just above
what is already spent (on_exceed deny), amounts below and above the hold threshold, and a mix of
new and earlier Idempotency-Keys (duplicates, concurrently and after restarts). At a random moment
the guard gets SIGKILL; with the guard stopped the test then checks, from the CLI on the data dir
and from the rail's own records:

- `payment-guard audit verify` passes;
- every response an agent received has its durable intent (same id as the `Guard-Intent` header,
  same agent and key) in a consistent state: 200 → succeeded (with the PaymentIntent id the agent
  got), 402 → pending_approval, 403 → denied, 409/502 → exists; every response to one key names
  the same intent;
- the allowed spend of the day (succeeded + unknown + forwarding amounts) never exceeds the cap;
- the rail holds no PaymentIntent the guard has no succeeded/unknown/forwarding intent for, at
  most one per intent, and every upstream attempt of an intent carries `pg-<intent id>`.

localstripe ignores `Idempotency-Key`; real Stripe does not. A crash after the guard forwarded but
before it settled is *meant* to be resolved by a retry with the same upstream key, which Stripe
deduplicates. So the rail here is localstripe behind `FaultProxy(idempotent=True)`, which
emulates Stripe's deduplication by (key, Idempotency-Key); the guard's part — always the same
intent-derived key — is asserted separately.

Then the guard restarts and the next cycle runs, `CRASH_CYCLES` times (default 20). At the end
every key is retried once: unknown intents resolve, and the rail's PaymentIntents are exactly
the succeeded intents.

Long run (≥ 500 cycles; the per-test timeout must be raised; record the result in the README):

    CRASH_CYCLES=500 CRASH_SEED=1 .venv/bin/pytest -q tests/e2e/test_crash.py --timeout=7200
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass
from urllib.parse import parse_qsl

import requests

from admin_client import AdminClient, owner
from conftest import HOLD_THRESHOLD, Localstripe, form, tail
from fault_proxy import FaultProxy

CYCLES = int(os.environ.get("CRASH_CYCLES", "20"))
SEED = int(os.environ.get("CRASH_SEED", str(random.randrange(1 << 30))))
AGENTS = ("a1", "a2", "a3")
THREADS_PER_AGENT = 2
HEADROOM = 25000  # the cap is set this far above what is already reserved, every cycle
# (amount, currency): the usd cap counts usd only, so the eur amount over the hold threshold is
# held (402) rather than denied by the cap.
AMOUNTS = [(1000, "usd")] * 7 + [(2500, "usd")] * 2 + [(HOLD_THRESHOLD + 10000, "eur")]
KILL_WINDOW = (0.05, 1.0)  # seconds of load before SIGKILL
RAIL_JITTER = 0.25  # the rail answers after 0..250 ms, so kills catch requests mid-forward
REQUEST_TIMEOUT = 15
KILL_DEADLINE = 10
MONEY_STATES = ("succeeded", "unknown", "forwarding")


@dataclass
class Answer:
    cycle: int
    agent: str
    key: str
    status: int
    intent: str | None
    code: str | None
    pi: str | None


class Load:
    """The agents' side: keys, bodies, and every answer received."""

    def __init__(self, guard, run: str, seed: int):
        self.guard = guard
        self.run = run
        self.rng = random.Random(seed)
        self.keys: dict[str, list[str]] = {a: [] for a in AGENTS}
        self.bodies: dict[tuple[str, str], bytes] = {}
        self.answers: list[Answer] = []
        self.unexpected: list[str] = []
        self.lock = threading.Lock()

    def new_key(self, agent: str, rng: random.Random) -> str:
        key = f"{self.run[:8]}-{agent}-{uuid.UUID(int=rng.getrandbits(128)).hex[:16]}"
        amount, currency = rng.choice(AMOUNTS)
        body = form([("amount", amount), ("currency", currency), ("payment_method_types[0]", "card"),
                     ("metadata[run]", self.run), ("metadata[agent]", agent),
                     ("metadata[key]", key)])
        with self.lock:
            self.keys[agent].append(key)
            self.bodies[(agent, key)] = body
        return key

    def pick_key(self, agent: str, rng: random.Random) -> str:
        with self.lock:
            known = list(self.keys[agent])
        if known and rng.random() < 0.35:
            # Mostly recent keys (concurrent duplicates), sometimes old ones (after restarts).
            return rng.choice(known[-4:]) if rng.random() < 0.7 else rng.choice(known)
        return self.new_key(agent, rng)

    def send(self, session: requests.Session, cycle: int, agent: str, key: str) -> bool:
        try:
            r = session.post(self.guard.proxy_url + "/v1/payment_intents",
                             data=self.bodies[(agent, key)],
                             headers={"Authorization": f"Bearer {self.guard.tokens[agent]}",
                                      "Content-Type": "application/x-www-form-urlencoded",
                                      "Idempotency-Key": key},
                             timeout=REQUEST_TIMEOUT)
        except requests.RequestException:
            return False  # no answer (the guard died): promises nothing
        try:
            body = r.json()
        except ValueError:
            body = {}
        err = body.get("error") if isinstance(body, dict) else None
        a = Answer(cycle, agent, key, r.status_code, r.headers.get("Guard-Intent"),
                   (err or {}).get("code"), body.get("id") if r.status_code == 200 else None)
        with self.lock:
            self.answers.append(a)
            if r.status_code not in (200, 402, 403, 409, 502):
                self.unexpected.append(f"{agent} {key}: {r.status_code} {r.text[:300]}")
        return True

    def worker(self, cycle: int, agent: str, seed: int, stop: threading.Event) -> None:
        rng = random.Random(seed)
        with requests.Session() as s:
            while not stop.is_set():
                self.send(s, cycle, agent, self.pick_key(agent, rng))


def kill(guard) -> None:
    guard.proc.send_signal(signal.SIGKILL)
    guard.proc.wait(timeout=KILL_DEADLINE)
    guard.proc = None


def day(ts: str) -> str:
    return ts[:10]


def check_cycle(guard, load: Load, localstripe: Localstripe, fp: FaultProxy,
                caps_by_day: dict[str, int], cycle: int) -> dict[str, dict]:
    where = f"cycle {cycle} (seed {SEED})"
    assert load.unexpected == [], f"{where}: unexpected answers {load.unexpected[:5]}"

    rc, results, stderr = guard.audit_verify()
    assert rc == 0 and results and all(r.get("ok") is True for r in results), (
        f"{where}: audit verify failed: {results} {stderr}")

    intents = {i["id"]: i for i in guard.intents()}
    by_key: dict[tuple[str, str], list[dict]] = defaultdict(list)
    agent_name = {v: k for k, v in guard.agent_ids.items()}
    for i in intents.values():
        by_key[(agent_name.get(i["agent"], i["agent"]), i["idempotency_key"])].append(i)
    dupes = {k: [i["id"] for i in v] for k, v in by_key.items() if len(v) > 1}
    assert dupes == {}, f"{where}: one key, several intents: {dupes}"

    first_intent: dict[tuple[str, str], str] = {}
    expected = {200: ("succeeded",), 402: ("pending_approval",), 403: ("denied",),
                409: None, 502: ("unknown", "forwarding", "succeeded", "failed")}
    for a in load.answers:
        ctx = f"{where}: answer {a}"
        assert a.intent and a.intent in intents, f"{ctx}: no durable intent {a.intent}"
        i = intents[a.intent]
        assert (i["agent"], i["idempotency_key"]) == (guard.agent_ids[a.agent], a.key), (ctx, i)
        assert first_intent.setdefault((a.agent, a.key), a.intent) == a.intent, (
            f"{ctx}: the same key answered with two intents")
        ok = expected[a.status]
        assert ok is None or i["status"] in ok, f"{ctx}: stored status {i['status']}"
        if a.status == 200:
            assert i["upstream_id"] == a.pi, f"{ctx}: stored upstream id {i['upstream_id']}"
        if a.status == 403:
            assert a.code == "guard_policy_denied", ctx
        if a.status == 402:
            assert a.code == "guard_approval_required", ctx

    # Reservations agree with statuses; the allowed spend of each day stays under the cap.
    spend: dict[str, int] = defaultdict(int)
    for i in intents.values():
        if i["status"] in MONEY_STATES:
            assert i["currency"] == "usd", (where, i)
            r = i["reservation"]
            assert r and r["released"] is False and r["amount"] == i["amount"], (where, i)
            spend[day(i["created_at"])] += i["amount"]
        elif i["status"] in ("denied", "pending_approval"):
            assert i["reservation"] is None, (where, i)
    for d, total in spend.items():
        assert total <= caps_by_day[d], f"{where}: spent {total} > cap {caps_by_day[d]} on {d}"

    # The rail: nothing the guard has no money intent for, at most one PaymentIntent per intent.
    pis = localstripe.payment_intents_of_run(load.run)
    per_intent: dict[str, list[str]] = defaultdict(list)
    for pi in pis:
        md = pi["metadata"]
        mine = by_key.get((md["agent"], md["key"]))
        assert mine, f"{where}: PaymentIntent {pi['id']} ({md}) without an intent"
        assert mine[0]["status"] in MONEY_STATES, (
            f"{where}: PaymentIntent {pi['id']} for intent {mine[0]['id']} in "
            f"{mine[0]['status']}")
        per_intent[mine[0]["id"]].append(pi["id"])
    several = {k: v for k, v in per_intent.items() if len(v) > 1}
    assert several == {}, f"{where}: several PaymentIntents for one intent: {several}"
    for i in intents.values():
        if i["status"] == "succeeded":
            assert per_intent.get(i["id"]) == [i["upstream_id"]], (
                f"{where}: succeeded intent {i['id']} vs rail {per_intent.get(i['id'])}")

    # Every upstream attempt the rail saw used the intent-derived key of its intent.
    for seen in fp.requests("/v1/payment_intents"):
        fields = dict(parse_qsl(seen.body.decode()))
        agent, key = fields.get("metadata[agent]"), fields.get("metadata[key]")
        mine = by_key.get((agent, key))
        assert mine, f"{where}: the rail saw {key} of {agent} but no intent exists"
        assert seen.headers.get("idempotency-key") == f"pg-{mine[0]['id']}", (
            where, seen.headers, mine[0]["id"])
    return intents


def set_cap(api: AdminClient, cap_id: str, limit: int) -> None:
    api.expect("PATCH", f"/api/v1/caps/{cap_id}", {"limit": limit})


def test_kill_9_under_load_loses_nothing(guard_factory, tmp_path):
    print(f"crash test: {CYCLES} cycles, CRASH_SEED={SEED}")
    rng = random.Random(SEED)
    rail = Localstripe(tmp_path)
    rail.start()
    fp = FaultProxy(rail.url, idempotent=True).start()
    fp.set_mode("pass", jitter=RAIL_JITTER)
    try:
        guard = guard_factory(upstream_url=fp.url, agents=AGENTS,
                              caps=[dict(scope="org", currency="usd", interval="daily",
                                         limit=HEADROOM, on_exceed="deny")])
        cap_id = guard.cap_ids[0]
        token = owner(guard).create_api_token("crash test")
        load = Load(guard, uuid.uuid4().hex, SEED)
        caps_by_day: dict[str, int] = defaultdict(lambda: HEADROOM)
        reserved_today = 0
        caught_forwarding = 0  # intents a SIGKILL caught between decision and settlement

        for cycle in range(CYCLES):
            if not guard.running:
                guard.start()
            api = AdminClient.for_guard(guard, token=token, label="crash")
            limit = reserved_today + HEADROOM
            set_cap(api, cap_id, limit)
            today = time.strftime("%Y-%m-%d", time.gmtime())
            caps_by_day[today] = max(caps_by_day.get(today, 0), limit)

            stop = threading.Event()
            threads = [threading.Thread(target=load.worker,
                                        args=(cycle, a, rng.getrandbits(32), stop), daemon=True)
                       for a in AGENTS for _ in range(THREADS_PER_AGENT)]
            for t in threads:
                t.start()
            # The kill moment is random: a bounded delay, or the moment the n-th answer arrives.
            delay = rng.uniform(*KILL_WINDOW)
            stop.wait(delay)
            kill(guard)
            stop.set()
            for t in threads:
                t.join(timeout=REQUEST_TIMEOUT + 5)
                assert not t.is_alive(), "a load thread did not stop"

            try:
                intents = check_cycle(guard, load, rail, fp, caps_by_day, cycle)
            except AssertionError:
                print(tail(guard.log))
                raise
            caught_forwarding += sum(i["status"] == "forwarding" for i in intents.values())
            today = time.strftime("%Y-%m-%d", time.gmtime())
            reserved_today = sum(i["amount"] for i in intents.values()
                                 if i["status"] in MONEY_STATES and day(i["created_at"]) == today)

        # Drain: every key left unknown/forwarding (and a sample of the others) once more.
        # Unknown intents resolve; nothing pays twice; the rest replay their first answer.
        open_keys = {(a, i["idempotency_key"]) for i in intents.values()
                     for a, aid in guard.agent_ids.items()
                     if i["agent"] == aid and i["status"] in ("unknown", "forwarding")}
        others = sorted(set(load.bodies) - open_keys)
        retry = sorted(open_keys) + rng.sample(others, min(len(others), 150))
        guard.start()
        with requests.Session() as s:
            for agent, key in retry:
                assert load.send(s, CYCLES, agent, key), f"no answer for {agent} {key}"
        assert load.unexpected == [], load.unexpected[:5]
        drained = [a for a in load.answers if a.cycle == CYCLES]
        assert not [a for a in drained if a.status in (409, 502)], [
            a for a in drained if a.status in (409, 502)][:5]
        guard.stop()
        intents = check_cycle(guard, load, rail, fp, caps_by_day, CYCLES)
        assert not [i for i in intents.values() if i["status"] in ("unknown", "forwarding")]
        succeeded = sorted(i["upstream_id"] for i in intents.values()
                           if i["status"] == "succeeded")
        assert succeeded == sorted(p["id"] for p in rail.payment_intents_of_run(load.run))
        statuses = defaultdict(int)
        for i in intents.values():
            statuses[i["status"]] += 1
        print(f"crash test: {len(load.answers)} answers, {len(intents)} intents, "
              f"{dict(statuses)}, {len(succeeded)} PaymentIntents, "
              f"{caught_forwarding} intents caught forwarding by a kill")
        assert statuses["succeeded"] > 0 and statuses["denied"] > 0, dict(statuses)
        guard.start()  # the fixture's teardown stops it with SIGTERM and verifies again
    finally:
        fp.stop()
        rail.stop()
