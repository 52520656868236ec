"""OPERATIONS.md "Secrets and files": where the master key may live, the data directory's
permissions, and `payment-guard secrets rotate-master-key`.

Each test drives the real binary: the CLI and `serve` with real configuration variables, the
rail through localstripe, sign-in through the admin API with pyotp codes, webhooks verified by
the reference `standardwebhooks` library.
"""

from __future__ import annotations

import base64
import json
import os
import stat
import time
import uuid
from pathlib import Path

import pyotp
import pytest

from admin_client import OWNER_EMAIL, AdminClient, new_hold, owner
from conftest import OWNER_PASSWORD, master_key, new_run_id, run_cli, tail
from webhook_receiver_fixture import Receiver

KEY_FILE_VAR = "GUARD_SECRETS_MASTER_KEY_FILE"
DELIVERY_DEADLINE_SECS = 30
WEBHOOK_ENV = {
    "GUARD_WEBHOOKS_ALLOW_PRIVATE_TARGETS": "true",
    "GUARD_WEBHOOKS_RETRY_BASE_MS": "200",
    "GUARD_WEBHOOKS_POLL_MS": "50",
}
WRONG_KEY = "the master key does not open this store's secrets"


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.stop()


def mode_of(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def write_key_file(path: Path, key: str, mode: int = 0o600) -> Path:
    path.write_text(key + "\n")
    path.chmod(mode)
    return path


def env_without_guard(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GUARD_")}
    env.update(extra)
    return env


# ---------------------------------------------------------------------------- rotation


def enroll_totp(boss: AdminClient) -> pyotp.TOTP:
    setup = boss.expect("POST", "/api/v1/me/totp/setup", {"password": OWNER_PASSWORD})
    totp = pyotp.TOTP(setup["secret"])
    # A code of the previous step (accepted, skew 1), so the sign-in after the rotation can use
    # the current one without meeting the replay rule.
    boss.expect("POST", "/api/v1/me/totp/confirm", {"code": totp.at(time.time() - 30)})
    assert boss.whoami()["totp_enabled"] is True
    return totp


def test_rotation_reseals_rail_totp_and_webhook_secrets_and_the_old_key_is_refused(
        guard_factory, tmp_path, localstripe, receiver):
    old_key = master_key()
    (tmp_path / "secrets").mkdir(mode=0o700)
    key_file = write_key_file(tmp_path / "secrets" / "master.key", old_key)
    g = guard_factory(env={KEY_FILE_VAR: str(key_file), **WEBHOOK_ENV})
    assert not (g.data_dir / "master.key").exists(), "no key generated in the data dir"
    boss = owner(g)
    totp = enroll_totp(boss)
    rx = receiver.start()
    wh = boss.expect("POST", "/api/v1/webhooks", {"url": rx.url, "events": ["intent.held"]},
                     status=201)
    signing_secret = wh["secret"]
    rx.secrets = [signing_secret]
    g.stop()

    p = g.cli("secrets", "rotate-master-key", "--json")
    [line] = p.stdout.strip().splitlines()
    report = json.loads(line)
    # admin_answers: the stored 2xx answers kept for Idempotency-Key replays (they may show a
    # secret), here TOTP setup, TOTP confirm and the webhook's creation.
    assert report == {"rail_keys": 1, "totp_secrets": 1, "webhook_secrets": 1,
                      "admin_answers": 3, "organizations": 1,
                      "key_file": str(key_file.resolve())}, report
    new_key = key_file.read_text().strip()
    assert new_key != old_key and len(base64.b64decode(new_key)) == 32
    assert mode_of(key_file) == 0o600
    assert not Path(str(key_file) + ".new").exists()
    assert old_key not in p.stdout + p.stderr and new_key not in p.stdout + p.stderr

    # The rotation is in the audit chain, without key material.
    rotated = [json.loads(e) for e in g.audit_export()
               if json.loads(e)["kind"] == "secrets.master_key_rotated"]
    assert [(e["actor"], e["data"]) for e in rotated] == [
        ({"type": "system", "id": "cli"}, {"rail_keys": 1, "webhook_secrets": 1})], rotated
    exported = "\n".join(g.audit_export())
    assert old_key not in exported and new_key not in exported

    # Started with the new key: the rail key, the TOTP secret and the signing secret all open.
    g.start()
    run = new_run_id()
    pi = g.client().v1.payment_intents.create(
        params={"amount": 1234, "currency": "usd", "metadata": {"run": run}},
        options={"idempotency_key": str(uuid.uuid4())})
    assert pi.status in ("requires_payment_method", "requires_confirmation", "succeeded"), pi
    assert [x["id"] for x in localstripe.payment_intents_of_run(run)] == [pi.id]

    signed_in = AdminClient.for_guard(g, label="owner after rotation")
    signed_in.login(OWNER_EMAIL, OWNER_PASSWORD, totp_code=totp.now())
    assert signed_in.whoami()["totp_enabled"] is True

    intent_id = new_hold(g, run=run)
    [rec] = rx.wait_for(lambda rs: len(rs) >= 1, timeout=DELIVERY_DEADLINE_SECS,
                        what="the intent.held delivery")
    assert rec.verified_with == [signing_secret] and rec.answered == 200, rec
    assert rec.event["type"] == "intent.held" and rec.event["data"]["intent"] == intent_id
    g.stop()

    # The old key is refused, by store commands and by `serve`, with a clear error.
    write_key_file(key_file, old_key)
    p = g.cli("intent", "list", "--data-dir", str(g.data_dir), "--org", g.org_id, check=False)
    assert p.returncode == 1 and WRONG_KEY in p.stderr, (p.returncode, p.stderr)
    served = run_cli("serve", check=False, env=g.env())
    assert served.returncode == 1 and WRONG_KEY in served.stderr, (served.returncode,
                                                                    served.stderr)
    write_key_file(key_file, new_key)  # the fixture's teardown verifies the chain


def test_a_rotation_interrupted_after_its_commit_is_finished_by_the_next_run(guard_factory,
                                                                            tmp_path):
    """The recovery story: the store committed under the new key, the rename did not happen."""
    (tmp_path / "secrets").mkdir(mode=0o700)
    key_file = write_key_file(tmp_path / "secrets" / "master.key", master_key())
    g = guard_factory(start=False, env={KEY_FILE_VAR: str(key_file)})
    new_key = master_key()
    # Simulate the crash: re-seal with a key given on stdin, then put the old file back and
    # leave the new key where the rotation writes it before the rename.
    old = key_file.read_text()
    g.cli("secrets", "rotate-master-key", "--new-key-stdin", input=new_key + "\n")
    assert key_file.read_text().strip() == new_key
    pending = Path(str(key_file) + ".new")
    write_key_file(pending, new_key)
    write_key_file(key_file, old.strip())

    p = g.cli("audit", "verify", "--data-dir", str(g.data_dir), check=False)
    assert p.returncode == 1 and WRONG_KEY in p.stderr and str(pending) in p.stderr, p.stderr

    p = g.cli("secrets", "rotate-master-key", "--json")
    assert json.loads(p.stdout) == {"finished_interrupted_rotation": True,
                                    "key_file": str(key_file.resolve())}, p.stdout
    assert key_file.read_text().strip() == new_key and not pending.exists()
    assert mode_of(key_file) == 0o600
    rc, results, stderr = g.audit_verify()
    assert rc == 0 and all(r["ok"] for r in results), (results, stderr)


# ---------------------------------------------------------------------------- production


def test_production_refuses_a_key_kept_in_the_data_dir_or_reachable_by_others(tmp_path):
    data = tmp_path / "data"
    prod = {"GUARD_ADMIN_PRODUCTION": "true", "GUARD_STORE_DATA_DIR": str(data)}

    # No key configured: `serve` refuses before creating anything. (A TLS terminator is
    # declared so that the plain-HTTP admin listener is not what production refuses first.)
    p = run_cli("serve", check=False,
                env=env_without_guard(**prod, GUARD_ADMIN_TLS_TERMINATOR="true",
                                      GUARD_ADMIN_ORIGIN="https://guard.example"))
    assert p.returncode == 1, (p.returncode, p.stderr)
    assert "admin.production is on: the master key must come from GUARD_SECRETS_MASTER_KEY" \
        in p.stderr, p.stderr
    assert not (data / "master.key").exists() and not (data / "guard.redb").exists()

    # A key file inside the data directory, even reached through a symbolic link and `..`.
    data.mkdir(exist_ok=True)
    inside = write_key_file(data / "kept-here.key", master_key())
    link = tmp_path / "elsewhere.key"
    link.symlink_to(inside)
    for path in (link, data / ".." / "data" / "kept-here.key"):
        p = run_cli("init", "--org", "o", "--email", "o@example.com", "--json", check=False,
                    env=env_without_guard(**prod, GUARD_SECRETS_MASTER_KEY_FILE=str(path)))
        assert p.returncode == 1 and "is inside the data directory" in p.stderr, p.stderr
        assert not (data / "guard.redb").exists()

    # A key file group or others can read.
    loose = write_key_file(tmp_path / "loose.key", master_key(), mode=0o640)
    p = run_cli("init", "--org", "o", "--email", "o@example.com", "--json", check=False,
                env=env_without_guard(**prod, GUARD_SECRETS_MASTER_KEY_FILE=str(loose)))
    assert p.returncode == 1 and "has mode 640" in p.stderr and "chmod 600" in p.stderr, p.stderr
    assert not (data / "guard.redb").exists()

    # The same file, private: accepted; and the key from the environment: accepted.
    loose.chmod(0o600)
    p = run_cli("init", "--org", "o", "--email", "o@example.com", "--json", check=False,
                env=env_without_guard(**prod, GUARD_SECRETS_MASTER_KEY_FILE=str(loose)))
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["org_id"].startswith("org_")
    p = run_cli("audit", "verify", check=False,
                env=env_without_guard(**prod, GUARD_SECRETS_MASTER_KEY=loose.read_text().strip()))
    assert p.returncode == 0, p.stderr


# ---------------------------------------------------------------------------- permissions


def test_data_dir_is_0700_its_files_0600_and_loose_ones_are_tightened_at_start(guard_factory):
    old_umask = os.umask(0o022)
    try:
        g = guard_factory()
    finally:
        os.umask(old_umask)
    g.stop()
    files = sorted(p.name for p in g.data_dir.iterdir())
    assert {"guard.redb", "guard.wal", "master.key"} <= set(files), files
    assert mode_of(g.data_dir) == 0o700
    assert {f: oct(mode_of(g.data_dir / f)) for f in files} == {f: oct(0o600) for f in files}

    g.data_dir.chmod(0o755)
    (g.data_dir / "guard.redb").chmod(0o644)
    (g.data_dir / "master.key").chmod(0o640)
    g.start()
    g.stop()
    assert mode_of(g.data_dir) == 0o700
    assert mode_of(g.data_dir / "guard.redb") == 0o600
    assert mode_of(g.data_dir / "master.key") == 0o600
    log = g.log.read_text(errors="replace")
    assert "tightened the data directory's permissions" in log, tail(g.log)
    assert "755 -> 700" in log and "644 -> 600" in log and "640 -> 600" in log, tail(g.log)
