#!/usr/bin/env python3
"""Verify a Payment Guard audit export independently of the guard (spec/AUDIT.md).

    payment-guard audit export --org org_... > audit.jsonl
    python3 examples/verify_audit.py audit.jsonl          # or: ... | verify_audit.py
    python3 examples/verify_audit.py audit.jsonl --head 42:<hash>   # head from a webhook

Checks: seq runs 1, 2, 3... without gaps, one organization, each `prev` is the previous
`hash` (64 zeros first), and each `hash` is the SHA-256 of the RFC 8785 (JCS) canonical JSON
of the event without `hash`. Prints {"ok":true,...,"head":...} and exits 0, or
{"ok":false,"first_bad_seq":K,"reason":...} and exits 1. Python standard library only.
"""

import argparse
import hashlib
import json
import sys

ZERO_HASH = "0" * 64
MAX_SAFE_INTEGER = 2**53 - 1  # beyond it JCS number formatting is not plain decimal


class BadEvent(Exception):
    pass


def jcs(value) -> str:
    """RFC 8785 for the JSON the guard emits: integers only, keys sorted by UTF-16 units."""
    if value is None or isinstance(value, bool):
        return json.dumps(value)
    if isinstance(value, int):
        if abs(value) > MAX_SAFE_INTEGER:
            raise BadEvent(f"integer {value} outside the exactly representable range")
        return str(value)
    if isinstance(value, str):
        # json.dumps with ensure_ascii=False escapes exactly what JCS escapes: '"', '\\' and
        # control characters (\b \t \n \f \r, else \u00xx lower-case); all else is literal.
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ",".join(jcs(v) for v in value) + "]"
    if isinstance(value, dict):
        keys = sorted(value, key=lambda k: k.encode("utf-16-be"))
        return "{" + ",".join(jcs(k) + ":" + jcs(value[k]) for k in keys) + "}"
    raise BadEvent(f"non-integer number or unsupported value {value!r}")


def reject_float(text):
    raise BadEvent(f"non-integer number {text}")


def verify(lines, expect_head=None) -> dict:
    prev_hash, org, seq = ZERO_HASH, None, 0
    for line in lines:
        if not line.strip():
            continue
        expected_seq = seq + 1
        try:
            event = json.loads(line, parse_float=reject_float, parse_constant=reject_float)
            if not isinstance(event, dict) or not isinstance(event.get("hash"), str):
                raise BadEvent("not an event object with a hash")
            if event.get("seq") != expected_seq:
                raise BadEvent(f"seq {event.get('seq')!r}, expected {expected_seq}")
            if org is not None and event.get("org") != org:
                raise BadEvent(f"org {event.get('org')!r} in a chain of {org!r}")
            if event.get("prev") != prev_hash:
                raise BadEvent("prev does not match the previous event's hash")
            body = {k: v for k, v in event.items() if k != "hash"}
            digest = hashlib.sha256(jcs(body).encode("utf-8")).hexdigest()
            if event["hash"] != digest:
                raise BadEvent(f"hash mismatch: recomputed {digest}")
        except (BadEvent, ValueError) as e:
            return {"ok": False, "first_bad_seq": expected_seq, "reason": str(e)}
        org, seq, prev_hash = event["org"], expected_seq, event["hash"]
        if expect_head and expect_head[0] == seq and expect_head[1] != prev_hash:
            return {"ok": False, "first_bad_seq": seq, "reason": "differs from the known head"}
    if expect_head and expect_head[0] > seq:
        return {"ok": False, "first_bad_seq": seq + 1,
                "reason": f"chain ends at {seq}, before the known head {expect_head[0]}"}
    head = {"seq": seq, "hash": prev_hash} if seq else None
    return {"ok": True, "events": seq, "head": head}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("file", nargs="?", help="JSON Lines export (default: stdin)")
    p.add_argument("--head", help="SEQ:HASH known from elsewhere (e.g. a webhook)")
    args = p.parse_args()
    head = None
    if args.head:
        s, _, h = args.head.partition(":")
        head = (int(s), h)
    if args.file and args.file != "-":
        with open(args.file, encoding="utf-8") as f:
            result = verify(f, head)
    else:
        result = verify(sys.stdin, head)
    print(json.dumps(result, separators=(",", ":")))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
