"""RELIABILITY.md promise 6: tenants never see each other.

Three organizations, each with its own admin (a signed-in human and that human's API token), an
agent, a cap, a webhook, a rail key, policy versions, an allowed and a held intent. Every
admin endpoint that takes an object id (every path with a parameter in the published OpenAPI
document, so a new endpoint is covered automatically) is called by every identity of every other
organization with the victim's ids, in an order shuffled with a fixed seed: the answer is 404
(or 401), never data, and the victim's state (audit head, agents, caps, webhooks, members,
intents, policies, organization) is unchanged. Lists never mention the other organization's ids.
On the proxy, an agent cannot read another organization's intent, and replaying another agent's
Idempotency-Key is a new key of its own.
"""

from __future__ import annotations

import json
import random
import re
import uuid

import pytest
import requests

from admin_client import MEMBER_PASSWORD, AdminClient, describe, human, owner
from conftest import HOLD_THRESHOLD, HTTP_TIMEOUT_SECS, RAIL_KEY, TEST_POLICY, form, new_run_id

SEED = 20261124
ORGS = ("A", "B", "C")

# Valid bodies, so that a refusal cannot come from body validation before the lookup.
BODIES = {
    ("patch", "/api/v1/caps/{id}"): {"limit": 1},
    ("patch", "/api/v1/members/{user_id}"): {"role": "viewer"},
    ("patch", "/api/v1/organizations/{id}"): {"name": "pwned"},
    ("patch", "/api/v1/webhooks/{id}"): {"enabled": False},
    ("post", "/api/v1/intents/{id}/approve"): {"comment": "pwned"},
    ("post", "/api/v1/intents/{id}/deny"): {"comment": "pwned"},
}


class Tenant:
    def __init__(self, name: str):
        self.name = name
        self.org = ""
        self.email = f"admin-{name.lower()}-{uuid.uuid4().hex[:6]}@example.com"
        self.session: AdminClient | None = None
        self.token_client: AdminClient | None = None
        self.user_id = ""
        self.agent = {}
        self.cap = ""
        self.webhook = ""
        self.delivery = ""
        self.versions: list[int] = []
        self.allowed_intent = ""
        self.held_intent = ""
        self.pay_key = ""
        self.pay_body = b""
        self.pi = ""
        self.invitation = ""        # a pending invitation into this organization
        self.invitee = ""           # the email it was made for
        self.token_id = ""          # the admin's personal API token (bound to this org)

    def ids(self) -> list[str]:
        return [x for x in (self.org, self.user_id, self.agent.get("id"), self.cap,
                            self.webhook, self.delivery, self.allowed_intent, self.held_intent,
                            self.pi, self.email, self.invitation, self.invitee, self.token_id)
                if x]

    def identities(self):
        return [("session", self.session), ("token", self.token_client)]


def pay(guard, token: str, key: str, body: bytes) -> requests.Response:
    return requests.post(guard.proxy_url + "/v1/payment_intents", data=body,
                         headers={"Authorization": f"Bearer {token}", "Idempotency-Key": key,
                                  "Content-Type": "application/x-www-form-urlencoded"},
                         timeout=HTTP_TIMEOUT_SECS)


def set_up(guard) -> dict[str, Tenant]:
    boss = owner(guard)
    tenants = {n: Tenant(n) for n in ORGS}
    tenants["A"].org = guard.org_id
    for n in ORGS[1:]:
        created = boss.expect("POST", "/api/v1/organizations", {"name": f"org {n}"}, status=201)
        tenants[n].org = created["id"]
    for n, t in tenants.items():
        boss.switch_org(t.org)
        m = boss.invite(t.email, "admin")
        t.user_id = m["user_id"]
        if n != "A":
            boss.expect("PUT", "/api/v1/rail", {"stripe_secret_key": RAIL_KEY})
    run = new_run_id()
    for i, (n, t) in enumerate(tenants.items()):
        t.session = human(guard, t.email, MEMBER_PASSWORD, label=f"admin {n}")
        me = t.session.whoami()
        assert me["active_organization"]["id"] == t.org if isinstance(
            me.get("active_organization"), dict) else True, me
        created = t.session.expect("POST", "/api/v1/me/tokens", {"name": f"automation {n}"},
                                   status=201)
        assert created["token"].startswith("pg_user_"), created
        assert created["organization_id"] == t.org, created
        t.token_id = created["id"]
        t.token_client = AdminClient.for_guard(guard, token=created["token"],
                                               label=f"token {n}")
        s = t.session
        t.invitee = f"invitee-{n.lower()}-{uuid.uuid4().hex[:6]}@example.com"
        t.invitation = s.invite_only(t.invitee, "viewer")["id"]
        t.agent = s.create_agent(f"agent-{n}")
        t.cap = s.expect("POST", "/api/v1/caps", {"scope": "org", "currency": "usd",
                                                  "interval": "daily", "limit": 10_000_000,
                                                  "on_exceed": "deny"}, status=201)["id"]
        t.webhook = s.expect("POST", "/api/v1/webhooks",
                             {"url": f"http://127.0.0.1:9/hook-{n}"}, status=201)["id"]
        for _ in range(i + 1):  # A: 1, B: 2, C: 3 more versions: numbers differ per org
            s.expect("PUT", "/api/v1/policies", {"text": TEST_POLICY})
        t.versions = sorted(v["version"] for v in
                            _data(s.expect("GET", "/api/v1/policies/versions")))
        t.pay_key = str(uuid.uuid4())
        t.pay_body = form([("amount", 1000 + i), ("currency", "usd"), ("metadata[run]", run)])
        r = pay(guard, t.agent["token"], t.pay_key, t.pay_body)
        assert r.status_code == 200, r.text
        t.allowed_intent, t.pi = r.headers["Guard-Intent"], r.json()["id"]
        r = pay(guard, t.agent["token"], str(uuid.uuid4()),
                form([("amount", HOLD_THRESHOLD + 1), ("currency", "usd")]))
        assert r.status_code == 402, r.text
        t.held_intent = r.headers["Guard-Intent"]
        deliveries = _data(s.expect("GET", f"/api/v1/webhooks/{t.webhook}/deliveries"))
        t.delivery = deliveries[0]["id"] if deliveries else "dlv_" + "0" * 24
    return tenants


def _data(body):
    return body["data"] if isinstance(body, dict) and "data" in body else body


def snapshot(t: Tenant) -> dict:
    s = t.session
    get = lambda p, **q: s.expect("GET", p, params=q or None)  # noqa: E731
    assert get("/api/v1/audit/verify")["ok"] is True
    return {
        # The delivery worker keeps appending its attempts (the test webhooks point nowhere):
        # those are the organization's own background events, not another tenant's doing.
        "audit": [e for e in s.audit_events() if e["kind"] != "webhook.delivery_attempted"],
        "agents": get("/api/v1/agents"),
        "caps": get("/api/v1/caps"),
        "webhooks": [{k: w.get(k) for k in ("id", "url", "events", "enabled")}
                     for w in _data(get("/api/v1/webhooks"))],
        "members": get("/api/v1/members"),
        "invitations": get("/api/v1/invitations"),
        "tokens": get("/api/v1/me/tokens"),
        "intents": get("/api/v1/intents", limit=500),
        "policies": get("/api/v1/policies"),
        "versions": get("/api/v1/policies/versions"),
        "orgs": get("/api/v1/organizations"),
        "rail": get("/api/v1/rail"),
    }


def fill(template: str, victim: Tenant, intent: str) -> str | None:
    def value(m):
        name = m.group(1)
        if name == "user_id":
            return victim.user_id
        if name == "n":
            return str(victim.versions[-1])
        if name == "delivery":
            return victim.delivery
        if template.startswith("/api/v1/agents/"):
            return victim.agent["id"]
        if template.startswith("/api/v1/caps/"):
            return victim.cap
        if template.startswith("/api/v1/webhooks/"):
            return victim.webhook
        if template.startswith("/api/v1/intents/"):
            return intent
        if template.startswith("/api/v1/organizations/"):
            return victim.org
        if template.startswith("/api/v1/invitations/"):
            return victim.invitation
        if template.startswith("/api/v1/me/tokens/"):
            return victim.token_id
        raise AssertionError(f"no victim value for {{{name}}} in {template}")

    return re.sub(r"\{([^}]+)\}", value, template)


@pytest.fixture
def world(guard_factory):
    guard = guard_factory(env={"GUARD_WEBHOOKS_ALLOW_PRIVATE_TARGETS": "true"})
    return guard, set_up(guard)


def test_no_identity_reaches_another_organizations_objects(world):
    guard, tenants = world
    spec = requests.get(f"http://127.0.0.1:{guard.admin_port}/api/v1/openapi.json",
                        timeout=HTTP_TIMEOUT_SECS).json()
    templated = [(m, p) for p, ops in spec["paths"].items() for m in ops
                 if "{" in p and m in ("get", "post", "put", "patch", "delete")]
    assert len(templated) >= 15, templated  # the OpenAPI document lists the id endpoints

    before = {n: snapshot(t) for n, t in tenants.items()}
    rng = random.Random(SEED)
    attacks = []
    for a in ORGS:
        for v in ORGS:
            if a == v:
                continue
            for method, template in templated:
                if template.endswith("/activate") and tenants[v].versions[-1] in tenants[a].versions:
                    continue  # that version number exists in the attacker's own org too
                intents = ([tenants[v].held_intent] if "/approve" in template or "/deny" in
                           template else [tenants[v].allowed_intent, tenants[v].held_intent])
                for intent in intents:
                    for label, who in tenants[a].identities():
                        attacks.append((a, v, label, who, method, template,
                                        fill(template, tenants[v], intent)))
    rng.shuffle(attacks)

    leaks, wrong = [], []
    for a, v, label, who, method, template, path in attacks:
        body = BODIES.get((method, template), {} if method != "get" else None)
        # One connection per call: the admin server may close a kept-alive connection after
        # answering without reading a body the endpoint does not take (see the report).
        r = who.call(method.upper(), path, body, headers={"Connection": "close"})
        where = f"{label} of org {a} -> org {v}: {describe(r)}"
        if r.status_code not in (404, 401):
            # A refusal that does not depend on the object (an API token may never approve) is
            # no leak when it is exactly the answer for an id that exists nowhere.
            probe = who.call(method.upper(), re.sub(r"_[0-9a-f]{24}", "_" + "0" * 24, path),
                             body, headers={"Connection": "close"})
            if not (r.status_code == 403 and (probe.status_code, probe.text) ==
                    (r.status_code, r.text)):
                wrong.append(where)
        victim_ids = [x for x in tenants[v].ids() if x not in path]
        if any(x in r.text for x in victim_ids):
            leaks.append(where)
    # Switching the active organization to one you are not a member of.
    for a in ORGS:
        for v in ORGS:
            if a != v:
                for label, who in tenants[a].identities():
                    r = who.call("POST", "/api/v1/me/active-organization",
                                 {"organization_id": tenants[v].org},
                                 headers={"Connection": "close"})
                    if r.status_code not in (404, 401, 403):
                        wrong.append(f"{label} of org {a} switching to org {v}: {describe(r)}")
    assert leaks == [], "data of another organization in answers:\n" + "\n".join(leaks[:20])
    assert wrong == [], (f"{len(wrong)} of {len(attacks)} cross-tenant calls not 404/401:\n"
                         + "\n".join(wrong[:30]))

    after = {n: snapshot(t) for n, t in tenants.items()}
    for n in ORGS:
        for k in before[n]:
            assert after[n][k] == before[n][k], f"org {n}: {k} changed by another tenant"


LISTS = ["/api/v1/agents", "/api/v1/caps", "/api/v1/webhooks", "/api/v1/members",
         "/api/v1/invitations",
         "/api/v1/intents", "/api/v1/audit", "/api/v1/audit/export", "/api/v1/audit/verify",
         "/api/v1/policies", "/api/v1/policies/versions", "/api/v1/organizations",
         "/api/v1/rail", "/api/v1/me"]


def test_lists_never_mention_another_organization(world):
    guard, tenants = world
    for a, t in tenants.items():
        for label, who in t.identities():
            for path in LISTS:
                r = who.get(path)
                assert r.status_code == 200, describe(r)
                for v, other in tenants.items():
                    if v == a:
                        continue
                    found = [x for x in other.ids() if x in r.text]
                    assert not found, f"{label} of org {a}: {path} mentions org {v}: {found}"
            for webhook in [t.webhook]:
                r = who.get(f"/api/v1/webhooks/{webhook}/deliveries")
                assert r.status_code == 200, describe(r)


def test_proxy_paths_are_scoped_to_the_agent(world, localstripe):
    guard, tenants = world
    for a, t in tenants.items():
        token = t.agent["token"]
        for v, other in tenants.items():
            if v == a:
                continue
            for intent in (other.allowed_intent, other.held_intent):
                r = requests.get(f"{guard.proxy_url}/v1/guard/intents/{intent}",
                                 headers={"Authorization": f"Bearer {token}"},
                                 timeout=HTTP_TIMEOUT_SECS)
                assert r.status_code == 404, (a, v, r.status_code, r.text)
                assert intent not in r.text and other.org not in r.text
        # Its own intent is visible.
        r = requests.get(f"{guard.proxy_url}/v1/guard/intents/{t.allowed_intent}",
                         headers={"Authorization": f"Bearer {token}"}, timeout=HTTP_TIMEOUT_SECS)
        assert r.status_code == 200 and r.json()["id"] == t.allowed_intent, r.text

    # Replaying another organization's key and body: a new key of this agent, a new payment.
    order = list(ORGS)
    random.Random(SEED).shuffle(order)
    for a, v in zip(order, order[1:] + order[:1]):
        t, other = tenants[a], tenants[v]
        r = pay(guard, t.agent["token"], other.pay_key, other.pay_body)
        assert r.status_code == 200, r.text
        assert r.headers["Guard-Intent"] != other.allowed_intent
        assert r.json()["id"] != other.pi
        seen = t.session.intent(r.headers["Guard-Intent"])
        assert seen["agent"] == t.agent["id"], seen
        # The victim's own replay still returns its original answer.
        again = pay(guard, other.agent["token"], other.pay_key, other.pay_body)
        assert again.status_code == 200 and again.headers["Guard-Intent"] == other.allowed_intent
        assert again.json()["id"] == other.pi


def test_tokens_do_not_cross_listeners(world):
    guard, tenants = world
    admin = f"http://127.0.0.1:{guard.admin_port}"
    for t in tenants.values():
        r = requests.get(admin + "/api/v1/intents",
                         headers={"Authorization": f"Bearer {t.agent['token']}"},
                         timeout=HTTP_TIMEOUT_SECS)
        assert r.status_code == 401, r.text
        user_token = t.token_client.http.headers["Authorization"].split(" ", 1)[1]
        r = requests.get(f"{guard.proxy_url}/v1/guard/intents/{t.allowed_intent}",
                         headers={"Authorization": f"Bearer {user_token}"},
                         timeout=HTTP_TIMEOUT_SECS)
        assert r.status_code == 401, r.text
        r = pay(guard, user_token, str(uuid.uuid4()), t.pay_body)
        assert r.status_code == 401, r.text
        assert json.loads(r.text)["error"]["code"] == "guard_authentication_required"
