"""ADMIN_API.md: the admin API publishes its own OpenAPI document, generated from the code, and
it must agree with what the server does.

1. The document served at /api/v1/openapi.json names every route admin/src/resources.rs (and
   the authentication module) registers.
2. schemathesis (pinned in tests/requirements.txt, run as the `st` CLI from the venv) generates
   requests for every read-only GET operation, signed in as the Owner, with a bounded number of
   examples, and checks that none of them makes the server fail (`not_a_server_error`: no 5xx).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import uuid
from pathlib import Path

import requests

from admin_client import admin_url, new_hold, owner, proxy_payment, wait_admin_ready
from conftest import HTTP_TIMEOUT_SECS, REPO, new_run_id

ST = Path(sys.executable).with_name("st")
MAX_EXAMPLES = 20
SEED = 20240611
ST_TIMEOUT_SECS = 240


def declared_routes(path: Path) -> set[tuple[str, str]]:
    src = path.read_text()
    return {(m.lower(), p) for m, p in
            re.findall(r'#\[utoipa::path\(\s*(\w+),\s*path\s*=\s*"([^"]+)"', src)}


def fetch_openapi(guard) -> dict:
    wait_admin_ready(guard)
    r = requests.get(admin_url(guard) + "/api/v1/openapi.json", timeout=HTTP_TIMEOUT_SECS)
    assert r.status_code == 200, r.text[:500]
    assert r.headers["Content-Type"].startswith("application/json"), r.headers
    doc = r.json()
    assert doc["openapi"].startswith("3."), doc.get("openapi")
    return doc


def test_openapi_document_lists_every_route(guard):
    doc = fetch_openapi(guard)
    published = {(m.lower(), p) for p, ops in doc["paths"].items() for m in ops
                 if m.lower() in ("get", "post", "put", "patch", "delete")}

    resources_rs = REPO / "admin" / "src" / "resources.rs"
    resources = declared_routes(resources_rs)
    assert len(resources) == resources_rs.read_text().count("#[utoipa::path("), (
        "could not parse every #[utoipa::path] of resources.rs")
    missing = sorted(resources - published)
    assert not missing, f"routes of resources.rs missing from openapi.json: {missing}"

    auth = set()
    for f in sorted((REPO / "admin" / "src" / "auth").glob("*.rs")):
        auth |= declared_routes(f)
    missing = sorted(auth - published)
    assert not missing, f"authentication routes missing from openapi.json: {missing}"
    assert ("get", "/api/v1/me") in published and ("post", "/api/v1/auth/login") in published

    # Nothing is published that no handler of the admin crate declares.
    declared = set()
    for f in sorted((REPO / "admin" / "src").rglob("*.rs")):
        declared |= declared_routes(f)
    extra = sorted(published - declared)
    assert not extra, f"openapi.json describes routes no handler declares: {extra}"


def test_schemathesis_finds_no_server_error_on_read_endpoints(guard, tmp_path):
    doc = fetch_openapi(guard)
    gets = sorted(p for p, ops in doc["paths"].items() if "get" in ops)
    assert "/api/v1/intents/{id}" in gets and "/api/v1/audit" in gets, gets

    # Data to read: an allowed (succeeded) intent, a held one, a cap; the audit trail grows.
    run = new_run_id()
    allowed = proxy_payment(guard, 1000, run=run, key=str(uuid.uuid4()))
    assert allowed.status_code == 200, allowed.text
    new_hold(guard, run=run)
    boss = owner(guard)
    boss.expect("POST", "/api/v1/caps", {"scope": "org", "currency": "usd", "interval": "monthly",
                                          "limit": 10**9}, status=201)
    cookie = boss.http.cookies.get("pg_session")
    assert cookie
    base = admin_url(guard)
    report = tmp_path / "schemathesis.json"
    assert ST.exists(), f"{ST} missing: `make venv` installs schemathesis from tests/requirements.txt"

    p = subprocess.run(
        [str(ST), "run", f"{base}/api/v1/openapi.json", "--url", base,
         "--include-method", "GET",
         "--checks", "not_a_server_error",
         "--max-examples", str(MAX_EXAMPLES),
         "--seed", str(SEED),
         "--workers", "1",
         "--generation-database", "none",
         "--header", f"Cookie: pg_session={cookie}",
         "--request-timeout", "10",
         "--report", "json", "--report-json-path", str(report),
         "--no-color"],
        capture_output=True, text=True, timeout=ST_TIMEOUT_SECS, cwd=tmp_path,
    )
    out = p.stdout + p.stderr
    print(out[-4000:])  # shown with -s, and with the failure otherwise
    assert p.returncode == 0, f"schemathesis exited {p.returncode}:\n{out[-6000:]}"
    summary = json.loads(report.read_text())
    assert summary["complete"] is True and summary["exit_code"] == 0, summary["stop_reason"]
    # Every GET operation of the document was exercised, none errored, none lacked auth.
    ops = summary["operations"]
    assert ops["selected"] == ops["tested"] == len(gets) and ops["errored"] == 0, ops
    assert summary["warnings"]["missing_auth"] == [], summary["warnings"]
    cases = summary["test_cases"]
    assert cases["generated"] >= len(gets), cases
    assert cases["with_failures"] == 0 and cases["errored"] == 0, cases
    assert summary["failures"] == [] and summary["errors"] == [], (
        json.dumps(summary["failures"] + summary["errors"], indent=1)[:6000])
    # The session stayed valid throughout: fuzzing reads does not sign anyone out.
    assert boss.whoami()["user"]["email"] == "owner@example.com"
