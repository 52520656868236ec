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

The checks cover everything after every cycle, but each cycle reads only what it changed (see
`Checks`), so they stay flat over a long run: what grows with the store is the two CLI calls
(`audit verify`, `intent list`). Every `CRASH_FULL_EVERY` cycles (default 50) and at the end
they re-check everything from scratch, with a full listing of the rail. Every
`CRASH_TIMING_EVERY` cycles (default 10) a line gives the seconds of load and of each check.

Long run (≥ 500 cycles; the per-test timeout must be raised; record the result in the README):

    CRASH_CYCLES=500 CRASH_SEED=1 .venv/bin/pytest -q tests/e2e/test_crash.py --timeout=7200
"""

from __future__ import annotations

import json
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
from fault_proxy import FaultProxy, Seen

CYCLES = int(os.environ.get("CRASH_CYCLES", "20"))
FULL_EVERY = int(os.environ.get("CRASH_FULL_EVERY", "50"))  # cycles between full re-checks
TIMING_EVERY = int(os.environ.get("CRASH_TIMING_EVERY", "10"))  # cycles between timing lines
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


# What an answer's intent must be stored as. 200/402/403 are final within this test (nothing
# approves, expires or refunds); 409 and 502 intents may still move on, within these.
ANSWER_STATES = {200: ("succeeded",), 402: ("pending_approval",), 403: ("denied",),
                 409: None, 502: ("unknown", "forwarding", "succeeded", "failed")}


class Checks:
    """The per-cycle checks, and what they have established so far, so that a cycle's check
    costs what the cycle added rather than everything since the start.

    Every check the module docstring lists holds after every cycle over *all* answers, intents
    and PaymentIntents, because what an earlier cycle checked can only stop holding if
    something it was checked against changed, and the changes are exactly what a cycle reads:

    - intents: `intent list` still prints all of them (the CLI has no filter), but only lines
      whose text differs from the last listing are parsed; those are the cycle's changed
      intents. No intent ever disappears from the store.
    - answers: each is checked in the cycle it arrived, and again in every cycle its intent
      changed (a 502's unknown intent resolving, say).
    - spend and reservations: kept per intent, updated from the changed intents.
    - the rail: every request to localstripe passes the FaultProxy, which keeps each answer.
      The PaymentIntents a cycle created are the ids in the answers of the requests the proxy
      finished since the last cycle; each is fetched from localstripe's own records by id.
      A request still in flight is looked at in a later cycle. A full listing of localstripe
      runs every `CRASH_FULL_EVERY` cycles, at the end, and whenever the proxy cannot tell
      whether a request created something; it must find nothing the records do not account
      for. Those cycles also re-check everything from scratch.
    """

    def __init__(self, guard, load: Load, rail: Localstripe, fp: FaultProxy,
                 caps_by_day: dict[str, int]):
        self.guard, self.load, self.rail, self.fp = guard, load, rail, fp
        self.caps_by_day = caps_by_day
        self.agent_name = {v: k for k, v in guard.agent_ids.items()}
        # intents
        self.lines: dict[str, str] = {}  # line of the last `intent list` -> its intent id
        self.intents: dict[str, dict] = {}  # intent id -> the intent as last listed
        self.owner: dict[tuple[str, str], str] = {}  # (agent name, key) -> intent id
        self.spent: dict[str, tuple[str, int]] = {}  # money intent id -> (day, amount)
        self.spend: dict[str, int] = defaultdict(int)  # day -> allowed spend
        self.forwarding: set[str] = set()
        # answers
        self.answers_seen = 0  # load.answers[:answers_seen] are indexed below
        self.answers_of: dict[str, list[Answer]] = defaultdict(list)
        self.first_intent: dict[tuple[str, str], str] = {}
        # the rail
        self.seen = 0  # fp.seen[:seen] have had their headers checked
        self.in_flight: list[Seen] = []  # requests the proxy was not finished with
        self.unsure = 0  # finished requests that may or may not have created a PaymentIntent
        self.pi_intent: dict[str, str] = {}  # PaymentIntent id -> intent id
        self.pis_of: dict[str, set[str]] = defaultdict(set)  # intent id -> PaymentIntent ids
        self.timing: dict[str, float] = {}  # seconds per part of the last check
        self.full = False  # whether the last check was a full one

    def check(self, cycle: int, *, final: bool = False) -> None:
        """All checks, with the guard stopped. `final` (and every CRASH_FULL_EVERY-th cycle)
        re-reads and re-checks everything, as if nothing had been established before."""
        where = f"cycle {cycle} (seed {SEED})"
        full = self.full = final or (cycle + 1) % FULL_EVERY == 0
        assert self.load.unexpected == [], f"{where}: unexpected answers {self.load.unexpected[:5]}"
        t = time.monotonic()

        rc, results, stderr = self.guard.audit_verify()
        assert rc == 0 and results and all(r.get("ok") is True for r in results), (
            f"{where}: audit verify failed: {results} {stderr}")
        t = self._lap("verify", t)

        listed = self.guard.intent_lines()
        t = self._lap("list", t)
        changed = self._read_intents(where, listed, full)
        t = self._lap("intents", t)

        self._check_money(where, changed)
        self._check_answers(where, changed)
        t = self._lap("answers", t)

        self._check_rail(where, changed, full)
        self._lap("rail", t)

    def summary(self, seconds: float) -> str:
        parts = ", ".join(f"{k} {v:.3f}" for k, v in self.timing.items())
        return (f"check {seconds:.3f}s{' (full)' if self.full else ''} ({parts}); "
                f"{len(self.intents)} intents, {len(self.load.answers)} answers, "
                f"{len(self.pi_intent)} PaymentIntents")

    def _lap(self, part: str, since: float) -> float:
        now = time.monotonic()
        self.timing[part] = now - since
        return now

    # -- intents

    def _read_intents(self, where: str, listed: list[str], full: bool) -> dict[str, dict]:
        """Refresh `intents` from the lines of `intent list`; the intents that are new or changed
        since the last listing (all of them when `full`)."""
        known = {} if full else self.lines
        lines: dict[str, str] = {}
        changed: dict[str, dict] = {}
        for line in listed:
            iid = known.get(line)
            if iid is None:
                i = json.loads(line)
                iid = i["id"]
                changed[iid] = i
            lines[line] = iid
        ids = set(lines.values())
        assert len(ids) == len(lines), f"{where}: an intent listed twice"
        gone = self.intents.keys() - ids
        assert not gone, f"{where}: intents gone from the store: {sorted(gone)[:5]}"
        for iid, i in changed.items():
            old = self.intents.get(iid)
            if old is None:
                key = (self.agent_name.get(i["agent"], i["agent"]), i["idempotency_key"])
                other = self.owner.setdefault(key, iid)
                assert other == iid, f"{where}: one key, several intents: {key}: {other}, {iid}"
            else:
                assert (old["agent"], old["idempotency_key"]) == (
                    i["agent"], i["idempotency_key"]), f"{where}: intent changed owner {old} {i}"
            self.intents[iid] = i
        self.lines = lines
        return changed

    def _check_money(self, where: str, changed: dict[str, dict]) -> None:
        """Reservations agree with statuses; the allowed spend of each day stays under the cap."""
        for iid, i in changed.items():
            was = self.spent.pop(iid, None)
            if was is not None:
                self.spend[was[0]] -= was[1]
            self.forwarding.discard(iid)
            if i["status"] in MONEY_STATES:
                assert i["currency"] == "usd", (where, i)
                r = i["reservation"]
                assert r and r["released"] is False and r["amount"] == i["amount"], (where, i)
                self.spent[iid] = (day(i["created_at"]), i["amount"])
                self.spend[day(i["created_at"])] += i["amount"]
                if i["status"] == "forwarding":
                    self.forwarding.add(iid)
            elif i["status"] in ("denied", "pending_approval"):
                assert i["reservation"] is None, (where, i)
        for d, total in self.spend.items():
            assert total <= self.caps_by_day[d], (
                f"{where}: spent {total} > cap {self.caps_by_day[d]} on {d}")

    # -- answers

    def _check_answers(self, where: str, changed: dict[str, dict]) -> None:
        """The cycle's answers, and the earlier answers whose intent changed."""
        new = self.load.answers[self.answers_seen:]
        self.answers_seen += len(new)
        for a in new:
            self._check_answer(where, a)
            self.answers_of[a.intent].append(a)
        for iid in changed:
            for a in self.answers_of.get(iid, ()):
                self._check_answer(where, a)

    def _check_answer(self, where: str, a: Answer) -> None:
        ctx = f"{where}: answer {a}"
        assert a.intent and a.intent in self.intents, f"{ctx}: no durable intent {a.intent}"
        i = self.intents[a.intent]
        assert (i["agent"], i["idempotency_key"]) == (self.guard.agent_ids[a.agent], a.key), (
            ctx, i)
        assert self.first_intent.setdefault((a.agent, a.key), a.intent) == a.intent, (
            f"{ctx}: the same key answered with two intents")
        ok = ANSWER_STATES[a.status]
        assert ok is None or i["status"] in ok, f"{ctx}: stored status {i['status']}"
        if a.status == 200:
            assert i["upstream_id"] == a.pi, f"{ctx}: stored upstream id {i['upstream_id']}"
        if a.status == 403:
            assert a.code == "guard_policy_denied", ctx
        if a.status == 402:
            assert a.code == "guard_approval_required", ctx

    # -- the rail

    def _check_rail(self, where: str, changed: dict[str, dict], full: bool) -> None:
        """Nothing on the rail the guard has no money intent for, at most one PaymentIntent per
        intent, each succeeded intent's PaymentIntent there; every upstream attempt carries the
        intent-derived key."""
        arrived, self.seen = self.fp.requests_since(self.seen)
        arrived = [s for s in arrived if s.path.split("?")[0] == "/v1/payment_intents"]
        for s in self.fp.requests("/v1/payment_intents") if full else arrived:
            fields = dict(parse_qsl(s.body.decode()))
            agent, key = fields.get("metadata[agent]"), fields.get("metadata[key]")
            mine = self.owner.get((agent, key))
            assert mine, f"{where}: the rail saw {key} of {agent} but no intent exists"
            assert s.headers.get("idempotency-key") == f"pg-{mine}", (where, s.headers, mine)

        # The PaymentIntents created by the requests the proxy finished since the last cycle.
        # `touched`: the intents to check against the rail (all of them in a full check).
        touched = set(changed)
        in_flight = []
        for s in self.in_flight + arrived:
            if not s.done:
                in_flight.append(s)
                continue
            pi_id = self._created_by(s)
            if pi_id is not None and pi_id not in self.pi_intent:
                pi = self.rail.payment_intent(pi_id)
                assert pi, f"{where}: the rail answered {pi_id} but does not hold it"
                touched.add(self._register(where, pi))
        self.in_flight = in_flight

        if full or self.unsure:
            listed = self.rail.payment_intents_of_run(self.load.run)
            ids = {pi["id"] for pi in listed}
            lost = self.pi_intent.keys() - ids
            assert not lost, f"{where}: PaymentIntents gone from the rail: {sorted(lost)[:5]}"
            missed = [pi for pi in listed if pi["id"] not in self.pi_intent]
            assert len(missed) <= len(self.in_flight) + self.unsure, (
                f"{where}: the rail holds PaymentIntents the proxy's records do not account for: "
                f"{[pi['id'] for pi in missed][:5]} ({len(self.in_flight)} requests in flight, "
                f"{self.unsure} unsure)")
            for pi in missed:
                touched.add(self._register(where, pi))
            self.unsure = 0

        for iid in touched:
            i = self.intents[iid]
            pis = self.pis_of.get(iid)
            if pis:
                assert i["status"] in MONEY_STATES, (
                    f"{where}: PaymentIntent {sorted(pis)} for intent {iid} in {i['status']}")
                assert len(pis) == 1, (
                    f"{where}: several PaymentIntents for one intent: {iid}: {sorted(pis)}")
            if i["status"] == "succeeded":
                up = i["upstream_id"]
                if up not in self.pi_intent:
                    # Answered by a request still in flight at the proxy (a replay reached the
                    # guard first), or not on the rail at all.
                    pi = self.rail.payment_intent(up)
                    assert pi, f"{where}: succeeded intent {iid}: {up} is not on the rail"
                    self._register(where, pi)
                assert self.pis_of.get(iid) == {up}, (
                    f"{where}: succeeded intent {iid} vs rail {self.pis_of.get(iid)}")

    def _created_by(self, s: Seen) -> str | None:
        """The id of the PaymentIntent a finished request created, if any; counts it as unsure
        if the proxy cannot tell."""
        if not s.attempted or (s.forwarded and 400 <= s.status < 500):
            return None  # never reached localstripe, or refused by it
        try:
            pi_id = json.loads(s.response)["id"] if s.forwarded and s.status == 200 else None
        except (ValueError, KeyError, TypeError):
            pi_id = None
        if pi_id is None:
            self.unsure += 1
        return pi_id

    def _register(self, where: str, pi: dict) -> str:
        """Map a PaymentIntent of the rail to its intent (by the metadata the agent sent)."""
        md = pi.get("metadata") or {}
        iid = self.owner.get((md.get("agent"), md.get("key")))
        assert md.get("run") == self.load.run and iid, (
            f"{where}: PaymentIntent {pi['id']} ({md}) without an intent")
        self.pi_intent[pi["id"]] = iid
        self.pis_of[iid].add(pi["id"])
        return iid


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
        checks = Checks(guard, load, rail, fp, caps_by_day)
        reserved_today = 0
        caught_forwarding = 0  # intents a SIGKILL caught between decision and settlement

        for cycle in range(CYCLES):
            t0 = time.monotonic()
            if not guard.running:
                guard.start()
            api = AdminClient.for_guard(guard, token=token, label="crash")
            limit = reserved_today + HEADROOM
            set_cap(api, cap_id, limit)
            today = time.strftime("%Y-%m-%d", time.gmtime())
            caps_by_day[today] = max(caps_by_day.get(today, 0), limit)

            t1 = time.monotonic()
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

            t2 = time.monotonic()
            try:
                checks.check(cycle)
            except AssertionError:
                print(tail(guard.log))
                raise
            t3 = time.monotonic()
            caught_forwarding += len(checks.forwarding)
            today = time.strftime("%Y-%m-%d", time.gmtime())
            reserved_today = checks.spend.get(today, 0)
            if cycle % TIMING_EVERY == 0 or checks.full or cycle == CYCLES - 1:
                # A long run's log shows whether the check stays flat as the store grows.
                print(f"crash cycle {cycle}: start {t1 - t0:.2f}s, load {t2 - t1:.2f}s, "
                      f"{checks.summary(t3 - t2)}", flush=True)

        # Drain: every key left unknown/forwarding (and a sample of the others) once more.
        # Unknown intents resolve; nothing pays twice; the rest replay their first answer.
        intents = checks.intents
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
        t = time.monotonic()
        checks.check(CYCLES, final=True)
        print(f"crash final check: {checks.summary(time.monotonic() - t)}")
        intents = checks.intents
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
