"""ADMIN_API.md "Roles": every endpoint of the admin API against every kind of caller.

One guard for the module. The owner from `payment-guard init` invites an Admin, an Approver
and a Viewer through the API; a fourth user ("mallory") creates a second organization through
the API and is then removed from the first, so she is an Owner elsewhere with no role here.

The matrix is a table: (method, path template, expected status per caller, setup, body,
stored-state check). Each row × caller is its own test. Mutating cells act on fresh objects
made for that cell (an agent, a member, a cap, a held intent, an organization), so cells are
independent. Every refused cell asserts the error code and that the stored state did not
change; every allowed cell asserts that it did.

Callers:
  owner, admin, approver, viewer  members of organization A (the guard's own) with that role
  anonymous                       no cookie, no token: 401 `authentication_required`
  other_org                       Owner of organization B acting on A's object ids: 404
                                  `not_found`, never data; on collection endpoints she acts in
                                  B and must see nothing of A.

Plus the rules the matrix cannot express: an API token cannot approve (even an Owner's),
an Owner deleting the session's active organization gets `reauthentication_required` next,
an Admin cannot grant or take away the Owner role, and the last owner stays.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any, Callable

import pytest
import requests

from admin_client import (MEMBER_PASSWORD, OWNER_EMAIL, AdminClient, admin_url, describe,
                          error_code, human, new_hold, owner, wait_admin_ready)
from conftest import (HTTP_TIMEOUT_SECS, RAIL_KEY, TEST_POLICY, Guard, new_run_id, tail)

ROLES = ("owner", "admin", "approver", "viewer", "anonymous", "other_org")
MEMBER_ROLES = ("admin", "approver", "viewer")
CODE_FOR = {401: "authentication_required", 403: "forbidden", 404: "not_found"}


# ---------------------------------------------------------------------------- the world


@dataclass
class World:
    guard: Guard
    clients: dict[str, AdminClient]
    owner_aux: AdminClient          # the owner's setup session, always active in A
    owner_orgs: AdminClient         # the owner's session that creates throwaway organizations
    org_a: str
    org_b: str
    emails: dict[str, str]
    user_ids: dict[str, str]
    agent_a: str
    intent_a: str
    cap_a: str
    run: str
    secrets: list[str] = field(default_factory=list)

    # -- fresh objects, one per cell

    def fresh_agent(self) -> dict:
        return self.owner_aux.create_agent(f"cell-{uuid.uuid4().hex[:8]}")

    def fresh_member(self) -> dict:
        return self.owner_aux.invite(f"m-{uuid.uuid4().hex[:10]}@example.com", "viewer")

    def fresh_cap(self) -> dict:
        # eur: the tests pay in usd, so this cap never changes a decision.
        cap = self.owner_aux.expect("POST", "/api/v1/caps",
                                    {"scope": "org", "currency": "eur", "interval": "daily",
                                     "limit": 10**9, "on_exceed": "hold"}, status=201)
        assert cap["id"].startswith("cap_"), cap
        return cap

    def fresh_hold(self) -> str:
        return new_hold(self.guard, run=self.run)

    def fresh_org(self, role: str) -> str:
        """An organization the owner created, where `role`'s user holds that role."""
        o = self.owner_orgs.expect("POST", "/api/v1/organizations",
                                   {"name": f"cell-{uuid.uuid4().hex[:8]}"}, status=201)
        org = o["id"]
        if role in MEMBER_ROLES:
            # Members are invited into the session's active organization (and join when they
            # accept, proving their password); switch back to A at once, so deleting this
            # organization never ends the setup session.
            self.owner_orgs.switch_org(org)
            try:
                self.owner_orgs.invite(self.emails[role], role, MEMBER_PASSWORD)
            finally:
                self.owner_orgs.switch_org(self.org_a)
        return org

    # -- stored state, read by the owner

    def org_of_owner(self, org: str) -> dict | None:
        orgs = self.owner_orgs.expect("GET", "/api/v1/organizations")["data"]
        return next((o for o in orgs if o["id"] == org), None)

    def agent(self, agent_id: str) -> dict:
        return self.owner_aux.expect("GET", f"/api/v1/agents/{agent_id}")

    def members(self) -> dict[str, dict]:
        data = self.owner_aux.expect("GET", "/api/v1/members")["data"]
        return {m["user_id"]: m for m in data}

    def invitations(self) -> dict[str, dict]:
        data = self.owner_aux.expect("GET", "/api/v1/invitations")["data"]
        return {i["id"]: i for i in data}

    def caps(self) -> dict[str, dict]:
        return {c["id"]: c for c in self.owner_aux.expect("GET", "/api/v1/caps")["data"]}

    def policy_versions(self, client: AdminClient | None = None) -> list[dict]:
        return (client or self.owner_aux).expect("GET", "/api/v1/policies/versions")["data"]

    def intent(self, intent_id: str) -> dict:
        return self.owner_aux.intent(intent_id)


def _start_guard(workdir, upstream_url) -> Guard:
    g = Guard(workdir, upstream_url)
    g.start()
    return g


@pytest.fixture(scope="module")
def world(tmp_path_factory, localstripe):
    g = _start_guard(tmp_path_factory.mktemp("rbac"), localstripe.url)
    try:
        w = _build_world(g)
        yield w
    finally:
        try:
            g.stop()
        finally:
            rc, results, stderr = g.audit_verify()
            if rc != 0:
                print(tail(g.log))
            assert rc == 0 and results and all(r.get("ok") is True for r in results), (
                f"audit verify after the RBAC matrix: exit {rc}, {results}, {stderr}")


def _build_world(g: Guard) -> World:
    wait_admin_ready(g)
    org_a = g.org_id
    boss = owner(g)
    assert boss.me["active_organization"]["id"] == org_a, boss.me
    aux = owner(g)
    orgs = owner(g)

    emails = {"owner": OWNER_EMAIL}
    clients: dict[str, AdminClient] = {"owner": boss}
    user_ids = {"owner": boss.user_id()}
    for role in MEMBER_ROLES:
        email = f"{role}@example.com"
        m = aux.invite(email, role)
        emails[role], user_ids[role] = email, m["user_id"]
        clients[role] = human(g, email, MEMBER_PASSWORD, label=role)
        assert clients[role].me["active_organization"]["id"] == org_a, clients[role].me

    # Mallory: invited into A, creates B through the API, moves there, is removed from A.
    aux.invite("mallory@example.com", "viewer")
    mallory = human(g, "mallory@example.com", MEMBER_PASSWORD, label="other_org")
    b = mallory.expect("POST", "/api/v1/organizations", {"name": "other-org"}, status=201)
    org_b = b["id"]
    mallory.switch_org(org_b)
    mallory_id = mallory.user_id()
    aux.expect("DELETE", f"/api/v1/members/{mallory_id}")
    me = mallory.whoami()
    assert [m["organization_id"] for m in me["memberships"]] == [org_b], me
    assert me["active_organization"]["id"] == org_b, me
    clients["other_org"] = mallory
    emails["other_org"], user_ids["other_org"] = "mallory@example.com", mallory_id
    clients["anonymous"] = AdminClient(admin_url(g), label="anonymous")

    # A has several policy versions (B has one), so A's highest number is unknown to B.
    for _ in range(4):
        aux.expect("PUT", "/api/v1/policies", {"text": TEST_POLICY})

    run = new_run_id()
    r = requests.post(
        g.proxy_url + "/v1/payment_intents",
        data=f"amount=1000&currency=usd&payment_method_types[0]=card&metadata[run]={run}",
        headers={"Authorization": f"Bearer {g.tokens['a1']}", "Idempotency-Key": str(uuid.uuid4()),
                 "Content-Type": "application/x-www-form-urlencoded"},
        timeout=HTTP_TIMEOUT_SECS)
    assert r.status_code == 200, r.text
    intent_a = r.headers["Guard-Intent"]

    w = World(guard=g, clients=clients, owner_aux=aux, owner_orgs=orgs, org_a=org_a,
              org_b=org_b, emails=emails, user_ids=user_ids, agent_a=g.agent_ids["a1"],
              intent_a=intent_a, cap_a="", run=run)
    w.cap_a = w.fresh_cap()["id"]
    # What the other organization must never see.
    w.secrets = [org_a, w.agent_a, intent_a, w.cap_a, OWNER_EMAIL, emails["admin"],
                 emails["viewer"], user_ids["owner"], user_ids["admin"]]
    return w


# ---------------------------------------------------------------------------- the table


def roles(owner, admin, approver, viewer, other_org, anonymous=401) -> dict[str, int]:
    return dict(owner=owner, admin=admin, approver=approver, viewer=viewer,
                anonymous=anonymous, other_org=other_org)


READ = roles(200, 200, 200, 200, other_org=200)             # collection reads: B's own data
READ_ONE = roles(200, 200, 200, 200, other_org=404)          # A's object by id
APPROVE = roles(200, 200, 200, 403, other_org=404)
MANAGE_ONE = roles(200, 200, 403, 403, other_org=404)
MANAGE_CREATE = roles(201, 201, 403, 403, other_org=201)     # other_org creates in B
MANAGE_COLLECTION = roles(200, 200, 403, 403, other_org=200)
OWNER_ONE = roles(200, 403, 403, 403, other_org=404)
ANY_SIGNED_IN_CREATE = roles(201, 201, 201, 201, other_org=201)


@dataclass
class Cell:
    method: str
    path: str                                   # template, formatted with the setup's dict
    expect: dict[str, int]
    setup: Callable[[World, str], dict] | None = None
    body: Callable[[World, str, dict], Any] | None = None
    # verify(world, role, ctx, response, acted) with acted = the call was expected to succeed
    verify: Callable[[World, str, dict, requests.Response, bool], None] | None = None

    @property
    def name(self) -> str:
        return f"{self.method} {self.path}"


def no_leak(w: World, role: str, ctx: dict, r: requests.Response, acted: bool) -> None:
    """The other organization's collection answers hold nothing of A."""
    if role == "other_org":
        leaked = [s for s in w.secrets if s in r.text]
        assert not leaked, f"{describe(r)} reveals organization A's {leaked}"


# -- organizations

def s_fresh_org(w: World, role: str) -> dict:
    return {"id": w.fresh_org(role)}


def v_org_created(w, role, ctx, r, acted):
    no_leak(w, role, ctx, r, acted)
    if acted:
        created = r.json()
        assert created["id"].startswith("org_"), created
        me = w.clients[role].whoami()
        assert created["id"] in [m["organization_id"] for m in me["memberships"]], me
        assert [m["role"] for m in me["memberships"] if m["organization_id"] == created["id"]] \
            == ["owner"], me
        # Creating an organization does not switch the session's active one.
        want = w.org_b if role == "other_org" else w.org_a
        assert me["active_organization"]["id"] == want, me


def v_org_listed(w, role, ctx, r, acted):
    no_leak(w, role, ctx, r, acted)
    if acted and role != "other_org":
        assert w.org_a in [o["id"] for o in r.json()["data"]], r.text


def v_org_deleted(w, role, ctx, r, acted):
    o = w.org_of_owner(ctx["id"])
    if acted:
        assert o is None, f"organization {ctx['id']} still listed after delete"
    else:
        assert o is not None, f"organization {ctx['id']} vanished after a refused delete"


def b_rename(w, role, ctx):
    ctx["name"] = f"renamed-{uuid.uuid4().hex[:8]}"
    return {"name": ctx["name"]}


def v_org_renamed(w, role, ctx, r, acted):
    o = w.org_of_owner(ctx["id"])
    assert o is not None
    assert (o["name"] == ctx["name"]) == acted, o


def s_fresh_frozen_org(w: World, role: str) -> dict:
    org = w.fresh_org(role)
    w.owner_orgs.expect("POST", f"/api/v1/organizations/{org}/freeze")
    return {"id": org}


def v_org_frozen(frozen_if_acted: bool):
    def v(w, role, ctx, r, acted):
        o = w.org_of_owner(ctx["id"])
        assert o is not None
        want = frozen_if_acted if acted else not frozen_if_acted
        assert o["frozen"] is want, o
    return v


# -- members

def b_new_member(w, role, ctx):
    ctx["email"] = f"inv-{uuid.uuid4().hex[:10]}@example.com"
    return {"email": ctx["email"], "role": "viewer"}


def v_member_invited(w, role, ctx, r, acted):
    """Inviting creates a pending invitation in the caller's active organization (B for
    other_org), never a membership: that starts when the invitee accepts."""
    no_leak(w, role, ctx, r, acted)
    assert ctx["email"] not in [m["email"] for m in w.members().values()], (
        f"{ctx['email']} became a member of A before accepting")
    pending = [i for i in w.invitations().values() if i["email"] == ctx["email"]]
    if acted and role != "other_org":
        inv = r.json()
        assert inv["object"] == "invitation" and inv["token"].startswith("pg_inv_"), inv
        assert [(i["id"], i["role"], i["status"], i["invited_by"]["id"]) for i in pending] == [
            (inv["id"], "viewer", "pending", w.user_ids[role])], pending
    else:
        assert not pending, f"invitations for {ctx['email']} in A: {pending}"


def s_fresh_invitation(w: World, role: str) -> dict:
    inv = w.owner_aux.invite_only(f"pending-{uuid.uuid4().hex[:10]}@example.com", "viewer")
    return {"id": inv["id"]}


def v_invitation_revoked(w, role, ctx, r, acted):
    inv = w.invitations()[ctx["id"]]
    assert inv["status"] == ("revoked" if acted else "pending"), inv


def v_invitations_listed(w, role, ctx, r, acted):
    no_leak(w, role, ctx, r, acted)
    if acted and role != "other_org":
        body = r.json()
        assert body["object"] == "list", body
        assert set(w.invitations()) == {i["id"] for i in body["data"]}, body


def s_fresh_member(w: World, role: str) -> dict:
    return {"user_id": w.fresh_member()["user_id"]}


def v_member_role(w, role, ctx, r, acted):
    m = w.members()[ctx["user_id"]]
    assert m["role"] == ("approver" if acted else "viewer"), m


def v_member_removed(w, role, ctx, r, acted):
    assert (ctx["user_id"] not in w.members()) == acted


# -- agents

def s_fresh_agent(w: World, role: str) -> dict:
    a = w.fresh_agent()
    return {"id": a["id"], "token": a["token"]}


def s_fresh_frozen_agent(w: World, role: str) -> dict:
    ctx = s_fresh_agent(w, role)
    w.owner_aux.expect("POST", f"/api/v1/agents/{ctx['id']}/freeze")
    return ctx


def b_new_agent(w, role, ctx):
    ctx["name"] = f"new-{uuid.uuid4().hex[:8]}"
    return {"name": ctx["name"]}


def v_agent_created(w, role, ctx, r, acted):
    no_leak(w, role, ctx, r, acted)
    names = [a["name"] for a in w.owner_aux.expect("GET", "/api/v1/agents")["data"]]
    assert (ctx["name"] in names) == (acted and role != "other_org"), names
    if acted:
        assert r.json()["token"].startswith("pg_agent_"), r.text


def proxy_knows(w: World, token: str) -> int:
    """401 when the proxy refuses the token, 404 when it accepts it (unknown intent id)."""
    r = requests.get(f"{w.guard.proxy_url}/v1/guard/intents/int_doesnotexist",
                     headers={"Authorization": f"Bearer {token}"}, timeout=HTTP_TIMEOUT_SECS)
    assert r.status_code in (401, 404), r.text
    return r.status_code


def v_agent_rotated(w, role, ctx, r, acted):
    if acted:
        new = r.json()["token"]
        assert new.startswith("pg_agent_") and new != ctx["token"], r.text
        assert proxy_knows(w, ctx["token"]) == 401, "the old token still works after rotation"
        assert proxy_knows(w, new) == 404, "the new token does not work"
    else:
        assert proxy_knows(w, ctx["token"]) == 404, "a refused rotation changed the token"


def v_agent_status(status_if_acted: str, status_otherwise: str):
    def v(w, role, ctx, r, acted):
        a = w.agent(ctx["id"])
        assert a["status"] == (status_if_acted if acted else status_otherwise), a
    return v


# -- policies

def b_policy(w, role, ctx):
    ctx["before_a"] = len(w.policy_versions())
    return {"text": TEST_POLICY}


def v_policy_stored(w, role, ctx, r, acted):
    no_leak(w, role, ctx, r, acted)
    after = len(w.policy_versions())
    assert after == ctx["before_a"] + (1 if acted and role != "other_org" else 0), (
        f"A had {ctx['before_a']} policy versions, now {after}")


def s_inactive_version(w: World, role: str) -> dict:
    versions = w.policy_versions()
    active = next(v["version"] for v in versions if v["active"])
    if role == "other_org":
        n = max(v["version"] for v in versions)
        theirs = w.policy_versions(w.clients["other_org"])
        assert max(v["version"] for v in theirs) < n, "B must not have A's version number"
        return {"n": n, "active": active}
    # Another copy of TEST_POLICY (made in _build_world), so activating it changes nothing else.
    n = max(v["version"] for v in versions if v["version"] != active and v["version"] > 1)
    return {"n": n, "active": active}


def v_version_active(w, role, ctx, r, acted):
    active = next(v["version"] for v in w.policy_versions() if v["active"])
    assert active == (ctx["n"] if acted else ctx["active"]), active


def b_simulate(w, role, ctx):
    return {"agent": w.agent_a, "method": "POST", "path": "/v1/payment_intents",
            "body": "amount=1000&currency=usd"}


def v_simulated(w, role, ctx, r, acted):
    if acted:
        v = r.json()
        assert v["facts"] and v["verdict"], v


# -- caps

def b_new_cap(w, role, ctx):
    ctx["before"] = set(w.caps())
    return {"scope": "org", "currency": "eur", "interval": "weekly", "limit": 10**9,
            "on_exceed": "deny"}


def v_cap_created(w, role, ctx, r, acted):
    no_leak(w, role, ctx, r, acted)
    added = set(w.caps()) - ctx["before"]
    if acted and role != "other_org":
        assert added == {r.json()["id"]}, (added, r.text)
    else:
        assert not added, f"caps appeared in A: {added}"


def s_fresh_cap(w: World, role: str) -> dict:
    c = w.fresh_cap()
    return {"id": c["id"], "limit": c["limit"]}


def v_cap_patched(w, role, ctx, r, acted):
    c = w.caps()[ctx["id"]]
    assert c["limit"] == (12345 if acted else ctx["limit"]), c


def v_cap_deleted(w, role, ctx, r, acted):
    assert (ctx["id"] not in w.caps()) == acted


# -- rail

def v_rail_read(w, role, ctx, r, acted):
    no_leak(w, role, ctx, r, acted)
    if acted:
        body = r.json()
        assert RAIL_KEY not in r.text, "GET /rail revealed the key"
        if role == "other_org":
            assert body["configured"] is False, body
        else:
            assert body["configured"] is True, body


# -- intents

def s_fresh_hold(w: World, role: str) -> dict:
    return {"id": w.fresh_hold()}


def v_intent_decided(verdict: str):
    def v(w, role, ctx, r, acted):
        i = w.intent(ctx["id"])
        if not acted:
            assert i["status"] == "pending_approval" and i["approvals"] == [], i
            return
        uid = w.user_ids[role]
        assert [(a["user"], a["verdict"]) for a in i["approvals"]] == [(uid, verdict)], i
        if verdict == "deny":
            assert i["status"] == "denied", i
        else:
            assert i["status"] in ("approved", "forwarding", "succeeded"), i
    return v


def v_intent_read(w, role, ctx, r, acted):
    if acted:
        assert r.json()["id"] == w.intent_a, r.text


def v_listed_intents(w, role, ctx, r, acted):
    no_leak(w, role, ctx, r, acted)
    if acted and role != "other_org":
        assert w.intent_a in [i["id"] for i in r.json()["data"]], r.text


# -- audit and me

def v_audit_verified(w, role, ctx, r, acted):
    no_leak(w, role, ctx, r, acted)
    if acted:
        assert r.json()["ok"] is True, r.text


def v_me(w, role, ctx, r, acted):
    no_leak(w, role, ctx, r, acted)
    if acted:
        me = r.json()
        assert me["user"]["email"] == w.emails[role], me
        assert me["authenticated_via"] == "session", me


def s_agent_a(w, role):
    return {"id": w.agent_a}


def s_intent_a(w, role):
    return {"id": w.intent_a}


MATRIX: list[Cell] = [
    Cell("GET", "/api/v1/me", roles(200, 200, 200, 200, other_org=200), verify=v_me),
    # organizations
    Cell("GET", "/api/v1/organizations", READ, verify=v_org_listed),
    Cell("POST", "/api/v1/organizations", ANY_SIGNED_IN_CREATE,
         body=lambda w, r, c: {"name": f"made-by-{r}"}, verify=v_org_created),
    Cell("PATCH", "/api/v1/organizations/{id}", MANAGE_ONE, setup=s_fresh_org, body=b_rename,
         verify=v_org_renamed),
    Cell("POST", "/api/v1/organizations/{id}/freeze", MANAGE_ONE, setup=s_fresh_org,
         verify=v_org_frozen(True)),
    Cell("POST", "/api/v1/organizations/{id}/unfreeze", MANAGE_ONE, setup=s_fresh_frozen_org,
         verify=v_org_frozen(False)),
    Cell("DELETE", "/api/v1/organizations/{id}", OWNER_ONE, setup=s_fresh_org,
         verify=v_org_deleted),
    # members
    Cell("GET", "/api/v1/members", READ, verify=no_leak),
    Cell("POST", "/api/v1/members", MANAGE_CREATE, body=b_new_member, verify=v_member_invited),
    Cell("GET", "/api/v1/invitations", MANAGE_COLLECTION, verify=v_invitations_listed),
    Cell("DELETE", "/api/v1/invitations/{id}", MANAGE_ONE, setup=s_fresh_invitation,
         verify=v_invitation_revoked),
    Cell("PATCH", "/api/v1/members/{user_id}", MANAGE_ONE, setup=s_fresh_member,
         body=lambda w, r, c: {"role": "approver"}, verify=v_member_role),
    Cell("DELETE", "/api/v1/members/{user_id}", MANAGE_ONE, setup=s_fresh_member,
         verify=v_member_removed),
    # agents
    Cell("GET", "/api/v1/agents", READ, verify=no_leak),
    Cell("POST", "/api/v1/agents", MANAGE_CREATE, body=b_new_agent, verify=v_agent_created),
    Cell("GET", "/api/v1/agents/{id}", READ_ONE, setup=s_agent_a),
    Cell("POST", "/api/v1/agents/{id}/rotate", MANAGE_ONE, setup=s_fresh_agent,
         verify=v_agent_rotated),
    Cell("POST", "/api/v1/agents/{id}/freeze", MANAGE_ONE, setup=s_fresh_agent,
         verify=v_agent_status("frozen", "active")),
    Cell("POST", "/api/v1/agents/{id}/unfreeze", MANAGE_ONE, setup=s_fresh_frozen_agent,
         verify=v_agent_status("active", "frozen")),
    Cell("POST", "/api/v1/agents/{id}/revoke", MANAGE_ONE, setup=s_fresh_agent,
         verify=v_agent_status("revoked", "active")),
    # policies
    Cell("GET", "/api/v1/policies", READ, verify=no_leak),
    Cell("PUT", "/api/v1/policies", MANAGE_COLLECTION, body=b_policy, verify=v_policy_stored),
    Cell("GET", "/api/v1/policies/versions", READ, verify=no_leak),
    Cell("POST", "/api/v1/policies/versions/{n}/activate", MANAGE_ONE, setup=s_inactive_version,
         verify=v_version_active),
    Cell("POST", "/api/v1/policies/simulate", READ_ONE, body=b_simulate, verify=v_simulated),
    Cell("GET", "/api/v1/policies/schema", READ),
    # caps
    Cell("GET", "/api/v1/caps", READ, verify=no_leak),
    Cell("POST", "/api/v1/caps", MANAGE_CREATE, body=b_new_cap, verify=v_cap_created),
    Cell("PATCH", "/api/v1/caps/{id}", MANAGE_ONE, setup=s_fresh_cap,
         body=lambda w, r, c: {"limit": 12345}, verify=v_cap_patched),
    Cell("DELETE", "/api/v1/caps/{id}", MANAGE_ONE, setup=s_fresh_cap, verify=v_cap_deleted),
    # rail: write-only key, Owner and Admin only (reading its mode too)
    Cell("GET", "/api/v1/rail", MANAGE_COLLECTION, verify=v_rail_read),
    Cell("PUT", "/api/v1/rail", MANAGE_COLLECTION,
         body=lambda w, r, c: {"stripe_secret_key": RAIL_KEY}, verify=no_leak),
    # intents and approvals
    Cell("GET", "/api/v1/intents", READ, verify=v_listed_intents),
    Cell("GET", "/api/v1/intents/{id}", READ_ONE, setup=s_intent_a, verify=v_intent_read),
    Cell("POST", "/api/v1/intents/{id}/approve", APPROVE, setup=s_fresh_hold,
         body=lambda w, r, c: {"comment": f"approved by {r}"}, verify=v_intent_decided("approve")),
    Cell("POST", "/api/v1/intents/{id}/deny", APPROVE, setup=s_fresh_hold,
         body=lambda w, r, c: {"comment": f"denied by {r}"}, verify=v_intent_decided("deny")),
    # audit
    Cell("GET", "/api/v1/audit", READ, verify=no_leak),
    Cell("GET", "/api/v1/audit/verify", READ, verify=v_audit_verified),
    Cell("GET", "/api/v1/audit/export", READ, verify=no_leak),
]

CASES = [pytest.param(cell, role, id=f"{cell.name} as {role}") for cell in MATRIX for role in ROLES]


@pytest.mark.parametrize("cell,role", CASES)
def test_role_matrix(world: World, cell: Cell, role: str):
    ctx = cell.setup(world, role) if cell.setup else {}
    path = cell.path.format(**ctx)
    body = cell.body(world, role, ctx) if cell.body else None
    want = cell.expect[role]

    r = world.clients[role].call(cell.method, path, body)

    assert r.status_code == want, (
        f"{cell.name} as {role}: expected {want}, got {r.status_code}: {r.text[:500]}")
    if want in CODE_FOR:
        assert error_code(r) == CODE_FOR[want], (
            f"{cell.name} as {role}: expected code {CODE_FOR[want]!r}: {r.text[:500]}")
        assert set(r.json()) == {"error"}, f"an error answer carries data: {r.text[:500]}"
    if cell.verify:
        cell.verify(world, role, ctx, r, 200 <= want < 300)


def test_matrix_covers_every_resource_route():
    """The table above names every route that admin/src/resources.rs registers."""
    import re

    from conftest import REPO

    src = (REPO / "admin" / "src" / "resources.rs").read_text()
    declared = {(m.upper(), p) for m, p in
                re.findall(r'#\[utoipa::path\((\w+),\s*path\s*=\s*"([^"]+)"', src)}
    norm = lambda p: re.sub(r"\{[^}]+\}", "{}", p)  # noqa: E731
    in_table = {(c.method, norm(c.path)) for c in MATRIX}
    missing = {(m, p) for m, p in declared if (m, norm(p)) not in in_table}
    assert declared and not missing, f"routes without a row in MATRIX: {sorted(missing)}"


# ---------------------------------------------------------------------------- rules beyond the table


def test_api_token_cannot_approve_even_for_an_owner(guard):
    boss = owner(guard)
    token = boss.create_api_token("ci-bot")
    bot = AdminClient.for_guard(guard, token=token, label="owner-token")
    # The token is good: it reads with the Owner's role...
    assert bot.whoami()["authenticated_via"] == "api_token"
    assert bot.expect("GET", "/api/v1/intents")["object"] == "list"
    held = new_hold(guard, run=new_run_id())

    # ...but approving or denying a hold is a signed-in human's act.
    for verb in ("approve", "deny"):
        r = bot.post(f"/api/v1/intents/{held}/{verb}", {"comment": "from a script"})
        assert r.status_code == 403 and error_code(r) == "forbidden", f"{verb}: {describe(r)}"
    i = boss.intent(held)
    assert i["status"] == "pending_approval" and i["approvals"] == [], i

    # The same Owner, signed in, may.
    boss.expect("POST", f"/api/v1/intents/{held}/approve", {"comment": "by hand"})
    assert boss.intent(held)["approvals"][0]["user"] == boss.user_id()


def test_deleting_the_active_organization_ends_the_session(guard):
    boss, other_session = owner(guard), owner(guard)
    doomed = boss.expect("POST", "/api/v1/organizations", {"name": "doomed"}, status=201)["id"]
    boss.switch_org(doomed)
    assert boss.expect("GET", "/api/v1/agents")["data"] == []

    boss.expect("DELETE", f"/api/v1/organizations/{doomed}")

    r = boss.get("/api/v1/agents")
    assert r.status_code == 401 and error_code(r) == "reauthentication_required", describe(r)
    # The session ended: it is not let back in by any endpoint.
    r = boss.get("/api/v1/me")
    assert r.status_code == 401, describe(r)
    assert error_code(r) in ("authentication_required", "reauthentication_required"), describe(r)
    # Another session of the same owner, active in the surviving organization, is unaffected.
    me = other_session.whoami()
    assert me["active_organization"]["id"] == guard.org_id, me
    assert doomed not in [m["organization_id"] for m in me["memberships"]], me
    other_session.expect("GET", "/api/v1/agents")


def test_admin_cannot_grant_or_take_the_owner_role(guard):
    boss = owner(guard)
    owner_id = boss.user_id()
    boss.invite("admin@example.com", "admin")
    admin = human(guard, "admin@example.com", MEMBER_PASSWORD, label="admin")
    viewer = boss.invite("viewer@example.com", "viewer")

    cases = [
        ("PATCH", f"/api/v1/members/{viewer['user_id']}", {"role": "owner"}),
        ("POST", "/api/v1/members", {"email": "new-owner@example.com", "role": "owner"}),
        ("PATCH", f"/api/v1/members/{owner_id}", {"role": "viewer"}),
        ("DELETE", f"/api/v1/members/{owner_id}", None),
    ]
    failures = []
    for method, path, body in cases:
        r = admin.call(method, path, body)
        if r.status_code != 403 or error_code(r) != "forbidden":
            failures.append(f"admin {method} {path} {body}: expected 403 forbidden, got "
                            f"{r.status_code} {r.text[:300]}")
    members = {m["email"]: m["role"] for m in boss.expect("GET", "/api/v1/members")["data"]}
    assert members == {OWNER_EMAIL: "owner", "admin@example.com": "admin",
                       "viewer@example.com": "viewer"}, members
    invitations = boss.expect("GET", "/api/v1/invitations")["data"]
    assert [i["email"] for i in invitations if i["status"] == "pending"] == [], invitations
    assert not failures, "\n".join(failures)
    # An Owner may grant it.
    boss.expect("PATCH", f"/api/v1/members/{viewer['user_id']}", {"role": "owner"})


def test_last_owner_cannot_be_demoted_or_removed(guard):
    boss = owner(guard)
    owner_id = boss.user_id()

    r = boss.patch(f"/api/v1/members/{owner_id}", {"role": "admin"})
    assert r.status_code == 409 and error_code(r) == "conflict", describe(r)
    r = boss.delete(f"/api/v1/members/{owner_id}")
    assert r.status_code == 409 and error_code(r) == "conflict", describe(r)
    members = boss.expect("GET", "/api/v1/members")["data"]
    assert [(m["email"], m["role"]) for m in members] == [(OWNER_EMAIL, "owner")], members

    # With a second owner, the first may step down.
    second = boss.invite("second-owner@example.com", "owner")
    boss.expect("PATCH", f"/api/v1/members/{owner_id}", {"role": "admin"})
    roles_now = {m["user_id"]: m["role"] for m in boss.expect("GET", "/api/v1/members")["data"]}
    assert roles_now == {owner_id: "admin", second["user_id"]: "owner"}, roles_now
