"""OPERATIONS.md: the CLI and the shipped examples work as documented."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import requests

from conftest import (BIN, EXAMPLES, HTTP_TIMEOUT_SECS, TEST_POLICY, free_port, run_cli,
                      stop_process, tail, wait_for_port)

SYNTAX_ERROR_POLICY = """\
@id("agents-may-pay") permit (principal, action in Action::"move_money", resource);

@id("broken") forbid (principal, action == Action::"payouts.create", resource) when { resource.amount > };
"""

# Parses, but strict validation against the schema must refuse the misspelled attribute.
SCHEMA_ERROR_POLICY = """\
@id("agents-may-pay") permit (principal, action in Action::"move_money", resource);
@id("typo") forbid (principal, action in Action::"move_money", resource) when { resource.amout > 5 };
"""


def diagnostics_at_line(stderr: str, line: int) -> list[str]:
    return re.findall(rf"(?:^|[^0-9]){line}:(\d+): \S", stderr, re.MULTILINE)


def test_invalid_policy_is_rejected_with_line_and_column(tmp_path):
    for text, bad_line in ((SYNTAX_ERROR_POLICY, 3), (SCHEMA_ERROR_POLICY, 2)):
        path = tmp_path / "bad.cedar"
        path.write_text(text)
        p = run_cli("policy", "validate", str(path), check=False)
        assert p.returncode == 1, (p.returncode, p.stdout, p.stderr)
        assert diagnostics_at_line(p.stderr, bad_line), p.stderr


def test_shipped_and_test_policies_validate(tmp_path):
    run_cli("policy", "validate", str(EXAMPLES / "policies.cedar"))
    path = tmp_path / "test.cedar"
    path.write_text(TEST_POLICY)
    run_cli("policy", "validate", str(path))


def test_example_agent_pays_through_the_guard(guard, localstripe):
    before = {p["id"] for p in localstripe.payment_intents()}
    env = dict(os.environ, GUARD_URL=guard.proxy_url, GUARD_AGENT_TOKEN=guard.tokens["a1"])
    p = subprocess.run([sys.executable, str(EXAMPLES / "agent.py"), "2500", "usd"], env=env,
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    pi_id = p.stdout.split()[0]
    assert pi_id.startswith("pi_") and "decision=allow" in p.stdout, p.stdout
    created = [x for x in localstripe.payment_intents() if x["id"] not in before]
    assert [(x["id"], x["amount"]) for x in created] == [(pi_id, 2500)]

    # A refused payment exits non-zero and names the guard's error code.
    p = subprocess.run([sys.executable, str(EXAMPLES / "agent.py"), "60000", "usd"], env=env,
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 1 and "guard_approval_required" in p.stderr, (p.stdout, p.stderr)


def test_example_config_is_accepted(tmp_path, localstripe):
    """serve --config examples/payment-guard.toml (every key at its default; unknown keys
    would be an error), the environment overriding where it listens: it starts, serves, and
    stops with 0 on SIGTERM."""
    proxy_port, admin_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("GUARD_")}
    env.update({
        "GUARD_STORE_DATA_DIR": str(tmp_path / "data"),
        "GUARD_PROXY_LISTEN": f"127.0.0.1:{proxy_port}",
        "GUARD_ADMIN_LISTEN": f"127.0.0.1:{admin_port}",
        "GUARD_UPSTREAM_BASE_URL": localstripe.url,
    })
    log = tmp_path / "guard.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen([str(BIN), "serve", "--config",
                                 str(EXAMPLES / "payment-guard.toml")], env=env, stdout=out,
                                stderr=subprocess.STDOUT, cwd=tmp_path)
    try:
        wait_for_port(proxy_port, proc, "payment-guard serve", log)
        # An unknown token is refused: the proxy is really serving, not just listening.
        r = requests.post(f"http://127.0.0.1:{proxy_port}/v1/payment_intents",
                          data={"amount": 100, "currency": "usd"},
                          headers={"Authorization": "Bearer pg_agent_unknown",
                                   "Idempotency-Key": "k1"}, timeout=HTTP_TIMEOUT_SECS)
        assert r.status_code == 401, r.text
    finally:
        rc = stop_process(proc, "payment-guard serve")
    assert rc == 0, tail(log)

    p = run_cli("audit", "verify", "--data-dir", str(tmp_path / "data"), check=False, env=env)
    assert p.returncode == 0, (p.stdout, p.stderr)
    assert all(json.loads(line)["ok"] for line in p.stdout.splitlines() if line.strip())
