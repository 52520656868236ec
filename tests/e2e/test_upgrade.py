"""Upgrades (README "Upgrades"): a data directory written by an older guard opens in this one
with nothing lost. The fixture (fixtures/store_before_typed_keys.tar.gz, made by
fixtures/make_store_before_typed_keys.py with the guard of 340f3db) holds the control-plane
tables as they were stored before typed keys (issue #13): `|`-joined string keys. Opening it moves
them to typed tuple keys in one transaction; every record must then read, change and verify as
before, and the secrets sealed under the old keys' text must still open.
"""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest
import stripe

from admin_client import AdminClient, accept_invitation
from conftest import Guard

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "store_before_typed_keys.tar.gz"


class OldStore(Guard):
    """A guard on the fixture's data directory instead of a fresh one."""

    def _bootstrap(self, agents, caps, rail_key) -> None:
        with tarfile.open(FIXTURE) as tar:
            tar.extractall(self.workdir, filter="data")
        self.data_dir.chmod(0o700)
        facts = json.loads((self.data_dir / "facts.json").read_text())
        self.facts = facts
        self.org_id = facts["org"]
        for name, agent in facts["agents"].items():
            self.agent_ids[name] = agent["id"]
            self.tokens[name] = agent["token"]


@pytest.fixture
def old_store(tmp_path, localstripe):
    g = OldStore(tmp_path, localstripe.url, env={"GUARD_WEBHOOKS_ALLOW_PRIVATE_TARGETS": "true"})
    yield g
    g.stop()


def test_a_store_from_before_typed_keys_opens_with_every_record_in_place(old_store, localstripe):
    g = old_store
    facts = g.facts
    # The first open is the CLI's: it moves the tables, and the chain verifies.
    rc, results, err = g.audit_verify()
    assert rc == 0 and [r["ok"] for r in results] == [True], (results, err)
    # Every sealed secret (the rail key, the webhook's signing secret, the admin answers kept
    # for Idempotency-Key replays) opens under the row's old text and is sealed again under a
    # new master key: their sealing contexts did not change with the keys. (Done first: the
    # kept answers expire 24 h after the fixture was made, and the guard then sweeps them.)
    report = json.loads(g.cli("secrets", "rotate-master-key", "--json").stdout)
    assert report["rail_keys"] == 1 and report["webhook_secrets"] == 1, report
    assert report["admin_answers"] >= 1 and report["organizations"] == 1, report
    g.start()
    boss = AdminClient.for_guard(g, label="owner")
    boss.login(facts["owner_email"], facts["owner_password"])

    members = boss.expect("GET", "/api/v1/members")["data"]
    assert sorted(m["user_id"] for m in members) == facts["members"]
    roles = {m["user_id"]: m["role"] for m in members}
    assert roles[facts["approver"]["user_id"]] == "approver"

    agents = {a["id"]: a["status"] for a in boss.expect("GET", "/api/v1/agents")["data"]}
    assert agents == {facts["agents"]["a1"]["id"]: "active",
                      facts["agents"]["a2"]["id"]: "frozen"}

    caps = sorted(c["id"] for c in boss.expect("GET", "/api/v1/caps")["data"])
    assert caps == facts["caps"]

    versions = boss.expect("GET", "/api/v1/policies/versions")["data"]
    assert [v["version"] for v in versions] == facts["policy_versions"]
    assert boss.expect("GET", "/api/v1/policies")["version"] == facts["active_policy_version"]
    latest = facts["policy_versions"][-1]
    boss.expect("POST", f"/api/v1/policies/versions/{latest}/activate")
    assert boss.expect("GET", "/api/v1/policies")["version"] == latest

    wh = facts["webhook"]
    [endpoint] = boss.expect("GET", "/api/v1/webhooks")["data"]
    assert endpoint["id"] == wh["id"] and endpoint["url"] == wh["answer"]["url"]
    ds = boss.expect("GET", f"/api/v1/webhooks/{wh['id']}/deliveries",
                     params={"limit": 500})["data"]
    assert sorted(d["id"] for d in ds) == wh["deliveries"]
    assert all(d["state"] == "pending" and d["attempts"] for d in ds), ds
    retried = boss.expect("POST", f"/api/v1/webhooks/{wh['id']}/deliveries/{ds[0]['id']}/retry")
    assert retried["id"] == ds[0]["id"] and retried["state"] == "pending", retried

    # The pending invitation, by its token (the token index moved too).
    pending = facts["pending_invitation"]
    listed = {i["id"]: i["status"] for i in boss.expect("GET", "/api/v1/invitations")["data"]}
    assert listed[pending["id"]] == "pending", listed
    joined = accept_invitation(boss.base_url, pending["token"], "pending-Password-12345")
    assert joined["role"] == "viewer"
    assert len(boss.expect("GET", "/api/v1/members")["data"]) == len(facts["members"]) + 1

    # The approver's own trail still verifies and keeps its events.
    approver = AdminClient.for_guard(g, label="approver")
    approver.login(facts["approver"]["email"], facts["approver"]["password"])
    trail = approver.expect("GET", "/api/v1/me/audit")["data"]
    assert len(trail) >= facts["approver"]["trail"] >= 1
    assert approver.expect("GET", "/api/v1/me/audit/verify")["ok"] is True

    # Agents: a1 pays through the rail; a2 is still frozen.
    pi = g.client("a1").v1.payment_intents.create(params={"amount": 1200, "currency": "usd"})
    assert localstripe.payment_intent(pi.id) is not None
    with pytest.raises(stripe.StripeError) as e:
        g.client("a2").v1.payment_intents.create(params={"amount": 1200, "currency": "usd"})
    assert e.value.http_status == 403

    g.stop()
    rc, results, err = g.audit_verify()
    assert rc == 0 and [r["ok"] for r in results] == [True], (results, err)
