"""Three smaller promises, checked on the wire:

- PROXY.md: a request body that stops arriving is answered `408 guard_request_timeout`;
- ADMIN_API.md: an answer given before the request body was read says `Connection: close`
  (and the connection is closed), while an answer to a fully read request keeps it open;
- OPERATIONS.md "Shutdown": SIGTERM on an idle guard exits at once (not after the grace period),
  so `audit verify` right after finds the store free; a held `Prefer: wait` request in flight is
  still answered before the exit.
"""

from __future__ import annotations

import json
import re
import signal
import socket
import threading
import time
import uuid

from admin_client import MEMBER_PASSWORD, describe, hold_amount, human, owner, proxy_payment
from conftest import HTTP_TIMEOUT_SECS, POLL_INTERVAL_SECS, STOP_DEADLINE_SECS, new_run_id, tail

# ProxySettings::body_read_timeout_secs: the longest pause inside a request body.
BODY_READ_TIMEOUT_SECS = 10
# Far above the exit of an idle guard, far below this grace period: an exit that waits out the
# grace period cannot pass, whatever the machine's load.
LONG_GRACE_SECS = 120
PREFER_WAIT_SECS = 60


def read_response(sock: socket.socket, deadline_secs: float) -> tuple[int, dict, bytes]:
    """One HTTP/1.1 response with a Content-Length body: (status, headers, body)."""
    sock.settimeout(deadline_secs)
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed before a response: {buf!r}"
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    length = int(headers.get("content-length", "0"))
    while len(rest) < length:
        chunk = sock.recv(65536)
        assert chunk, "connection closed inside the body"
        rest += chunk
    return status, headers, rest[:length]


def closed_by_peer(sock: socket.socket, deadline_secs: float = HTTP_TIMEOUT_SECS) -> bool:
    """Whether the server closes the connection (EOF or reset) within the deadline."""
    sock.settimeout(deadline_secs)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False


# ---------------------------------------------------------------------------- 408


def test_a_stalled_request_body_is_answered_408_guard_request_timeout(guard):
    key = str(uuid.uuid4())
    body = b"amount=1000&currency=usd&metadata[run]=stalled"
    head = (f"POST /v1/payment_intents HTTP/1.1\r\nHost: 127.0.0.1:{guard.proxy_port}\r\n"
            f"Authorization: Bearer {guard.tokens['a1']}\r\nIdempotency-Key: {key}\r\n"
            "Content-Type: application/x-www-form-urlencoded\r\n"
            f"Content-Length: {len(body) + 100}\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", guard.proxy_port)) as s:
        s.sendall(head + body)  # ... and the promised 100 more bytes never come
        status, headers, raw = read_response(s, BODY_READ_TIMEOUT_SECS + HTTP_TIMEOUT_SECS)
    assert status == 408, (status, headers, raw)
    err = json.loads(raw)["error"]
    assert err["code"] == "guard_request_timeout", err
    assert headers.get("stripe-should-retry") == "false", headers
    guard.stop()
    assert guard.intents() == [], "nothing was decided for a body that never arrived"


# ---------------------------------------------------------------------------- Connection: close


def admin_request(port: int, method: str, path: str, *, body: bytes = b"",
                  content_length: int | None = None, extra: str = "") -> bytes:
    length = len(body) if content_length is None else content_length
    return (f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Origin: http://127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {length}\r\n{extra}\r\n").encode() + body


def test_admin_answers_that_leave_the_body_unread_say_connection_close(guard):
    port = guard.admin_port
    token = owner(guard).create_api_token()

    # 401 before reading: no credentials on a mutation with a body.
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(admin_request(port, "POST", "/api/v1/agents", body=b'{"name": "x"}'))
        status, headers, _ = read_response(s, HTTP_TIMEOUT_SECS)
        assert status == 401, (status, headers)
        assert headers.get("connection") == "close", headers
        assert closed_by_peer(s), "the connection stayed open after Connection: close"

    # 413 before reading: the declared length is over the limit; the body is never sent.
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(admin_request(port, "POST", "/api/v1/agents", content_length=50_000_000,
                                extra=f"Authorization: Bearer {token}\r\n"))
        status, headers, raw = read_response(s, HTTP_TIMEOUT_SECS)
        assert status == 413, (status, headers, raw)
        assert headers.get("connection") == "close", headers
        assert closed_by_peer(s), "the connection stayed open after Connection: close"

    # A request whose body was read keeps the connection: a second request on it is answered.
    with socket.create_connection(("127.0.0.1", port)) as s:
        login = json.dumps({"email": "owner@example.com", "password": "wrong-password-1"})
        s.sendall(admin_request(port, "POST", "/api/v1/auth/login", body=login.encode()))
        status, headers, _ = read_response(s, HTTP_TIMEOUT_SECS)
        assert status == 401 and headers.get("connection") != "close", (status, headers)
        s.sendall(f"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
        status, headers, raw = read_response(s, HTTP_TIMEOUT_SECS)
        assert status == 200 and raw == b"ok\n", (status, headers, raw)


# ---------------------------------------------------------------------------- SIGTERM


def sigterm_and_wait(guard, bound_secs: float) -> int:
    proc = guard.proc
    proc.send_signal(signal.SIGTERM)
    try:
        rc = proc.wait(timeout=bound_secs)
    except Exception:
        proc.kill()
        proc.wait(timeout=STOP_DEADLINE_SECS)
        raise AssertionError(f"no exit within {bound_secs}s of SIGTERM (grace period "
                             f"{LONG_GRACE_SECS}s)\n{tail(guard.log)}")
    guard.proc = None
    return rc


def test_sigterm_on_an_idle_guard_exits_at_once_and_frees_the_store(guard_factory):
    g = guard_factory(env={"GUARD_PROXY_SHUTDOWN_GRACE_SECS": str(LONG_GRACE_SECS)})
    r = proxy_payment(g, 1000, run=new_run_id(), key=str(uuid.uuid4()))
    assert r.status_code == 200, r.text
    rc = sigterm_and_wait(g, STOP_DEADLINE_SECS)
    assert rc == 0, tail(g.log)
    # README: "stop the guard, then `audit verify`" — at once, no "store in use".
    rc, results, stderr = g.audit_verify()
    assert rc == 0 and [r["ok"] for r in results] == [True], (results, stderr)
    assert "in use" not in stderr, stderr


def test_sigterm_waits_for_a_held_request_in_flight_and_it_is_answered(guard_factory,
                                                                      localstripe):
    g = guard_factory(env={"GUARD_PROXY_SHUTDOWN_GRACE_SECS": str(LONG_GRACE_SECS)})
    boss = owner(g)
    boss.invite("alice@example.com", "approver")
    alice = human(g, "alice@example.com", MEMBER_PASSWORD)
    run, key = new_run_id(), str(uuid.uuid4())
    out: dict = {}

    def held_payment():
        try:
            out["r"] = proxy_payment(g, hold_amount(), run=run, key=key,
                                     headers={"Prefer": f"wait={PREFER_WAIT_SECS}"},
                                     timeout=PREFER_WAIT_SECS + HTTP_TIMEOUT_SECS)
        except Exception as e:  # reported by the main thread
            out["r"] = e

    t = threading.Thread(target=held_payment, daemon=True)
    t.start()
    deadline = time.monotonic() + HTTP_TIMEOUT_SECS
    pending: list = []
    while not pending:
        assert time.monotonic() < deadline, "the held request never showed up"
        pending = [i for i in alice.expect("GET", "/api/v1/intents",
                                           params={"status": "pending_approval"})["data"]
                   if (i.get("metadata") or {}).get("run") == run]
        if not pending:
            time.sleep(POLL_INTERVAL_SECS)
    intent_id = pending[0]["id"]

    g.proc.send_signal(signal.SIGTERM)
    # The guard is draining (it logged so) with the request in flight; the admin API still
    # answers, so the hold can be approved and the waiting request answered.
    deadline = time.monotonic() + HTTP_TIMEOUT_SECS
    while "SIGTERM: refusing new requests" not in g.log.read_text(errors="replace"):
        assert g.proc.poll() is None, f"exited with a request in flight\n{tail(g.log)}"
        assert time.monotonic() < deadline, tail(g.log)
        time.sleep(POLL_INTERVAL_SECS)
    assert re.search(r"in_flight\S*=\S*1", g.log.read_text(errors="replace")), tail(g.log)
    r = alice.call("POST", f"/api/v1/intents/{intent_id}/approve", {})
    assert r.status_code == 200, describe(r)
    t.join(timeout=PREFER_WAIT_SECS + HTTP_TIMEOUT_SECS)
    answer = out.get("r")
    assert not isinstance(answer, Exception) and answer is not None, answer
    assert answer.status_code == 200, (answer.status_code, answer.text)
    assert answer.headers.get("Guard-Intent") == intent_id
    rc = g.proc.wait(timeout=STOP_DEADLINE_SECS)
    g.proc = None
    assert rc == 0, tail(g.log)
    upstream = localstripe.payment_intents_of_run(run)
    assert [p["id"] for p in upstream] == [answer.json()["id"]], upstream
    [stored] = [i for i in g.intents() if i["id"] == intent_id]
    assert stored["status"] == "succeeded", stored
