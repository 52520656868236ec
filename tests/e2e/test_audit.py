"""AUDIT.md: the trail is a per-organization hash chain that `audit verify` and the standalone
examples/verify_audit.py both accept untouched and reject after any change."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import stripe

from conftest import EXAMPLES, HOLD_THRESHOLD, new_run_id

VERIFIER = EXAMPLES / "verify_audit.py"
EVENT_KEYS = {"org", "seq", "at", "actor", "kind", "data", "prev", "hash"}


def verify_with_script(path=None, stdin: str | None = None) -> tuple[int, dict]:
    args = [sys.executable, str(VERIFIER)] + ([str(path)] if path else [])
    p = subprocess.run(args, input=stdin, capture_output=True, text=True, timeout=60)
    return p.returncode, json.loads(p.stdout.strip().splitlines()[-1])


def string_leaves(value, path=()):
    if isinstance(value, str) and value:
        yield path, value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from string_leaves(v, path + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from string_leaves(v, path + (i,))


def change_one_byte_in_data(lines: list[str]) -> tuple[list[str], int]:
    """Change one character inside a string value of some event's `data`, in the raw text."""
    for index in reversed(range(len(lines))):
        event = json.loads(lines[index])
        for _, value in string_leaves(event["data"]):
            raw = json.dumps(value, ensure_ascii=False)
            start = lines[index].find(raw, lines[index].find('"data"'))
            if start < 0 or not value[0].isalnum():
                continue
            pos = start + 1
            replacement = "x" if lines[index][pos] != "x" else "y"
            tampered = lines[index][:pos] + replacement + lines[index][pos + 1:]
            assert json.loads(tampered)["data"] != event["data"]
            return lines[:index] + [tampered] + lines[index + 1:], event["seq"]
    pytest.fail("no string value in any event's data to tamper with")


def test_exported_audit_chain_verifies_independently_and_detects_changes(guard, tmp_path):
    client, run = guard.client(), new_run_id()
    client.v1.payment_intents.create(params={"amount": 1000, "currency": "usd",
                                             "metadata": {"run": run}})
    with pytest.raises(stripe.PermissionError):
        client.v1.payouts.create(params={"amount": 1000, "currency": "usd"})
    with pytest.raises(stripe.CardError):
        client.v1.payment_intents.create(params={"amount": HOLD_THRESHOLD + 1,
                                                 "currency": "usd"})
    guard.stop()

    rc, results, stderr = guard.audit_verify()
    assert rc == 0, (results, stderr)
    assert len(results) == 1, results  # one line per organization
    ours = dict(results[0])
    assert ours.pop("org", guard.org_id) == guard.org_id  # the line may name its organization
    lines = guard.audit_export()
    events = [json.loads(line) for line in lines]
    assert ours == {"ok": True, "events": len(lines),
                    "head": {"seq": len(lines), "hash": events[-1]["hash"]}}

    # The export is exactly AUDIT.md's event shape, one chain for this organization.
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert events[0]["prev"] == "0" * 64
    for e in events:
        assert set(e) == EVENT_KEYS, e
        assert e["org"] == guard.org_id
        assert e["actor"]["type"] in ("agent", "user", "system")
    decisions = [e for e in events if e["kind"] == "decision"]
    assert len(decisions) == 3, [e["kind"] for e in events]
    assert {e["actor"]["id"] for e in decisions} == {guard.agent_ids["a1"]}

    export = tmp_path / "audit.jsonl"
    export.write_text("\n".join(lines) + "\n")
    rc, out = verify_with_script(export)
    assert (rc, out) == (0, ours)
    rc, out = verify_with_script(stdin=export.read_text())
    assert (rc, out) == (0, ours)

    tampered, bad_seq = change_one_byte_in_data(lines)
    rc, out = verify_with_script(stdin="\n".join(tampered) + "\n")
    assert rc == 1 and out["ok"] is False and out["first_bad_seq"] == bad_seq, out

    if len(lines) >= 3:
        removed = lines[:1] + lines[2:]
        rc, out = verify_with_script(stdin="\n".join(removed) + "\n")
        assert rc == 1 and out["first_bad_seq"] == 2, out
        swapped = [lines[1], lines[0]] + lines[2:]
        rc, out = verify_with_script(stdin="\n".join(swapped) + "\n")
        assert rc == 1 and out["first_bad_seq"] == 1, out
