"""A real webhook receiver for the end-to-end tests: `http.server` in a thread on 127.0.0.1.

Every POST is verified with the reference `standardwebhooks` library against each secret the
test configured, and recorded (webhook-id, timestamp, signature header, body, arrival time,
which secrets verified it, the status answered). What it answers is scripted per request:
a list of statuses consumed in order (then `default_status`), or a redirect.

A receiver that cannot verify a delivery with any configured secret answers 401 (a real
receiver must not act on it), which also makes a signing bug visible as failed attempts.

Tests wait on conditions (`wait_for`), never on fixed sleeps.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

import pytest
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

POLL_SECS = 0.02


@dataclass
class Received:
    """One request as the receiver saw it."""
    path: str
    webhook_id: str | None
    timestamp: str | None
    signature: str | None
    body: bytes
    arrived: float  # time.time()
    verified_with: list[str] = field(default_factory=list)  # the secrets that verified it
    answered: int = 0

    @property
    def event(self) -> dict:
        return json.loads(self.body)

    @property
    def headers(self) -> dict:
        return {"webhook-id": self.webhook_id or "", "webhook-timestamp": self.timestamp or "",
                "webhook-signature": self.signature or ""}


class Receiver:
    """One loopback HTTP receiver. `start()` binds (port 0 unless a port was reserved)."""

    def __init__(self, *, port: int = 0, statuses: list[int] | None = None,
                 default_status: int = 200, redirect_to: str | None = None,
                 secrets: list[str] | None = None):
        self.port = port
        self.statuses = list(statuses or [])
        self.default_status = default_status
        self.redirect_to = redirect_to
        self.secrets = list(secrets or [])
        self.received: list[Received] = []
        self.lock = threading.Lock()
        self.changed = threading.Condition(self.lock)
        self.server: ThreadingHTTPServer | None = None
        self.thread: threading.Thread | None = None

    # -- lifecycle

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def start(self) -> "Receiver":
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # keep pytest output clean
                pass

            def do_POST(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n)
                rec = Received(path=self.path, webhook_id=self.headers.get("webhook-id"),
                               timestamp=self.headers.get("webhook-timestamp"),
                               signature=self.headers.get("webhook-signature"), body=body,
                               arrived=time.time())
                for s in list(receiver.secrets):
                    try:
                        Webhook(s).verify(body, rec.headers)
                        rec.verified_with.append(s)
                    except (WebhookVerificationError, ValueError):
                        pass
                with receiver.lock:
                    if receiver.secrets and not rec.verified_with:
                        status = 401
                    elif receiver.redirect_to is not None:
                        status = 302
                    elif receiver.statuses:
                        status = receiver.statuses.pop(0)
                    else:
                        status = receiver.default_status
                    rec.answered = status
                reply = json.dumps({"status": status}).encode()
                self.send_response(status)
                if status == 302:
                    self.send_header("Location", receiver.redirect_to)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)
                # Recorded after the answer is written, so a waiter sees a finished exchange.
                with receiver.changed:
                    receiver.received.append(rec)
                    receiver.changed.notify_all()

            do_GET = do_POST
            do_PUT = do_POST

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, name=f"rx-{self.port}",
                                       daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    # -- observations

    def snapshot(self) -> list[Received]:
        with self.lock:
            return list(self.received)

    def wait_for(self, cond: Callable[[list[Received]], bool], *, timeout: float,
                 what: str) -> list[Received]:
        """Block until `cond(received)` holds, or fail after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        with self.changed:
            while True:
                got = list(self.received)
                if cond(got):
                    return got
                left = deadline - time.monotonic()
                if left <= 0:
                    summary = [(r.webhook_id, r.answered, r.body[:200]) for r in got]
                    raise AssertionError(f"receiver {self.url}: {what} not seen within "
                                         f"{timeout}s; received {summary}")
                self.changed.wait(min(left, 0.5))

    def accepted(self) -> list[Received]:
        """Requests answered 2xx (the deliveries that count)."""
        return [r for r in self.snapshot() if 200 <= r.answered < 300]


def reserve_closed_port() -> int:
    """A loopback port nobody listens on right now (connections to it are refused)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def poll(fetch: Callable[[], object], done: Callable[[object], bool], *, timeout: float,
         what: str, interval: float = 0.05):
    """Call `fetch()` until `done(value)`, or fail after `timeout` with the last value."""
    deadline = time.monotonic() + timeout
    while True:
        v = fetch()
        if done(v):
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout}s; last: {v}")
        time.sleep(interval)


@pytest.fixture
def receivers():
    """Receivers started by a test; all stopped at teardown."""
    made: list[Receiver] = []

    def make(**kw) -> Receiver:
        r = Receiver(**kw)
        made.append(r)
        return r

    yield make
    for r in made:
        r.stop()
