"""End-to-end fixtures: the real `payment-guard` binary, localstripe as the rail, and the
official stripe-python SDK as the agent.

Every guard gets its own temporary data dir and free ports, so the suite can run while a
developer's `make run` holds 8080/8081. Readiness is always polled (TCP connect) against a
bounded deadline; nothing sleeps in place of synchronization.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import requests
import stripe

REPO = Path(__file__).resolve().parents[2]
BIN = Path(os.environ.get("PAYMENT_GUARD_BIN", REPO / "target" / "release" / "payment-guard"))
EXAMPLES = REPO / "examples"

START_DEADLINE_SECS = 30
STOP_DEADLINE_SECS = 20
CLI_TIMEOUT_SECS = 60
HTTP_TIMEOUT_SECS = 30
POLL_INTERVAL_SECS = 0.05

RAIL_KEY = "sk_test_payment_guard_e2e"
OWNER_PASSWORD = "e2e-owner-Password-that-is-long-enough-42"

# The policy set every test guard runs unless a test says otherwise: POLICIES.md's example
# without `eur-only` (the tests pay in usd), plus read/write permits.
HOLD_THRESHOLD = 50000
TEST_POLICY = """\
@id("agents-may-pay") permit (principal, action in Action::"move_money", resource);
@id("agents-may-read") permit (principal, action in Action::"read", resource);
@id("agents-may-write") permit (principal, action in Action::"write", resource);
@id("no-payouts") @reason("payouts are not allowed for agents")
forbid (principal, action == Action::"payouts.create", resource);
@id("big-needs-approval") @hold("payments over 500.00 need a human")
forbid (principal, action in Action::"move_money", resource) when { resource.amount > 50000 };
"""

# localstripe rewrites /tmp/localstripe.pickle on every write; with several instances
# (the shared one, the upstream-outage one, a developer's) they would clobber each other
# and slow every request down. --from-scratch never reads it, so persistence is disabled.
LOCALSTRIPE_LAUNCHER = (
    "import localstripe.resources as r\n"
    "r.Store.dump_to_disk = lambda self: None\n"
    "from localstripe.server import start\n"
    "start()\n"
)


# ---------------------------------------------------------------------------- helpers


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, proc: subprocess.Popen, what: str, log: Path) -> None:
    """Poll a TCP connect until it succeeds, the process dies, or the deadline passes."""
    deadline = time.monotonic() + START_DEADLINE_SECS
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode} before listening on "
                               f"{port}\n{tail(log)}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not listening on {port} after {START_DEADLINE_SECS}s\n"
                               f"{tail(log)}")
        try:
            proc.wait(timeout=POLL_INTERVAL_SECS)  # poll interval that also notices an exit
        except subprocess.TimeoutExpired:
            pass


def stop_process(proc: subprocess.Popen, what: str) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=STOP_DEADLINE_SECS)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=STOP_DEADLINE_SECS)
            raise AssertionError(f"{what} did not stop within {STOP_DEADLINE_SECS}s of SIGTERM")
    return proc.returncode


def tail(path: Path, lines: int = 60) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return f"({path} missing)"
    return f"--- last {lines} lines of {path} ---\n" + "\n".join(text[-lines:])


def header(headers, name: str):
    """Case-insensitive header lookup on whatever mapping a client returned."""
    for k, v in (headers or {}).items():
        if k.lower() == name.lower():
            return v
    return None


def error_of(exc: stripe.StripeError) -> dict:
    """The `error` object of a Stripe-shaped error body (e.code is unset for some classes)."""
    assert isinstance(exc.json_body, dict) and "error" in exc.json_body, exc.http_body
    return exc.json_body["error"]


def new_run_id() -> str:
    return uuid.uuid4().hex


def form(pairs) -> bytes:
    """Stripe's form encoding, brackets left literal as stripe-python sends them."""
    from urllib.parse import quote

    return "&".join(f"{quote(k, safe='[]')}={quote(str(v), safe='')}" for k, v in pairs).encode()


# ---------------------------------------------------------------------------- localstripe


class Localstripe:
    """One localstripe process on a loopback port (it binds `::`, we talk to 127.0.0.1)."""

    def __init__(self, workdir: Path, port: int | None = None):
        self.workdir = workdir
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = workdir / f"localstripe-{self.port}.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-u", "-c", LOCALSTRIPE_LAUNCHER,
                 "--port", str(self.port), "--from-scratch"],
                stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir,
            )
        wait_for_port(self.port, self.proc, "localstripe", self.log)

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, "localstripe")

    def get(self, path: str, **params) -> requests.Response:
        return requests.get(self.url + path, params=params, auth=(RAIL_KEY, ""),
                            timeout=HTTP_TIMEOUT_SECS)

    def payment_intents(self) -> list[dict]:
        """Every PaymentIntent localstripe holds (it pages with limit/starting_after)."""
        out, after = [], None
        while True:
            params = {"limit": 100}
            if after:
                params["starting_after"] = after
            r = self.get("/v1/payment_intents", **params)
            assert r.status_code == 200, r.text
            page = r.json()
            out.extend(page["data"])
            if not page["has_more"] or not page["data"]:
                return out
            after = page["data"][-1]["id"]

    def payment_intent(self, pi_id: str) -> dict | None:
        """One PaymentIntent from localstripe's own records; None if it holds no such id."""
        r = self.get(f"/v1/payment_intents/{pi_id}")
        if r.status_code == 404:
            return None
        assert r.status_code == 200, r.text
        return r.json()

    def payment_intents_of_run(self, run: str) -> list[dict]:
        """localstripe cannot filter lists by metadata; tests tag their PIs with metadata[run]."""
        return [pi for pi in self.payment_intents() if (pi.get("metadata") or {}).get("run") == run]

    def requests_seen(self, method: str, path: str) -> int:
        """How many `METHOD path` requests localstripe logged (aiohttp access log)."""
        needle = f'"{method} {path}'
        try:
            lines = self.log.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return 0
        return sum(1 for line in lines if needle in line)


@pytest.fixture(scope="session")
def session_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("e2e")


@pytest.fixture(scope="session")
def localstripe(session_dir) -> Localstripe:
    ls = Localstripe(session_dir)
    ls.start()
    yield ls
    ls.stop()


# ---------------------------------------------------------------------------- the guard


class Guard:
    """A `payment-guard` with its own data dir, ports, organization, agents, policy and rail.

    Store commands (`cli`) run only while the guard is stopped: the store is locked by a
    running guard.
    """

    def __init__(self, workdir: Path, upstream_url: str, *, agents=("a1",),
                 policy: str = TEST_POLICY, caps=(), env: dict | None = None,
                 rail_key: str | None = RAIL_KEY):
        self.workdir = workdir
        self.data_dir = workdir / "data"
        self.log = workdir / "guard.log"
        self.proxy_port = free_port()
        self.admin_port = free_port()
        self.proxy_url = f"http://127.0.0.1:{self.proxy_port}"
        self.upstream_url = upstream_url
        self.extra_env = dict(env or {})
        self.proc: subprocess.Popen | None = None
        self.org_id = ""
        self.agent_ids: dict[str, str] = {}
        self.tokens: dict[str, str] = {}
        self.cap_ids: list[str] = []
        self.policy_file = workdir / "policies.cedar"
        self.policy_file.write_text(policy)
        self._bootstrap(agents, caps, rail_key)

    # -- processes

    def env(self) -> dict:
        env = {k: v for k, v in os.environ.items() if not k.startswith("GUARD_")}
        env.update({
            "GUARD_STORE_DATA_DIR": str(self.data_dir),
            "GUARD_PROXY_LISTEN": f"127.0.0.1:{self.proxy_port}",
            "GUARD_ADMIN_LISTEN": f"127.0.0.1:{self.admin_port}",
            "GUARD_ADMIN_ORIGIN": f"http://127.0.0.1:{self.admin_port}",
            "GUARD_UPSTREAM_BASE_URL": self.upstream_url,
            "GUARD_UPSTREAM_TIMEOUT_SECS": "10",
            # In-flight requests get this long after SIGTERM (default 10 s); tests stop guards
            # often and their requests take milliseconds.
            "GUARD_PROXY_SHUTDOWN_GRACE_SECS": "2",
        })
        env.update(self.extra_env)
        return env

    def cli(self, *args: str, input: str | None = None, check: bool = True
            ) -> subprocess.CompletedProcess:
        assert not self.running, "store commands need a stopped guard"
        return run_cli(*args, input=input, check=check, env=self.env())

    def cli_json(self, *args: str, input: str | None = None) -> dict:
        out = self.cli(*args, input=input).stdout.strip().splitlines()
        assert len(out) == 1, f"expected one JSON line from {args}, got {out!r}"
        return json.loads(out[0])

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        assert not self.running
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([str(BIN), "serve"], env=self.env(), stdout=log,
                                         stderr=subprocess.STDOUT, cwd=self.workdir)
        wait_for_port(self.proxy_port, self.proc, "payment-guard serve", self.log)

    def stop(self) -> None:
        """SIGTERM; OPERATIONS.md: the guard exits 0 after finishing in-flight requests."""
        if self.proc is None:
            return
        rc = stop_process(self.proc, "payment-guard serve")
        self.proc = None
        assert rc == 0, f"guard exited {rc} on SIGTERM\n{tail(self.log)}"

    # -- bootstrap through the CLI

    def _bootstrap(self, agents, caps, rail_key) -> None:
        dd = ("--data-dir", str(self.data_dir))
        init = self.cli_json("init", *dd, "--org", "e2e-org", "--email", "owner@example.com",
                             "--password-stdin", "--json", input=OWNER_PASSWORD + "\n")
        assert init["org_id"].startswith("org_"), init
        self.org_id = init["org_id"]
        for name in agents:
            a = self.cli_json("agent", "create", *dd, "--org", self.org_id, "--name", name,
                              "--json")
            assert a["agent_id"].startswith("agt_") and a["token"].startswith("pg_agent_"), a
            self.agent_ids[name], self.tokens[name] = a["agent_id"], a["token"]
        self.cli("policy", "validate", str(self.policy_file))
        v = self.cli_json("policy", "set", *dd, "--org", self.org_id, str(self.policy_file),
                          "--json")
        assert isinstance(v["version"], int), v
        if rail_key is not None:
            self.cli("rail", "set", *dd, "--org", self.org_id, input=rail_key + "\n")
        for cap in caps:
            self.add_cap(**cap)

    def add_cap(self, *, scope="org", currency="usd", interval="daily", limit: int,
                on_exceed: str | None = None) -> str:
        args = ["cap", "add", "--data-dir", str(self.data_dir), "--org", self.org_id,
                "--scope", scope, "--currency", currency, "--interval", interval,
                "--limit", str(limit)]
        if on_exceed:
            args += ["--on-exceed", on_exceed]
        cap = self.cli_json(*args, "--json")
        assert cap["cap_id"].startswith("cap_"), cap
        self.cap_ids.append(cap["cap_id"])
        return cap["cap_id"]

    # -- stored state (stopped guard)

    def intents(self) -> list[dict]:
        return [json.loads(line) for line in self.intent_lines()]

    def intent_lines(self) -> list[str]:
        """`intent list` as printed: one JSON object per line, unparsed."""
        out = self.cli("intent", "list", "--data-dir", str(self.data_dir), "--org", self.org_id)
        return [line for line in out.stdout.splitlines() if line.strip()]

    def audit_export(self) -> list[str]:
        out = self.cli("audit", "export", "--data-dir", str(self.data_dir), "--org", self.org_id)
        return [line for line in out.stdout.splitlines() if line.strip()]

    def audit_verify(self) -> tuple[int, list[dict], str]:
        p = self.cli("audit", "verify", "--data-dir", str(self.data_dir), check=False)
        lines = [json.loads(line) for line in p.stdout.splitlines() if line.strip()]
        return p.returncode, lines, p.stderr

    # -- the agent's side (running guard)

    def client(self, agent: str = "a1", *, token: str | None = None,
               max_network_retries: int = 0) -> stripe.StripeClient:
        """stripe-python exactly as an agent configures it: guard URL + agent token."""
        return stripe.StripeClient(
            token or self.tokens[agent],
            base_addresses={"api": self.proxy_url},
            max_network_retries=max_network_retries,
            http_client=stripe.RequestsClient(timeout=HTTP_TIMEOUT_SECS),
        )

    def intent(self, intent_id: str, agent: str = "a1") -> dict:
        """PROXY.md: the agent's own view, GET /v1/guard/intents/{id}."""
        r = requests.get(f"{self.proxy_url}/v1/guard/intents/{intent_id}",
                         headers={"Authorization": f"Bearer {self.tokens[agent]}"},
                         timeout=HTTP_TIMEOUT_SECS)
        assert r.status_code == 200, f"GET /v1/guard/intents/{intent_id}: {r.status_code} {r.text}"
        return r.json()

    def raw_post(self, path: str, body: bytes, *, agent: str = "a1",
                 idempotency_key: str | None = None, headers: dict | None = None
                 ) -> requests.Response:
        """A POST the SDK cannot express (no key, oversize, byte-level replay)."""
        h = {"Authorization": f"Bearer {self.tokens[agent]}",
             "Content-Type": "application/x-www-form-urlencoded"}
        if idempotency_key is not None:
            h["Idempotency-Key"] = idempotency_key
        h.update(headers or {})
        return requests.post(self.proxy_url + path, data=body, headers=h,
                             timeout=HTTP_TIMEOUT_SECS)


def run_cli(*args: str, input: str | None = None, check: bool = True,
            env: dict | None = None) -> subprocess.CompletedProcess:
    if not BIN.exists():
        pytest.fail(f"{BIN} missing: run `cargo build --release` first")
    p = subprocess.run([str(BIN), *args], input=input, capture_output=True, text=True,
                       timeout=CLI_TIMEOUT_SECS, env=env)
    if check and p.returncode != 0:
        raise AssertionError(f"payment-guard {' '.join(args)} exited {p.returncode}\n"
                             f"stdout: {p.stdout}\nstderr: {p.stderr}")
    return p


def master_key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, f"rep_{rep.when}", rep)


@pytest.fixture
def guard_factory(request, tmp_path, localstripe):
    """Builds guards (bootstrapped through the CLI, then started). On teardown each is
    stopped and its audit chain must verify: every test ends with `audit verify` passing."""
    made: list[Guard] = []

    def make(*, start: bool = True, upstream_url: str | None = None, **kw) -> Guard:
        workdir = tmp_path / f"guard{len(made)}"
        workdir.mkdir()
        g = Guard(workdir, upstream_url or localstripe.url, **kw)
        made.append(g)
        if start:
            g.start()
        return g

    yield make

    failed = getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed
    for g in made:
        if failed:
            print(tail(g.log))
        g.stop()
        rc, results, stderr = g.audit_verify()
        assert rc == 0 and results and all(r.get("ok") is True for r in results), (
            f"audit verify after the test: exit {rc}, {results}, {stderr}")


@pytest.fixture
def guard(guard_factory) -> Guard:
    return guard_factory()
