"""RELIABILITY.md promise 7 / AUDIT.md "Verification", on the export side: the independent
verifier `examples/verify_audit.py` (standard library only) catches a changed, removed, inserted
or reordered line of a `payment-guard audit export`, and, given a head received earlier
(`--head SEQ:HASH`, as every webhook carries), a re-chained forgery or a cut tail that verify
alone cannot see. Tampering with the store file itself is `store/tests/tamper.rs`.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import uuid

import pytest

from conftest import EXAMPLES, HOLD_THRESHOLD, form, new_run_id

VERIFIER = EXAMPLES / "verify_audit.py"


def verify_export(lines: list[str], head: str | None = None) -> tuple[int, dict]:
    args = [sys.executable, str(VERIFIER)]
    if head:
        args += ["--head", head]
    p = subprocess.run(args, input="".join(line + "\n" for line in lines), capture_output=True,
                       text=True, timeout=60)
    out = p.stdout.strip().splitlines()
    assert len(out) == 1, (p.stdout, p.stderr)
    return p.returncode, json.loads(out[0])


def jcs(value) -> str:
    """RFC 8785 for integer-only JSON (the forger's own implementation, not the verifier's)."""
    if isinstance(value, dict):
        keys = sorted(value, key=lambda k: k.encode("utf-16-be"))
        return "{" + ",".join(json.dumps(k, ensure_ascii=False) + ":" + jcs(value[k])
                              for k in keys) + "}"
    if isinstance(value, list):
        return "[" + ",".join(jcs(v) for v in value) + "]"
    return json.dumps(value, ensure_ascii=False)


def rechain(lines: list[str], start: int, change) -> list[str]:
    """Rewrite events from position `start` (0-based) on with recomputed prev/hash."""
    out = lines[:start]
    prev = json.loads(lines[start - 1])["hash"] if start else "0" * 64
    for line in lines[start:]:
        ev = json.loads(line)
        ev.pop("hash")
        ev["prev"] = prev
        if len(out) == start:
            change(ev)
        prev = hashlib.sha256(jcs(ev).encode()).hexdigest()
        ev["hash"] = prev
        out.append(jcs(ev))
    return out


@pytest.fixture(scope="module")
def exported(tmp_path_factory, localstripe):
    """One real guard's export: decisions (allow, deny, hold) and settlements."""
    from conftest import Guard

    g = Guard(tmp_path_factory.mktemp("tamper"), localstripe.url)
    g.start()
    try:
        run = new_run_id()
        for amount in (1000, 2200, HOLD_THRESHOLD + 1):
            r = g.raw_post("/v1/payment_intents",
                           form([("amount", amount), ("currency", "usd"),
                                 ("metadata[run]", run), ("metadata[note]", "caf\u00e9 \u2603")]),
                           idempotency_key=str(uuid.uuid4()))
            assert r.status_code in (200, 402), r.text
        r = g.raw_post("/v1/payouts", form([("amount", 500), ("currency", "usd")]),
                       idempotency_key=str(uuid.uuid4()))
        assert r.status_code == 403, r.text
    finally:
        g.stop()
    lines = g.audit_export()
    rc, results, stderr = g.audit_verify()
    assert rc == 0, (results, stderr)
    [mine] = [r for r in results if r["org"] == g.org_id]
    assert len(lines) == mine["events"] >= 10, (len(lines), mine)
    return lines, mine["head"]


def test_untouched_export_verifies_and_agrees_with_the_guard(exported):
    lines, head = exported
    rc, res = verify_export(lines)
    assert rc == 0 and res["ok"] is True, res
    assert res["events"] == len(lines)
    assert res["head"] == head  # the independent verifier and the guard agree on the head
    rc, res = verify_export(lines, head=f"{head['seq']}:{head['hash']}")
    assert rc == 0 and res["ok"] is True, res


@pytest.mark.parametrize("seq", [1, 4, -1])
def test_changed_byte_is_named(exported, seq):
    lines, _ = exported
    pos = seq - 1 if seq > 0 else len(lines) - 1
    changed = list(lines)
    ev = json.loads(changed[pos])
    # Change one byte of the content, keep the line well-formed JSON.
    text = changed[pos]
    i = text.index('"kind":"') + len('"kind":"')
    changed[pos] = text[:i] + chr(ord(text[i]) ^ 1) + text[i + 1:]
    assert changed[pos] != lines[pos]
    rc, res = verify_export(changed)
    assert rc == 1 and res == {"ok": False, "first_bad_seq": ev["seq"],
                               "reason": res["reason"]}, res


def test_changed_amount_is_named(exported):
    lines, _ = exported
    pos = next(i for i, line in enumerate(lines) if '"amount":2200' in line)
    changed = list(lines)
    changed[pos] = lines[pos].replace('"amount":2200', '"amount":2100', 1)
    rc, res = verify_export(changed)
    assert rc == 1 and res["first_bad_seq"] == pos + 1, res


@pytest.mark.parametrize("pos", [0, 3, -1])
def test_removed_line_is_named(exported, pos):
    lines, head = exported
    cut = list(lines)
    removed = cut.pop(pos)
    seq = json.loads(removed)["seq"]
    rc, res = verify_export(cut, head=f"{head['seq']}:{head['hash']}")
    assert rc == 1 and res["first_bad_seq"] == seq, res


def test_inserted_line_is_named(exported):
    lines, _ = exported
    grown = lines[:3] + [lines[1]] + lines[3:]
    rc, res = verify_export(grown)
    assert rc == 1 and res["first_bad_seq"] == 4, res


def test_inserted_line_from_another_org_is_named(exported):
    lines, _ = exported
    ev = json.loads(lines[3])
    ev["org"] = "org_" + "f" * 24
    grown = lines[:4] + [jcs(ev)] + lines[4:]
    rc, res = verify_export(grown)
    assert rc == 1 and res["first_bad_seq"] == 5, res


@pytest.mark.parametrize("pos", [0, 4])
def test_reordered_lines_are_named(exported, pos):
    lines, _ = exported
    swapped = list(lines)
    swapped[pos], swapped[pos + 1] = swapped[pos + 1], swapped[pos]
    rc, res = verify_export(swapped)
    assert rc == 1 and res["first_bad_seq"] == pos + 1, res


def test_rechained_forgery_passes_alone_but_not_against_a_known_head(exported):
    lines, head = exported

    def rewrite(ev):
        ev["data"] = {"rewritten": True}

    forged = rechain(lines, 3, rewrite)
    assert forged[:3] == lines[:3] and forged[3] != lines[3]
    rc, res = verify_export(forged)
    assert rc == 0 and res["ok"] is True, res  # consistent by construction
    assert res["head"]["seq"] == head["seq"] and res["head"]["hash"] != head["hash"]

    rc, res = verify_export(forged, head=f"{head['seq']}:{head['hash']}")
    assert rc == 1 and res["ok"] is False, res
    assert res["first_bad_seq"] == head["seq"], res

    # A head received earlier than the tail still catches a rewrite before it.
    mid = json.loads(lines[5])
    rc, res = verify_export(forged, head=f"{mid['seq']}:{mid['hash']}")
    assert rc == 1 and res["first_bad_seq"] == mid["seq"], res
    # ...and one before the rewrite does not (history up to it is genuine).
    early = json.loads(lines[2])
    rc, res = verify_export(forged, head=f"{early['seq']}:{early['hash']}")
    assert rc == 0, res


def test_cut_tail_passes_alone_but_not_against_a_known_head(exported):
    lines, head = exported
    cut = lines[:-2]
    rc, res = verify_export(cut)
    assert rc == 0, res
    rc, res = verify_export(cut, head=f"{head['seq']}:{head['hash']}")
    assert rc == 1 and res["first_bad_seq"] == len(cut) + 1, res


def test_garbage_lines_are_named(exported):
    lines, _ = exported
    for bad in ["not json", "[]", '{"seq": 2}', json.dumps({**json.loads(lines[1]),
                                                           "amount": 1.5})]:
        rc, res = verify_export(lines[:1] + [bad] + lines[2:])
        assert rc == 1 and res["first_bad_seq"] == 2, (bad, res)
