"""The Rust SDK and the reference `standardwebhooks` library agree (WEBHOOKS.md "SDK"): each
verifies what the other signs, and both refuse the same forgeries. Also drives
examples/webhook_receiver.py, with and without the reference library.

The SDK is driven through its example CLI (sdk/examples/sdk_cli.rs), built once per session.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest
import requests
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from conftest import (EXAMPLES, HTTP_TIMEOUT_SECS, REPO, free_port, stop_process, tail,
                      wait_for_port)

BUILD_TIMEOUT_SECS = 280  # under pytest.ini's 300 s per test, which includes fixture setup
CLI_TIMEOUT_SECS = 30
TOLERANCE_SECS = 300  # DEFAULT_TOLERANCE_SECS, and the reference library's fixed 5 minutes
MSG_ID = "evt_0123456789abcdef"

# Non-ASCII on purpose: both sides must sign the UTF-8 bytes, not some re-encoding.
EVENT = {"id": MSG_ID, "type": "intent.held", "created": 1764000000, "org": "org_interop",
         "data": {"intent": "int_1", "amount": 60000, "note": "café – 5 €"},
         "audit_head": {"seq": 42, "hash": "9f" * 32}}
BODY = json.dumps(EVENT, ensure_ascii=False, separators=(",", ":"))

# A 24-byte unpadded secret (the shortest allowed) and 32- and 64-byte padded ones.
SECRETS = ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
           "whsec_" + base64.b64encode(bytes(range(32))).decode(),
           "whsec_" + base64.b64encode(bytes(range(100, 164))).decode()]


@pytest.fixture(scope="session")
def sdk_cli() -> Path:
    """The example CLI, built in the release profile (a no-op when already up to date)."""
    if os.environ.get("SDK_CLI_BIN"):
        return Path(os.environ["SDK_CLI_BIN"])
    subprocess.run(["cargo", "build", "--release", "-q", "-p", "payment-guard-sdk",
                    "--example", "sdk_cli"], cwd=REPO, check=True, timeout=BUILD_TIMEOUT_SECS)
    return REPO / "target" / "release" / "examples" / "sdk_cli"


def now() -> int:
    return int(time.time())


def sdk_sign(cli: Path, secrets: list[str], msg_id: str, ts: int, body: str) -> str:
    p = subprocess.run([cli, "sign", ",".join(secrets), msg_id, str(ts)], input=body.encode(),
                       capture_output=True, timeout=CLI_TIMEOUT_SECS)
    assert p.returncode == 0, p.stderr.decode()
    return p.stdout.decode().strip()


def sdk_verify(cli: Path, secret: str, headers: dict, body: str) -> tuple[int, str]:
    """(exit code, event type on success or the error variant on refusal)."""
    p = subprocess.run([cli, "verify", secret, headers["webhook-id"], headers["webhook-timestamp"],
                        headers["webhook-signature"], str(now()), str(TOLERANCE_SECS)],
                       input=body.encode(), capture_output=True, timeout=CLI_TIMEOUT_SECS)
    if p.returncode == 0:
        return 0, p.stdout.decode().strip()
    assert p.returncode == 1, p.stderr.decode()
    return 1, p.stderr.decode().removeprefix("error: ").split(":")[0]


def ref_sign(secret: str, msg_id: str, ts: int, body: str) -> str:
    return Webhook(secret).sign(msg_id, datetime.fromtimestamp(ts, tz=timezone.utc), body)


def headers_of(msg_id: str, ts: int | str, signature: str) -> dict:
    return {"webhook-id": msg_id, "webhook-timestamp": str(ts), "webhook-signature": signature}


@pytest.mark.parametrize("secret", SECRETS)
def test_reference_library_verifies_sdk_signatures(sdk_cli, secret):
    ts = now()
    signature = sdk_sign(sdk_cli, [secret], MSG_ID, ts, BODY)
    assert signature == ref_sign(secret, MSG_ID, ts, BODY)
    assert Webhook(secret).verify(BODY.encode(), headers_of(MSG_ID, ts, signature)) == EVENT


@pytest.mark.parametrize("secret", SECRETS)
def test_sdk_verifies_reference_library_signatures(sdk_cli, secret):
    ts = now()
    signature = ref_sign(secret, MSG_ID, ts, BODY)
    assert sdk_verify(sdk_cli, secret, headers_of(MSG_ID, ts, signature), BODY) == (0, "intent.held")


def test_reference_library_accepts_sdk_generated_secret(sdk_cli):
    p = subprocess.run([sdk_cli, "secret"], capture_output=True, timeout=CLI_TIMEOUT_SECS, check=True)
    secret = p.stdout.decode().strip()
    assert secret.startswith("whsec_") and len(base64.b64decode(secret[6:])) == 32
    ts = now()
    signature = sdk_sign(sdk_cli, [secret], MSG_ID, ts, BODY)
    assert Webhook(secret).verify(BODY.encode(), headers_of(MSG_ID, ts, signature)) == EVENT


def test_rotation_overlap_verifies_with_either_secret_in_both(sdk_cli):
    old, new = SECRETS[0], SECRETS[1]
    ts = now()
    signature = sdk_sign(sdk_cli, [old, new], MSG_ID, ts, BODY)
    assert signature == f"{ref_sign(old, MSG_ID, ts, BODY)} {ref_sign(new, MSG_ID, ts, BODY)}"
    headers = headers_of(MSG_ID, ts, signature)
    for secret in (old, new):
        assert Webhook(secret).verify(BODY.encode(), headers) == EVENT
        assert sdk_verify(sdk_cli, secret, headers, BODY) == (0, "intent.held")
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRETS[2]).verify(BODY.encode(), headers)
    assert sdk_verify(sdk_cli, SECRETS[2], headers, BODY) == (1, "NoMatchingSignature")


def test_unknown_signature_versions_are_skipped_by_both(sdk_cli):
    secret, ts = SECRETS[1], now()
    good = ref_sign(secret, MSG_ID, ts, BODY)
    headers = headers_of(MSG_ID, ts, f"v1a,{good[3:]} {good}")
    assert Webhook(secret).verify(BODY.encode(), headers) == EVENT
    assert sdk_verify(sdk_cli, secret, headers, BODY) == (0, "intent.held")


def forgery(kind: str, secret: str) -> tuple[dict, str]:
    """Headers and body of a delivery altered after signing (or signed at a bad time)."""
    ts = now()
    signed = ref_sign(secret, MSG_ID, ts, BODY)
    if kind == "tampered_body":
        return headers_of(MSG_ID, ts, signed), BODY.replace("60000", "6000")
    if kind == "tampered_timestamp":
        return headers_of(MSG_ID, ts + 1, signed), BODY
    if kind == "tampered_id":
        return headers_of(MSG_ID + "x", ts, signed), BODY
    if kind in ("old_timestamp", "future_timestamp"):
        moved = ts - 2 * TOLERANCE_SECS if kind == "old_timestamp" else ts + 2 * TOLERANCE_SECS
        return headers_of(MSG_ID, moved, ref_sign(secret, MSG_ID, moved, BODY)), BODY
    if kind == "bare_v1":
        return headers_of(MSG_ID, ts, "v1,"), BODY
    if kind == "only_v1a":
        return headers_of(MSG_ID, ts, "v1a," + signed[3:]), BODY
    raise AssertionError(kind)


@pytest.mark.parametrize("kind,sdk_error", [
    ("tampered_body", "NoMatchingSignature"),
    ("tampered_timestamp", "NoMatchingSignature"),
    ("tampered_id", "NoMatchingSignature"),
    ("old_timestamp", "TimestampOutOfTolerance"),
    ("future_timestamp", "TimestampOutOfTolerance"),
    ("bare_v1", "BadSignatureHeader"),
    ("only_v1a", "BadSignatureHeader"),
])
def test_forgeries_are_refused_by_both(sdk_cli, kind, sdk_error):
    secret = SECRETS[1]
    headers, body = forgery(kind, secret)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body.encode(), headers)
    assert sdk_verify(sdk_cli, secret, headers, body) == (1, sdk_error)


# ---------------------------------------------------------------- examples/webhook_receiver.py


@pytest.mark.parametrize("verifier", ["standardwebhooks", "stdlib"])
def test_example_receiver_verifies_dedupes_and_refuses(sdk_cli, tmp_path, verifier):
    secret, port = SECRETS[1], free_port()
    log = tmp_path / "receiver.log"
    # `python -S` leaves site-packages out, so the receiver falls back to its stdlib verifier.
    flags = ["-S"] if verifier == "stdlib" else []
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, *flags, "-u", EXAMPLES / "webhook_receiver.py",
                                 str(port)], stdout=out, stderr=subprocess.STDOUT,
                                env={**os.environ, "GUARD_WEBHOOK_SECRET": secret})
    try:
        wait_for_port(port, proc, "webhook_receiver.py", log)
        url = f"http://127.0.0.1:{port}/webhooks"

        def post(headers: dict, body: str) -> int:
            return requests.post(url, data=body.encode(), headers=headers,
                                 timeout=HTTP_TIMEOUT_SECS).status_code

        ts = now()
        good = headers_of(MSG_ID, ts, sdk_sign(sdk_cli, [secret], MSG_ID, ts, BODY))
        assert post(good, BODY) == 204
        assert post(good, BODY) == 204  # a retry: acknowledged again, printed once
        for kind in ("tampered_body", "old_timestamp", "bare_v1", "only_v1a"):
            headers, body = forgery(kind, secret)
            assert post(headers, body) == 401, kind
        assert post({}, BODY) == 401
    finally:
        stop_process(proc, "webhook_receiver.py")
    text = log.read_text()
    assert f"verifier: {verifier}" in text, tail(log)
    assert text.count(f"intent.held {MSG_ID} audit_head=42:{'9f' * 32}") == 1, tail(log)
