"""ADMIN_API.md "Mutations and step-up": every admin mutation honours `Idempotency-Key` with the
proxy's semantics, and approve/deny require one.

Humans act through the real admin API (requests, their own sessions); the agent is raw HTTP
through the proxy. Each test asserts the exact status and error code, and the stored state
through the API (lists, the intent, the audit trail) or the store's own files.
"""

from __future__ import annotations

import base64
import threading
import uuid

from admin_client import (MEMBER_PASSWORD, AdminClient, describe, error_code, human, new_hold,
                          owner)
from conftest import OWNER_PASSWORD, new_run_id

CONCURRENT_REQUESTS = 8
RACE_ROUNDS = 6


def key() -> str:
    return f"e2e-{uuid.uuid4()}"


def with_key(k: str | None) -> dict:
    return {"Idempotency-Key": k}


def snapshot(c: AdminClient) -> dict:
    """The stored state a mutation could change, as the API shows it."""
    return {
        "agents": c.expect("GET", "/api/v1/agents"),
        "caps": c.expect("GET", "/api/v1/caps"),
        "members": c.expect("GET", "/api/v1/members"),
        "audit": len(c.audit_events()),
    }


def ids(listing) -> list[str]:
    data = listing["data"] if isinstance(listing, dict) else listing
    return sorted(x.get("id") or x.get("user_id") for x in data)


CAP = {"scope": "org", "currency": "usd", "interval": "daily", "limit": 123456,
       "on_exceed": "deny"}


# ---------------------------------------------------------------------------- replay


def test_same_key_and_body_replays_the_stored_answer_and_changes_nothing(guard):
    boss = owner(guard)
    k_agent, k_cap = key(), key()
    first_agent = boss.call("POST", "/api/v1/agents", {"name": "replayed"},
                            headers=with_key(k_agent))
    assert first_agent.status_code == 201, describe(first_agent)
    assert "Idempotent-Replayed" not in first_agent.headers, dict(first_agent.headers)
    first_cap = boss.call("POST", "/api/v1/caps", CAP, headers=with_key(k_cap))
    assert first_cap.status_code == 201, describe(first_cap)
    before = snapshot(boss)

    again_agent = boss.call("POST", "/api/v1/agents", {"name": "replayed"},
                            headers=with_key(k_agent))
    again_cap = boss.call("POST", "/api/v1/caps", CAP, headers=with_key(k_cap))
    for first, again in ((first_agent, again_agent), (first_cap, again_cap)):
        assert again.status_code == 201, describe(again)
        assert again.content == first.content, (first.text, again.text)
        assert again.headers["Content-Type"] == first.headers["Content-Type"]
        assert again.headers.get("Idempotent-Replayed") == "true", dict(again.headers)
    # The token shown once is the same token, not a second agent's.
    assert again_agent.json()["token"] == first_agent.json()["token"]

    after = snapshot(boss)
    assert ids(after["agents"]) == ids(before["agents"])
    assert ids(after["caps"]) == ids(before["caps"])
    assert ids(after["members"]) == ids(before["members"])
    assert after["audit"] == before["audit"], "a replay appended audit events"


def test_same_key_with_another_request_is_refused_and_changes_nothing(guard):
    boss = owner(guard)
    k = key()
    first = boss.call("POST", "/api/v1/caps", CAP, headers=with_key(k))
    assert first.status_code == 201, describe(first)
    before = snapshot(boss)

    other_body = boss.call("POST", "/api/v1/caps", {**CAP, "limit": 999},
                           headers=with_key(k))
    assert other_body.status_code == 400 and error_code(other_body) == "idempotency_key_reused", (
        describe(other_body))
    other_path = boss.call("POST", "/api/v1/agents", {"name": "x"}, headers=with_key(k))
    assert other_path.status_code == 400 and error_code(other_path) == "idempotency_key_reused", (
        describe(other_path))
    other_method = boss.call("DELETE", f"/api/v1/caps/{first.json()['id']}", headers=with_key(k))
    assert other_method.status_code == 400, describe(other_method)
    assert error_code(other_method) == "idempotency_key_reused", describe(other_method)

    after = snapshot(boss)
    assert after == before, "a refused reuse changed stored state"


def test_a_refused_request_releases_its_key(guard):
    """A request the API refused changed nothing: the client may fix it and retry with the key,
    and from then on the key stands for the request that succeeded."""
    boss = owner(guard)
    before = ids(boss.expect("GET", "/api/v1/caps"))
    k = key()
    bad = boss.call("POST", "/api/v1/caps", {**CAP, "limit": -1}, headers=with_key(k))
    assert bad.status_code == 422 and error_code(bad) == "validation_failed", describe(bad)
    good = boss.call("POST", "/api/v1/caps", CAP, headers=with_key(k))
    assert good.status_code == 201, describe(good)
    assert "Idempotent-Replayed" not in good.headers
    again = boss.call("POST", "/api/v1/caps", CAP, headers=with_key(k))
    assert again.status_code == 201 and again.headers.get("Idempotent-Replayed") == "true", (
        describe(again))
    assert again.content == good.content
    assert ids(boss.expect("GET", "/api/v1/caps")) == sorted(before + [good.json()["id"]])


# ---------------------------------------------------------------------------- approve / deny


def test_approve_and_deny_without_a_key_are_refused_and_record_nothing(guard):
    boss = owner(guard)
    intent_id = new_hold(guard, run=new_run_id())
    audit_before = len(boss.audit_events())
    for verb in ("approve", "deny"):
        for missing in (None, ""):
            r = boss.call("POST", f"/api/v1/intents/{intent_id}/{verb}", {"comment": "no key"},
                          headers=with_key(missing))
            assert r.status_code == 400 and error_code(r) == "idempotency_key_required", describe(r)
    i = boss.intent(intent_id)
    assert i["status"] == "pending_approval" and i["approvals"] == [], i
    assert len(boss.audit_events()) == audit_before


def test_approve_twice_with_one_key_approves_once(guard):
    boss = owner(guard)
    intent_id = new_hold(guard, run=new_run_id())
    k = key()
    first = boss.call("POST", f"/api/v1/intents/{intent_id}/approve", {"comment": "ok"},
                      headers=with_key(k))
    assert first.status_code == 200, describe(first)
    second = boss.call("POST", f"/api/v1/intents/{intent_id}/approve", {"comment": "ok"},
                       headers=with_key(k))
    assert second.status_code == 200, describe(second)
    assert second.content == first.content
    assert second.headers.get("Idempotent-Replayed") == "true", dict(second.headers)

    i = boss.intent(intent_id)
    assert [a["verdict"] for a in i["approvals"]] == ["approve"], i
    approved = [e for e in boss.audit_events()
                if e["kind"] == "intent.approved" and e["data"].get("intent") == intent_id]
    assert len(approved) == 1, approved


def test_deny_twice_with_one_key_denies_once(guard):
    boss = owner(guard)
    intent_id = new_hold(guard, run=new_run_id())
    k = key()
    answers = [boss.call("POST", f"/api/v1/intents/{intent_id}/deny", {}, headers=with_key(k))
               for _ in range(2)]
    assert [r.status_code for r in answers] == [200, 200], [describe(r) for r in answers]
    assert answers[0].content == answers[1].content
    assert boss.intent(intent_id)["status"] == "denied"
    denied = [e for e in boss.audit_events()
              if e["kind"] == "intent.denied" and e["data"].get("intent") == intent_id]
    assert len(denied) == 1, denied


# ---------------------------------------------------------------------------- concurrency


def race_one_key(boss: AdminClient, cookie: str) -> tuple[list, list, list]:
    """CONCURRENT_REQUESTS racers released together with one new key: (ran, replayed, busy)."""
    k = key()
    start = threading.Barrier(CONCURRENT_REQUESTS)
    results: list = [None] * CONCURRENT_REQUESTS

    def one(n: int) -> None:
        c = AdminClient(boss.base_url, label=f"racer-{n}")
        c.http.cookies.set("pg_session", cookie, domain="127.0.0.1", path="/")
        start.wait()
        results[n] = c.call("POST", "/api/v1/agents", {"name": "raced"}, headers=with_key(k))

    threads = [threading.Thread(target=one, args=(n,)) for n in range(CONCURRENT_REQUESTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    ran = [r for r in results if r.status_code == 201 and "Idempotent-Replayed" not in r.headers]
    replayed = [r for r in results if r.status_code == 201 and r not in ran]
    busy = [r for r in results if r.status_code == 409]
    assert len(ran) == 1, [describe(r) for r in results]
    assert len(ran) + len(replayed) + len(busy) == CONCURRENT_REQUESTS, [describe(r) for r in results]
    assert all(error_code(r) == "request_in_progress" for r in busy), [describe(r) for r in busy]
    assert all(r.content == ran[0].content for r in replayed)
    return ran, replayed, busy


def test_concurrent_requests_with_one_key_execute_once(guard):
    boss = owner(guard)
    cookie = boss.http.cookies.get("pg_session")
    before = ids(boss.expect("GET", "/api/v1/agents"))
    # Whether a racer arrives while the first request still runs is up to the scheduler (about
    # one round in twelve has none on a 2-core host): every round must execute once, and at
    # least one of at most RACE_ROUNDS rounds must have exercised the overlap.
    created = []
    for _ in range(RACE_ROUNDS):
        ran, _, busy = race_one_key(boss, cookie)
        created.append(ran[0].json()["id"])
        if busy:
            break
    assert busy, f"no request overlapped the first one in {RACE_ROUNDS} rounds"
    after = ids(boss.expect("GET", "/api/v1/agents"))
    assert len(after) == len(before) + len(created) and set(created) <= set(after), (
        before, after)


# ---------------------------------------------------------------------------- scope


def test_a_key_is_scoped_to_the_user_and_the_organization(guard):
    boss = owner(guard)
    boss.invite("scoped-admin@example.com", "admin")
    other = human(guard, "scoped-admin@example.com", MEMBER_PASSWORD)
    k = key()
    body = {"name": "same key everywhere"}

    mine = boss.call("POST", "/api/v1/agents", body, headers=with_key(k))
    theirs = other.call("POST", "/api/v1/agents", body, headers=with_key(k))
    org2 = boss.expect("POST", "/api/v1/organizations", {"name": "second org"}, status=201)
    boss.switch_org(org2["id"])
    mine_elsewhere = boss.call("POST", "/api/v1/agents", body, headers=with_key(k))

    theirs_again = other.call("POST", "/api/v1/agents", body, headers=with_key(k))
    assert theirs_again.status_code == 201, describe(theirs_again)
    assert theirs_again.headers.get("Idempotent-Replayed") == "true", dict(theirs_again.headers)
    assert theirs_again.content == theirs.content

    answers = [mine, theirs, mine_elsewhere]
    for r in answers:
        assert r.status_code == 201, describe(r)
        assert "Idempotent-Replayed" not in r.headers, dict(r.headers)
    assert len({r.json()["id"] for r in answers}) == 3
    assert len({r.json()["token"] for r in answers}) == 3
    assert [a["id"] for a in boss.expect("GET", "/api/v1/agents")["data"]] == [
        mine_elsewhere.json()["id"]]
    first_org = {a["id"] for a in other.expect("GET", "/api/v1/agents")["data"]}
    assert {mine.json()["id"], theirs.json()["id"]} <= first_org


# ---------------------------------------------------------------------------- bounds


def test_an_over_long_or_malformed_key_is_refused_and_changes_nothing(guard):
    boss = owner(guard)
    before = ids(boss.expect("GET", "/api/v1/caps"))
    for bad in ("k" * 256, "has space", "tab\tinside"):
        r = boss.call("POST", "/api/v1/caps", CAP, headers=with_key(bad))
        assert r.status_code == 400 and error_code(r) == "idempotency_key_invalid", describe(r)
    assert ids(boss.expect("GET", "/api/v1/caps")) == before
    longest = boss.call("POST", "/api/v1/caps", CAP, headers=with_key("k" * 255))
    assert longest.status_code == 201, describe(longest)


# ---------------------------------------------------------------------------- secrets


def test_a_replayed_secret_is_not_kept_in_clear_in_the_store(guard):
    """Answers that show a secret once are kept sealed under the master key and replayed only
    to the same user, in the same organization, with the same key and request."""
    boss = owner(guard)
    k_agent, k_token = key(), key()
    agent = boss.call("POST", "/api/v1/agents", {"name": "secret"}, headers=with_key(k_agent))
    token = boss.call("POST", "/api/v1/me/tokens", {"name": "ci"}, headers=with_key(k_token))
    assert agent.status_code == 201 and token.status_code == 201, (describe(agent), describe(token))
    agent_again = boss.call("POST", "/api/v1/agents", {"name": "secret"}, headers=with_key(k_agent))
    token_again = boss.call("POST", "/api/v1/me/tokens", {"name": "ci"}, headers=with_key(k_token))
    assert agent_again.status_code == 201 and token_again.status_code == 201
    assert agent_again.json()["token"] == agent.json()["token"]
    assert token_again.json()["token"] == token.json()["token"]
    assert agent_again.headers.get("Idempotent-Replayed") == "true"

    guard.stop()  # every byte on disk
    # The token itself, and the kept answer as an unsealed record would hold it (base64 body).
    secrets = [agent.json()["token"].encode(), token.json()["token"].encode(),
               base64.b64encode(agent.content), base64.b64encode(token.content)]
    files = [p for p in guard.data_dir.rglob("*") if p.is_file() and p.name != "master.key"]
    assert any(p.name == "guard.redb" for p in files), files
    for p in files:
        data = p.read_bytes()
        for s in secrets:
            assert s not in data, f"{p.name} holds a secret in clear"


# ---------------------------------------------------------------------------- sign-in


def test_sign_in_ignores_a_key(guard):
    """No principal to scope it to, and a session cookie must never be kept: each sign-in runs,
    and the key stays free for the signed-in user's first mutation that uses it."""
    k = key()
    a, b = AdminClient.for_guard(guard), AdminClient.for_guard(guard)
    sessions = []
    for c in (a, b):
        r = c.call("POST", "/api/v1/auth/login",
                   {"email": "owner@example.com", "password": OWNER_PASSWORD},
                   headers=with_key(k))
        assert r.status_code == 200, describe(r)
        assert "Idempotent-Replayed" not in r.headers
        sessions.append(c.http.cookies.get("pg_session"))
    assert all(sessions) and sessions[0] != sessions[1], sessions

    created = a.call("POST", "/api/v1/agents", {"name": "after sign-in"}, headers=with_key(k))
    assert created.status_code == 201 and "Idempotent-Replayed" not in created.headers, (
        describe(created))
    # Same user and organization, other session: the same key's answer.
    again = b.call("POST", "/api/v1/agents", {"name": "after sign-in"}, headers=with_key(k))
    assert again.status_code == 201 and again.headers.get("Idempotent-Replayed") == "true", (
        describe(again))
    assert again.content == created.content


# ---------------------------------------------------------------------------- OpenAPI


def test_openapi_describes_the_header(guard):
    boss = owner(guard)
    doc = boss.expect("GET", "/api/v1/openapi.json")

    def header_param(path: str, method: str) -> dict:
        params = doc["paths"][path][method].get("parameters", [])
        found = [p for p in params if p["name"] == "Idempotency-Key" and p["in"] == "header"]
        assert len(found) == 1, (path, method, params)
        return found[0]

    for verb in ("approve", "deny"):
        assert header_param(f"/api/v1/intents/{{id}}/{verb}", "post")["required"] is True
    assert header_param("/api/v1/agents", "post").get("required", False) is False
    assert header_param("/api/v1/caps/{id}", "delete").get("required", False) is False
    assert not any(p["name"] == "Idempotency-Key"
                   for p in doc["paths"]["/api/v1/auth/login"]["post"].get("parameters", []))
