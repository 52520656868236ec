#!/usr/bin/env python3
"""An AI agent's payment call, through Payment Guard, with the official Stripe SDK.

The agent changes two settings and nothing else: the API base is the guard's proxy
listener and the API key is its own guard token (never a Stripe key).

    GUARD_URL=http://127.0.0.1:8080 GUARD_AGENT_TOKEN=pg_agent_... \
        python3 examples/agent.py [AMOUNT_MINOR [CURRENCY]]
"""

import os
import sys
import uuid

import stripe


def main() -> int:
    amount = int(sys.argv[1]) if len(sys.argv) > 1 else 1999
    currency = sys.argv[2] if len(sys.argv) > 2 else "usd"
    client = stripe.StripeClient(
        os.environ["GUARD_AGENT_TOKEN"],
        base_addresses={"api": os.environ.get("GUARD_URL", "http://127.0.0.1:8080")},
        # 409 (same request in flight) and 502 (rail unreachable) are safe to retry:
        # the SDK reuses the Idempotency-Key, so the guard pays at most once.
        max_network_retries=2,
    )
    try:
        pi = client.v1.payment_intents.create(
            params={"amount": amount, "currency": currency, "payment_method_types": ["card"],
                    "metadata": {"purpose": "example agent purchase"}},
            options={"idempotency_key": str(uuid.uuid4())},
        )
    except stripe.StripeError as e:
        error = (e.json_body or {}).get("error", {}) if isinstance(e.json_body, dict) else {}
        guard = error.get("guard") or {}
        print(f"refused: HTTP {e.http_status} {error.get('code')}: {error.get('message')}",
              file=sys.stderr)
        if guard.get("intent"):
            # A held request (402) can be followed at GET /v1/guard/intents/{id}.
            print(f"intent {guard['intent']} decision {guard.get('decision')}", file=sys.stderr)
        return 1
    headers = pi.last_response.headers
    print(f"{pi.id} {pi.amount} {pi.currency} status={pi.status} "
          f"intent={headers.get('Guard-Intent')} decision={headers.get('Guard-Decision')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
