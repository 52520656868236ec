"""A controllable HTTP/1.1 fault proxy for the end-to-end harness, put between the guard and
localstripe (`GUARD_UPSTREAM_BASE_URL=<proxy url>`).

One request per connection: every response the proxy writes says `Connection: close` and the
proxy closes afterwards, so the guard's HTTP client never pools a connection and every request
meets the mode that is current when it arrives. Modes (`set_mode`):

- `pass`      forward to the target (optionally after `delay` seconds plus a uniform random
              `jitter`) and relay the answer;
- `refuse`    the listening socket is closed: connection refused (re-bound on the same port
              when the mode changes back);
- `hang`      accept, read the request, never answer (until the client gives up);
- `status`    answer `status` (default 500) with a Stripe-shaped error body, forward nothing;
- `reset`     answer a status line, headers and part of the body, then RST (SO_LINGER 0);
- `trickle`   answer headers and then one body byte every `interval` seconds.

Every mode except `pass` answers *by itself*: the request never reaches localstripe. That
matters because localstripe ignores `Idempotency-Key`: a fault after localstripe created the
PaymentIntent would make the guard's (correct) retry with the same upstream key create a second
one there, which real Stripe would not. The proxy records every request it saw (`seen`), so a
test can still check that a retry carried the same upstream `Idempotency-Key`. For a forwarded
request it also keeps the target's answer (`status`, `response`), and `done` says the proxy is
finished with the request: a test can learn which objects the target created from the records
alone, and knows which records may still change (`attempted` without a response once `done`
means the target may or may not have acted: the proxy cannot tell).

`idempotent=True` emulates Stripe's own idempotency in front of localstripe: the first request
with a given (Authorization, Idempotency-Key) is forwarded and its response kept; later ones get
that response replayed and are not forwarded (a concurrent duplicate waits for the first).
"""

from __future__ import annotations

import json
import random
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

MAX_HEAD = 256 * 1024
IO_TIMEOUT = 30.0
HOLD_DEADLINE = 60.0  # hang / trickle never hold a connection longer than this


@dataclass
class Seen:
    mode: str
    method: str
    path: str
    headers: dict
    body: bytes
    at: float = field(default_factory=time.monotonic)
    forwarded: bool = False  # the target answered (`status`, `response`)
    replayed: bool = False
    attempted: bool = False  # the proxy connected to the target to forward it
    status: int | None = None  # the target's status and body, when it answered
    response: bytes | None = None
    done: bool = False  # the proxy is finished with it: the fields above no longer change


def _read_head(sock: socket.socket, buf: bytes = b"") -> tuple[bytes, bytes] | None:
    while b"\r\n\r\n" not in buf:
        if len(buf) > MAX_HEAD:
            return None
        chunk = sock.recv(65536)
        if not chunk:
            return None
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    return head, rest


def _parse_headers(lines: list[bytes]) -> list[tuple[str, str]]:
    out = []
    for line in lines:
        k, _, v = line.decode("latin-1").partition(":")
        out.append((k.strip(), v.strip()))
    return out


def _read_body(sock: socket.socket, rest: bytes, headers: list[tuple[str, str]]) -> bytes:
    h = {k.lower(): v for k, v in headers}
    if "chunked" in h.get("transfer-encoding", "").lower():
        data = rest
        body = b""
        while True:
            while b"\r\n" not in data:
                data += sock.recv(65536)
            size_line, _, data = data.partition(b"\r\n")
            size = int(size_line.split(b";")[0], 16)
            while len(data) < size + 2:
                more = sock.recv(65536)
                if not more:
                    return body
                data += more
            if size == 0:
                return body
            body += data[:size]
            data = data[size + 2:]
    n = int(h.get("content-length", "0") or 0)
    body = rest
    while len(body) < n:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return body[:n]


def _read_request(sock: socket.socket):
    got = _read_head(sock)
    if got is None:
        return None
    head, rest = got
    lines = head.split(b"\r\n")
    method, target, _version = lines[0].decode("latin-1").split(" ", 2)
    headers = _parse_headers(lines[1:])
    body = _read_body(sock, rest, headers)
    return method, target, headers, body


def _response(status: int, body: bytes, reason: str = "Fault", ctype="application/json") -> bytes:
    return (f"HTTP/1.1 {status} {reason}\r\nContent-Type: {ctype}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode() + body


def _reset(sock: socket.socket) -> None:
    """Close with RST rather than FIN."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    sock.close()


class FaultProxy:
    def __init__(self, target_url: str, *, idempotent: bool = False):
        t = urlsplit(target_url)
        self.target = (t.hostname or "127.0.0.1", t.port or 80)
        self.idempotent = idempotent
        self.port = 0
        self.url = ""
        self.seen: list[Seen] = []
        self._mode = ("pass", {})
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._stop = threading.Event()
        self._listener: socket.socket | None = None
        self._accept_thread: threading.Thread | None = None
        self._cache: dict[tuple[str, str], bytes] = {}
        self._key_locks: dict[tuple[str, str], threading.Lock] = {}
        self._conns: set[socket.socket] = set()

    # -- lifecycle

    def start(self) -> "FaultProxy":
        self._bind()
        self.url = f"http://127.0.0.1:{self.port}"
        return self

    def stop(self) -> None:
        self._stop.set()
        self._unbind()
        with self._lock:
            conns = list(self._conns)
            self._cond.notify_all()
        for c in conns:
            try:
                c.close()
            except OSError:
                pass

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def _bind(self) -> None:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", self.port))
        s.listen(128)
        s.settimeout(0.1)
        self.port = s.getsockname()[1]
        self._listener = s
        th = threading.Thread(target=self._accept_loop, args=(s,), daemon=True,
                              name=f"fault-proxy-{self.port}")
        self._accept_thread = th
        th.start()

    def _unbind(self) -> None:
        s, th = self._listener, self._accept_thread
        self._listener = None
        if s is not None:
            s.close()
        if th is not None and th is not threading.current_thread():
            th.join(timeout=5)

    # -- control

    def set_mode(self, mode: str, **params) -> None:
        assert mode in ("pass", "refuse", "hang", "status", "reset", "trickle"), mode
        with self._lock:
            was = self._mode[0]
            self._mode = (mode, params)
            self._cond.notify_all()
        if mode == "refuse" and was != "refuse":
            self._unbind()
        elif mode != "refuse" and was == "refuse":
            self._bind()

    def clear(self) -> None:
        self.set_mode("pass")

    @property
    def mode(self) -> str:
        return self._mode[0]

    def requests(self, path: str | None = None) -> list[Seen]:
        with self._lock:
            return [s for s in self.seen if path is None or s.path.split("?")[0] == path]

    def requests_since(self, cursor: int) -> tuple[list[Seen], int]:
        """The records from index `cursor` on (in arrival order) and the cursor for next time."""
        with self._lock:
            return self.seen[cursor:], len(self.seen)

    def wait_for(self, pred, timeout: float, what: str = "condition") -> None:
        """Block until pred(seen list) is true or raise after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while not pred(self.seen):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"fault proxy: {what} not reached in {timeout}s; "
                                       f"saw {[(s.mode, s.method, s.path) for s in self.seen]}")
                self._cond.wait(min(left, 0.2))

    # -- serving

    def _accept_loop(self, listener: socket.socket) -> None:
        while not self._stop.is_set() and self._listener is listener:
            try:
                conn, _ = listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            conn.settimeout(IO_TIMEOUT)
            with self._lock:
                self._conns.add(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        seen = None
        try:
            req = _read_request(conn)
            if req is None:
                return
            method, target, headers, body = req
            with self._lock:
                mode, params = self._mode
                seen = Seen(mode, method, target, {k.lower(): v for k, v in headers}, body)
                self.seen.append(seen)
                self._cond.notify_all()
            getattr(self, f"_do_{mode if mode != 'refuse' else 'hang'}")(
                conn, seen, headers, params)
        except OSError:
            pass
        finally:
            with self._lock:
                self._conns.discard(conn)
                if seen is not None:
                    seen.done = True
                    self._cond.notify_all()
            try:
                conn.close()
            except OSError:
                pass

    def _hold_until_closed(self, conn: socket.socket) -> None:
        deadline = time.monotonic() + HOLD_DEADLINE
        conn.settimeout(0.2)
        while not self._stop.is_set() and time.monotonic() < deadline:
            try:
                if not conn.recv(65536):
                    return
            except socket.timeout:
                continue
            except OSError:
                return

    def _do_hang(self, conn, seen, headers, params) -> None:
        self._hold_until_closed(conn)

    def _do_status(self, conn, seen, headers, params) -> None:
        status = int(params.get("status", 500))
        body = json.dumps({"error": {"type": "api_error", "message": "fault proxy: injected "
                                     f"{status}"}}).encode()
        conn.sendall(_response(status, body, "Injected"))

    def _do_reset(self, conn, seen, headers, params) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 400\r\nRequest-Id: req_fault\r\n\r\n"
                     b'{"id": "pi_fault_never_completed", "object": "payment_intent", "amo')
        _reset(conn)

    def _do_trickle(self, conn, seen, headers, params) -> None:
        interval = float(params.get("interval", 0.25))
        total = 400
        conn.sendall(f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                     f"Content-Length: {total}\r\nConnection: close\r\n\r\n".encode())
        deadline = time.monotonic() + HOLD_DEADLINE
        payload = (b'{"id": "pi_trickled", "pad": "' + b"x" * total)[:total - 2] + b'"}'
        for i in range(total):
            if self._stop.is_set() or time.monotonic() > deadline:
                return
            try:
                conn.sendall(payload[i:i + 1])
            except OSError:
                return  # the client gave up: that is the point
            self._stop.wait(interval)

    def _do_pass(self, conn, seen, headers, params) -> None:
        delay = float(params.get("delay", 0)) + random.uniform(0, float(params.get("jitter", 0)))
        if delay:
            self._stop.wait(delay)
        h = {k.lower(): v for k, v in headers}
        if self.idempotent and h.get("idempotency-key"):
            key = (h.get("authorization", ""), h["idempotency-key"])
            with self._lock:
                klock = self._key_locks.setdefault(key, threading.Lock())
            with klock:
                with self._lock:
                    cached = self._cache.get(key)
                if cached is None:
                    cached = self._forward(seen, headers)
                    with self._lock:
                        self._cache[key] = cached
                else:
                    with self._lock:
                        seen.replayed = True
                conn.sendall(cached)
            return
        conn.sendall(self._forward(seen, headers))

    def _forward(self, seen: Seen, headers) -> bytes:
        out = [f"{seen.method} {seen.path} HTTP/1.1".encode()]
        for k, v in headers:
            if k.lower() in ("connection", "keep-alive", "content-length", "transfer-encoding"):
                continue
            out.append(f"{k}: {v}".encode("latin-1"))
        out.append(f"Content-Length: {len(seen.body)}".encode())
        out.append(b"Connection: close")
        raw = b"\r\n".join(out) + b"\r\n\r\n" + seen.body
        with socket.create_connection(self.target, timeout=IO_TIMEOUT) as up:
            with self._lock:
                seen.attempted = True
            up.sendall(raw)
            got = _read_head(up)
            if got is None:
                raise OSError("upstream closed before answering")
            head, rest = got
            lines = head.split(b"\r\n")
            rheaders = _parse_headers(lines[1:])
            body = _read_body_until_close(up, rest, rheaders)
        with self._lock:
            seen.forwarded = True
            seen.status = int(lines[0].split(b" ", 2)[1])
            seen.response = body
        keep = [f"{k}: {v}".encode("latin-1") for k, v in rheaders
                if k.lower() not in ("connection", "keep-alive", "content-length",
                                     "transfer-encoding")]
        return (b"\r\n".join([lines[0], *keep, f"Content-Length: {len(body)}".encode(),
                              b"Connection: close"]) + b"\r\n\r\n" + body)


def _read_body_until_close(sock, rest: bytes, headers) -> bytes:
    h = {k.lower(): v for k, v in headers}
    if "content-length" in h or "chunked" in h.get("transfer-encoding", "").lower():
        return _read_body(sock, rest, headers)
    body = rest
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return body
        body += chunk
