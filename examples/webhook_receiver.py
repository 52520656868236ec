#!/usr/bin/env python3
"""Receive Payment Guard webhooks: verify, deduplicate, print (spec/WEBHOOKS.md).

    GUARD_WEBHOOK_SECRET=whsec_... python3 examples/webhook_receiver.py [PORT]   # default 8000

Then add http://127.0.0.1:PORT/ as a webhook endpoint (local targets need
`webhooks.allow_private_targets`). Each verified event is printed once as
`<type> <id> audit_head=<seq>:<hash>` (check an audit export against that head with
`examples/verify_audit.py --head seq:hash`) and answered 204, a retry included, since delivery
is at least once and a 2xx ends it. A bad or missing signature gets 401. Verification uses the
`standardwebhooks` package when installed, else the standard library below, which does the same.
"""

import base64
import hashlib
import hmac
import json
import os
import sys
import time
from collections import OrderedDict
from http.server import BaseHTTPRequestHandler, HTTPServer

try:
    from standardwebhooks import Webhook
except ImportError:
    Webhook = None

TOLERANCE_SECS = 300        # the guard's and the reference library's 5 minutes, both directions
MAX_BODY_BYTES = 1 << 20    # larger bodies are refused unread
SEEN_IDS_MAX = 100_000      # webhook-ids remembered for deduplication, oldest forgotten first


def verify_stdlib(secret: str, headers: dict, body: bytes) -> dict:
    """Standard Webhooks v1: HMAC-SHA256 of "{id}.{timestamp}.{body}", base64, constant time."""
    key = base64.b64decode(secret.removeprefix("whsec_") + "==")
    msg_id, ts, sigs = (headers.get(f"webhook-{h}", "") for h in ("id", "timestamp", "signature"))
    if not (msg_id and ts.isascii() and ts.isdigit() and sigs):
        raise ValueError("missing or malformed webhook headers")
    if abs(time.time() - int(ts)) > TOLERANCE_SECS:
        raise ValueError("timestamp outside the tolerance")
    mac = hmac.new(key, f"{msg_id}.{int(ts)}.".encode() + body, hashlib.sha256).digest()
    expected = base64.b64encode(mac)
    if not any(version == "v1" and hmac.compare_digest(expected, sig.encode())
               for version, _, sig in (entry.partition(",") for entry in sigs.split(" "))):
        raise ValueError("no matching signature")
    return json.loads(body)


class Receiver(BaseHTTPRequestHandler):
    secret = ""
    seen: "OrderedDict[str, None]" = OrderedDict()  # one thread (HTTPServer): no lock needed

    def do_POST(self):
        length = self.headers.get("content-length", "0")
        if not length.isdigit() or int(length) > MAX_BODY_BYTES:
            return self.answer(413)
        body = self.rfile.read(int(length))
        headers = {name.lower(): value for name, value in self.headers.items()}
        try:
            if Webhook is not None:
                event = Webhook(self.secret).verify(body, headers)
            else:
                event = verify_stdlib(self.secret, headers, body)
        except Exception as err:  # the reference library raises several kinds on bad input
            print(f"refused: {type(err).__name__}: {err}", file=sys.stderr, flush=True)
            return self.answer(401)
        msg_id = headers["webhook-id"]
        if msg_id not in self.seen:
            self.seen[msg_id] = None
            if len(self.seen) > SEEN_IDS_MAX:
                self.seen.popitem(last=False)
            head = event.get("audit_head", {})
            print(f"{event.get('type')} {event.get('id')} "
                  f"audit_head={head.get('seq')}:{head.get('hash')}", flush=True)
        self.answer(204)

    def answer(self, status: int):
        self.send_response(status)
        if status != 204:  # a 204 has no body and must not say it has
            self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):  # quiet: the events are the output
        pass


def main():
    Receiver.secret = os.environ.get("GUARD_WEBHOOK_SECRET", "")
    if not Receiver.secret.startswith("whsec_"):
        sys.exit("set GUARD_WEBHOOK_SECRET to the endpoint's whsec_... secret")
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 8000
    server = HTTPServer(("127.0.0.1", port), Receiver)
    verifier = "standardwebhooks" if Webhook is not None else "stdlib"
    print(f"listening on http://127.0.0.1:{port}/ (verifier: {verifier})", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
