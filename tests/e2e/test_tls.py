"""TLS on both listeners, HSTS and the admin listener's security headers (issue #12, item 7;
DECISIONS.md "TLS on both listeners" and "Console security headers").

Certificates are made at test time with the `openssl` CLI into the test's temporary directory: a
test CA and two leaf certificates for 127.0.0.1 (`leaf-one`, `leaf-two`). Clients are Python's
`ssl` module (handshakes, protocol versions, the presented certificate), `requests` and
stripe-python (an SDK call through the TLS proxy listener).
"""

from __future__ import annotations

import re
import shutil
import signal
import socket
import ssl
import subprocess
import time
import uuid
from pathlib import Path

import pytest
import requests
import stripe

from conftest import (BIN, CLI_TIMEOUT_SECS, HTTP_TIMEOUT_SECS, POLL_INTERVAL_SECS,
                      START_DEADLINE_SECS, header, master_key, new_run_id, tail)

RELOAD_DEADLINE_SECS = 15
SERVER_REFUSALS = {"TLSV1_ALERT_PROTOCOL_VERSION", "SSLV3_ALERT_HANDSHAKE_FAILURE"}
CSP_DIRECTIVES = ["script-src 'self'", "object-src 'none'", "base-uri 'none'",
                  "frame-ancestors 'none'", "default-src 'none'"]

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None,
                                reason="the openssl CLI makes the test certificates")


# ---------------------------------------------------------------------------- certificates


def openssl(*args: str, cwd: Path) -> None:
    p = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True,
                       timeout=CLI_TIMEOUT_SECS)
    assert p.returncode == 0, f"openssl {' '.join(args)}: {p.stderr}"


class Pki:
    """A test CA and leaf certificates it signs, for IP 127.0.0.1 and DNS localhost."""

    def __init__(self, workdir: Path):
        self.dir = workdir / "pki"
        self.dir.mkdir()
        self.ca = self.dir / "ca.pem"
        openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
                "-subj", "/CN=payment-guard e2e CA",
                "-addext", "basicConstraints=critical,CA:TRUE",
                "-addext", "keyUsage=critical,keyCertSign", cwd=self.dir)
        (self.dir / "leaf.ext").write_text(
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n"
            "keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n")

    def leaf(self, name: str) -> tuple[Path, Path]:
        """(chain, key) of a new leaf whose common name is `name`; the chain ends with the CA."""
        openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}",
                cwd=self.dir)
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                "-CAcreateserial", "-days", "2", "-extfile", "leaf.ext",
                "-out", f"{name}.crt", cwd=self.dir)
        chain = self.dir / f"{name}.pem"
        chain.write_text((self.dir / f"{name}.crt").read_text() + self.ca.read_text())
        return chain, self.dir / f"{name}.key"


@pytest.fixture
def pki(tmp_path) -> Pki:
    return Pki(tmp_path)


# ---------------------------------------------------------------------------- TLS clients


def client_context(pki: Pki, version: ssl.TLSVersion | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(pki.ca))
    if version is not None:
        ctx.minimum_version = ctx.maximum_version = version
    return ctx


def handshake(port: int, ctx: ssl.SSLContext) -> tuple[str, str]:
    """(negotiated version, common name of the verified peer certificate)."""
    with socket.create_connection(("127.0.0.1", port), timeout=HTTP_TIMEOUT_SECS) as raw:
        with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            subject = dict(item[0] for item in tls.getpeercert()["subject"])
            return tls.version(), subject["commonName"]


def legacy_context(version: ssl.TLSVersion) -> ssl.SSLContext:
    """A client that really offers TLS 1.0 or 1.1: OpenSSL 3 only does below security level 1."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    ctx.minimum_version = ctx.maximum_version = version
    return ctx


def wait_for_tls(port: int, pki: Pki, guard) -> None:
    """Poll until a verified handshake succeeds (the admin listener opens after the proxy's)."""
    deadline = time.monotonic() + START_DEADLINE_SECS
    while True:
        assert guard.running, f"guard exited\n{tail(guard.log)}"
        try:
            handshake(port, client_context(pki))
            return
        except (OSError, ssl.SSLError):
            if time.monotonic() > deadline:
                raise
        time.sleep(POLL_INTERVAL_SECS)  # poll interval of a bounded wait, not a synchronization


def tls_env(pki: Pki) -> dict:
    """Both listeners on the same files (one SIGHUP reloads both)."""
    chain, key = pki.leaf("leaf-one")
    return {
        "GUARD_PROXY_TLS_CERT": str(chain), "GUARD_PROXY_TLS_KEY": str(key),
        "GUARD_ADMIN_TLS_CERT": str(chain), "GUARD_ADMIN_TLS_KEY": str(key),
    }


def tls_guard(guard_factory, pki: Pki, **env):
    g = guard_factory(start=False, env={**tls_env(pki), **env})
    g.proxy_url = f"https://127.0.0.1:{g.proxy_port}"
    g.extra_env.setdefault("GUARD_ADMIN_ORIGIN", f"https://127.0.0.1:{g.admin_port}")
    g.start()
    wait_for_tls(g.proxy_port, pki, g)
    wait_for_tls(g.admin_port, pki, g)
    return g


def refused_start(guard_factory, env: dict) -> subprocess.CompletedProcess:
    """`serve` with `env` must exit on its own (exit 1) before listening."""
    g = guard_factory(start=False, env=env)
    try:
        p = subprocess.run([str(BIN), "serve"], env=g.env(), capture_output=True, text=True,
                           timeout=START_DEADLINE_SECS, cwd=g.workdir)
    except subprocess.TimeoutExpired:
        pytest.fail("the guard started (it ran until the deadline) instead of refusing")
    for port in (g.proxy_port, g.admin_port):
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", port)) != 0, f"port {port} is open"
    return p


# ---------------------------------------------------------------------------- tests


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1:DeprecationWarning")
@pytest.mark.parametrize("listener", ["proxy", "admin"])
def test_tls_1_2_and_1_3_handshakes_verify_and_1_0_1_1_are_refused(guard_factory, pki,
                                                                     listener):
    g = tls_guard(guard_factory, pki)
    port = g.proxy_port if listener == "proxy" else g.admin_port

    for version, name in [(ssl.TLSVersion.TLSv1_2, "TLSv1.2"),
                          (ssl.TLSVersion.TLSv1_3, "TLSv1.3")]:
        assert handshake(port, client_context(pki, version)) == (name, "leaf-one")

    for version in (ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1):
        with pytest.raises(ssl.SSLError) as info:
            handshake(port, legacy_context(version))
        # The server answered the offered version with an alert: rustls sends protocol_version,
        # or handshake_failure for a TLS 1.0/1.1 hello without signature_algorithms. A client
        # that could not even offer the version would fail locally (NO_PROTOCOLS_AVAILABLE).
        assert info.value.reason in SERVER_REFUSALS, info.value
    # The same legacy client, allowed TLS 1.2, gets through: the refusals above are the version.
    with socket.create_connection(("127.0.0.1", port), timeout=HTTP_TIMEOUT_SECS) as raw:
        with legacy_context(ssl.TLSVersion.TLSv1_2).wrap_socket(raw) as tls:
            assert tls.version() == "TLSv1.2"

    # Plain HTTP on the TLS listener gets no HTTP answer.
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(f"http://127.0.0.1:{port}/healthz", timeout=HTTP_TIMEOUT_SECS)
    assert g.running


def test_stripe_sdk_call_through_the_tls_proxy_listener(guard_factory, pki, localstripe,
                                                        monkeypatch):
    g = tls_guard(guard_factory, pki)
    monkeypatch.setattr(stripe, "ca_bundle_path", str(pki.ca))
    run, key = new_run_id(), str(uuid.uuid4())

    pi = g.client().v1.payment_intents.create(
        params={"amount": 1500, "currency": "usd", "payment_method_types": ["card"],
                "metadata": {"run": run}},
        options={"idempotency_key": key})

    assert pi.id.startswith("pi_")
    assert header(pi.last_response.headers, "Guard-Decision") == "allow"
    intent_id = header(pi.last_response.headers, "Guard-Intent")
    assert [p["id"] for p in localstripe.payment_intents_of_run(run)] == [pi.id]
    g.stop()
    [stored] = g.intents()
    assert stored["id"] == intent_id and stored["status"] == "succeeded"
    assert stored["idempotency_key"] == key and stored["amount"] == 1500


def test_sighup_reloads_the_certificates_and_keeps_a_bad_file_out(guard_factory, pki):
    g = tls_guard(guard_factory, pki)
    env = g.env()
    chain, key = Path(env["GUARD_PROXY_TLS_CERT"]), Path(env["GUARD_PROXY_TLS_KEY"])
    assert handshake(g.proxy_port, client_context(pki))[1] == "leaf-one"

    # A bad file: logged, the previous certificate stays, the process keeps serving.
    chain.write_text("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    g.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + RELOAD_DEADLINE_SECS
    while "TLS certificate reload failed" not in g.log.read_text(errors="replace"):
        assert g.running, f"SIGHUP ended the guard\n{tail(g.log)}"
        assert time.monotonic() < deadline, f"no reload error logged\n{tail(g.log)}"
        time.sleep(POLL_INTERVAL_SECS)
    for port in (g.proxy_port, g.admin_port):
        assert handshake(port, client_context(pki))[1] == "leaf-one"
    r = requests.get(f"https://127.0.0.1:{g.admin_port}/healthz", verify=str(pki.ca),
                     timeout=HTTP_TIMEOUT_SECS)
    assert r.status_code == 200 and r.text == "ok\n"

    # A good new pair: new handshakes present it, on both listeners, with no restart.
    new_chain, new_key = pki.leaf("leaf-two")
    chain.write_text(new_chain.read_text())
    key.write_text(new_key.read_text())
    pid = g.proc.pid
    g.proc.send_signal(signal.SIGHUP)
    for port in (g.proxy_port, g.admin_port):
        deadline = time.monotonic() + RELOAD_DEADLINE_SECS
        while handshake(port, client_context(pki))[1] != "leaf-two":
            assert g.running, f"SIGHUP ended the guard\n{tail(g.log)}"
            assert time.monotonic() < deadline, f"port {port} still presents leaf-one"
            time.sleep(POLL_INTERVAL_SECS)
    assert g.running and g.proc.pid == pid
    r = requests.get(f"https://127.0.0.1:{g.admin_port}/healthz", verify=str(pki.ca),
                     timeout=HTTP_TIMEOUT_SECS)
    assert r.status_code == 200


def test_unusable_certificate_files_stop_the_start_with_a_clear_error(guard_factory, pki):
    one_chain, _ = pki.leaf("leaf-one")
    _, two_key = pki.leaf("leaf-two")
    p = refused_start(guard_factory, {"GUARD_PROXY_TLS_CERT": str(one_chain),
                                      "GUARD_PROXY_TLS_KEY": str(two_key)})
    assert p.returncode == 1, (p.returncode, p.stdout, p.stderr)
    assert "proxy TLS certificate" in p.stderr and "is not usable with the certificate" in p.stderr
    assert "PRIVATE KEY" not in p.stderr and "PRIVATE KEY" not in p.stdout

    missing = pki.dir / "missing.pem"
    p = refused_start(guard_factory, {"GUARD_ADMIN_TLS_CERT": str(missing),
                                      "GUARD_ADMIN_TLS_KEY": str(two_key)})
    assert p.returncode == 1, (p.returncode, p.stdout, p.stderr)
    assert f"admin TLS certificate: cannot open {missing}" in p.stderr, p.stderr


def production_key() -> dict:
    """Production refuses a master key generated in the data directory (README "Secrets and
    files"): these guards get theirs from the environment, as a production deployment would."""
    return {"GUARD_SECRETS_MASTER_KEY": master_key()}


def test_production_refuses_a_plain_http_admin_listener(guard_factory):
    p = refused_start(guard_factory, {**production_key(),
                                      "GUARD_ADMIN_PRODUCTION": "true",
                                      "GUARD_ADMIN_ORIGIN": "https://guard.example"})
    assert p.returncode == 1, (p.returncode, p.stdout, p.stderr)
    assert "admin.production = true refuses plain HTTP on the admin listener" in p.stderr, p.stderr
    assert "admin.tls_terminator" in p.stderr, p.stderr


def test_production_refuses_a_plain_http_proxy_listener_off_loopback(guard_factory):
    g_env = {**production_key(),
             "GUARD_ADMIN_PRODUCTION": "true", "GUARD_ADMIN_ORIGIN": "https://guard.example",
             "GUARD_ADMIN_TLS_TERMINATOR": "true", "GUARD_PROXY_LISTEN": "0.0.0.0:1"}
    p = refused_start(guard_factory, g_env)
    assert p.returncode == 1, (p.returncode, p.stdout, p.stderr)
    assert "refuses plain HTTP on the proxy listener 0.0.0.0:1" in p.stderr, p.stderr


def test_production_with_tls_sends_hsts(guard_factory, pki):
    g = tls_guard(guard_factory, pki, GUARD_ADMIN_PRODUCTION="true", **production_key())

    for path in ("/", "/healthz", "/api/v1/me"):
        r = requests.get(f"https://127.0.0.1:{g.admin_port}{path}", verify=str(pki.ca),
                         timeout=HTTP_TIMEOUT_SECS)
        hsts = r.headers.get("Strict-Transport-Security", "")
        max_age = re.search(r"max-age=(\d+)", hsts)
        assert max_age and int(max_age.group(1)) >= 365 * 86400, (path, hsts)
        assert "includeSubDomains" in hsts, (path, hsts)
    assert r.status_code == 401 and r.json()["error"]["code"] == "authentication_required", r.text


def test_production_behind_a_declared_terminator_starts_and_sends_hsts(guard_factory):
    g = guard_factory(start=False, env={**production_key(), "GUARD_ADMIN_PRODUCTION": "true",
                                        "GUARD_ADMIN_TLS_TERMINATOR": "true"})
    g.extra_env["GUARD_ADMIN_ORIGIN"] = f"https://127.0.0.1:{g.admin_port}"
    g.start()
    deadline = time.monotonic() + START_DEADLINE_SECS
    while True:
        try:
            r = requests.get(f"http://127.0.0.1:{g.admin_port}/healthz",
                             timeout=HTTP_TIMEOUT_SECS)
            break
        except requests.exceptions.ConnectionError:
            assert time.monotonic() < deadline and g.running, tail(g.log)
            time.sleep(POLL_INTERVAL_SECS)
    assert r.status_code == 200
    assert r.headers["Strict-Transport-Security"] == "max-age=63072000; includeSubDomains"


def assert_security_headers(r: requests.Response) -> None:
    csp = r.headers.get("Content-Security-Policy", "")
    for directive in CSP_DIRECTIVES:
        assert directive in csp, (r.url, csp)
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp, csp
    assert r.headers.get("X-Content-Type-Options") == "nosniff", r.url
    assert r.headers.get("X-Frame-Options") == "DENY", r.url
    assert r.headers.get("Referrer-Policy") == "no-referrer", r.url


def test_console_and_api_carry_security_headers_and_the_console_has_no_inline_code(guard):
    base = f"http://127.0.0.1:{guard.admin_port}"
    get = lambda path: requests.get(base + path, timeout=HTTP_TIMEOUT_SECS)  # noqa: E731

    page = get("/")
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    assert_security_headers(page)
    html = page.text
    scripts = re.findall(r"<script\b([^>]*)>(.*?)</script\s*>", html, re.S | re.I)
    assert scripts, "the console loads its script"
    for attrs, body in scripts:
        assert body.strip() == "", f"inline script body: {body[:80]!r}"
        assert re.search(r'\bsrc="/[^"]+"', attrs), attrs
    assert not re.search(r"<style\b", html, re.I), "inline <style>"
    assert not re.search(r"\son[a-z]+\s*=", html, re.I), "on* handler attribute"
    assert not re.search(r"\sstyle\s*=", html, re.I), "style attribute"
    assert "javascript:" not in html.lower()

    for path, ctype in [("/console.js", "text/javascript"), ("/console.css", "text/css")]:
        asset = get(path)
        assert asset.status_code == 200 and asset.headers["Content-Type"].startswith(ctype), path
        assert_security_headers(asset)
    assert "fetch('/api/v1'" in get("/console.js").text
    assert 'src="/console.js"' in html and 'href="/console.css"' in html

    me = get("/api/v1/me")
    assert me.status_code == 401 and me.json()["error"]["code"] == "authentication_required", me.text
    assert_security_headers(me)
    login = requests.post(base + "/api/v1/auth/login", json={"email": "nobody@example.com",
                                                              "password": "wrong-password-1"},
                          headers={"Origin": base}, timeout=HTTP_TIMEOUT_SECS)
    assert login.status_code == 401, login.text
    assert_security_headers(login)
    for path in ("/healthz", "/api/v1/openapi.json", "/metrics", "/no-such-page"):
        r = get(path)
        assert_security_headers(r)
        # Not production: no HSTS (a plain-HTTP development listener must not pin browsers).
        assert "Strict-Transport-Security" not in r.headers, path
