#!/usr/bin/env python3
"""Generate the guard's operation table from Stripe's pinned API surface.

    python3 policies/tools/gen_operations.py            # rewrite the generated files
    python3 policies/tools/gen_operations.py --check    # exit 1 when they are stale

Input:  policies/stripe/operations-2026-10-28.tsv (a copy of ../shared/stripe/, every operation
        of the official Node SDK) and the legacy routes below that Stripe still serves.
Output: policies/operations.tsv          the table the guard compiles into its router
        policies/schema.cedarschema      the generated action block (between the markers)
        docs/OPERATIONS.md               what the guard understands, for people

Each row: method, path template, Cedar action, class, valuation, source.

- action: dotted name from the path (`refunds.create`, `payment_intents.capture`,
  `v2.money_management.outbound_payments.create`); legacy aliases map to the action of the
  route they alias.
- class: move_money | commit_money | admin | write | read (PROXY.md step 2).
- valuation: `none` (moves no money), `fields:<valuer>` (from the request's own parameters),
  `lookup:<valuer>` (the guard GETs the object at the rail first, where Stripe decides the
  amount), `unvaluable` (held unless a policy names the action explicitly).

The classification of every money-relevant operation is written out below by hand: this script
is the reviewed part, the TSV its output. Anything not listed is `write` (POST/DELETE) or `read`.
"""

import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PINNED = os.path.join(ROOT, "policies", "stripe", "operations-2026-10-28.tsv")
TABLE = os.path.join(ROOT, "policies", "operations.tsv")
SCHEMA = os.path.join(ROOT, "policies", "schema.cedarschema")
DOC = os.path.join(ROOT, "docs", "OPERATIONS.md")

# Legacy routes Stripe still serves (from the 2023 OpenAPI description), each mapped to the
# pinned route it aliases. Money moves through some of them (a charge's own refund routes).
ALIASES = [
    ("POST", "/v1/charges/{id}/refund", "POST", "/v1/refunds", "lookup:charge_refund"),
    ("POST", "/v1/charges/{id}/refunds", "POST", "/v1/refunds", "lookup:charge_refund"),
    ("GET", "/v1/charges/{id}/refunds", "GET", "/v1/refunds", None),
    ("GET", "/v1/charges/{chargeId}/refunds/{id}", "GET", "/v1/refunds/{id}", None),
    ("POST", "/v1/charges/{chargeId}/refunds/{id}", "POST", "/v1/refunds/{id}", None),
    ("GET", "/v1/charges/{id}/dispute", "GET", "/v1/disputes/{id}", None),
    ("POST", "/v1/charges/{id}/dispute", "POST", "/v1/disputes/{id}", None),
    ("POST", "/v1/charges/{id}/dispute/close", "POST", "/v1/disputes/{id}/close", "lookup:charge_dispute_close"),
    ("POST", "/v1/application_fees/{id}/refund", "POST", "/v1/application_fees/{id}/refunds", None),
    ("POST", "/v1/accounts/{id}/bank_accounts", "POST", "/v1/accounts/{id}/external_accounts", None),
    ("GET", "/v1/accounts/{accountId}/bank_accounts/{id}", "GET", "/v1/accounts/{accountId}/external_accounts/{id}", None),
    ("POST", "/v1/accounts/{accountId}/bank_accounts/{id}", "POST", "/v1/accounts/{accountId}/external_accounts/{id}", None),
    ("DELETE", "/v1/accounts/{accountId}/bank_accounts/{id}", "DELETE", "/v1/accounts/{accountId}/external_accounts/{id}", None),
    ("GET", "/v1/accounts/{id}/people", "GET", "/v1/accounts/{id}/persons", None),
    ("POST", "/v1/accounts/{id}/people", "POST", "/v1/accounts/{id}/persons", None),
    ("GET", "/v1/accounts/{accountId}/people/{id}", "GET", "/v1/accounts/{accountId}/persons/{id}", None),
    ("POST", "/v1/accounts/{accountId}/people/{id}", "POST", "/v1/accounts/{accountId}/persons/{id}", None),
    ("DELETE", "/v1/accounts/{accountId}/people/{id}", "DELETE", "/v1/accounts/{accountId}/persons/{id}", None),
    ("GET", "/v1/customers/{id}/cards", "GET", "/v1/customers/{id}/sources", None),
    ("POST", "/v1/customers/{id}/cards", "POST", "/v1/customers/{id}/sources", None),
    ("GET", "/v1/customers/{customerId}/cards/{id}", "GET", "/v1/customers/{customerId}/sources/{id}", None),
    ("POST", "/v1/customers/{customerId}/cards/{id}", "POST", "/v1/customers/{customerId}/sources/{id}", None),
    ("DELETE", "/v1/customers/{customerId}/cards/{id}", "DELETE", "/v1/customers/{customerId}/sources/{id}", None),
    ("GET", "/v1/customers/{id}/bank_accounts", "GET", "/v1/customers/{id}/sources", None),
    ("POST", "/v1/customers/{id}/bank_accounts", "POST", "/v1/customers/{id}/sources", None),
    ("GET", "/v1/customers/{customerId}/bank_accounts/{id}", "GET", "/v1/customers/{customerId}/sources/{id}", None),
    ("POST", "/v1/customers/{customerId}/bank_accounts/{id}", "POST", "/v1/customers/{customerId}/sources/{id}", None),
    ("DELETE", "/v1/customers/{customerId}/bank_accounts/{id}", "DELETE", "/v1/customers/{customerId}/sources/{id}", None),
    ("POST", "/v1/customers/{customerId}/bank_accounts/{id}/verify", "POST", "/v1/customers/{customerId}/sources/{id}/verify", None),
    ("GET", "/v1/customers/{id}/subscriptions", "GET", "/v1/subscriptions", None),
    ("POST", "/v1/customers/{id}/subscriptions", "POST", "/v1/subscriptions", None),
    ("GET", "/v1/customers/{customerId}/subscriptions/{id}", "GET", "/v1/subscriptions/{id}", None),
    ("POST", "/v1/customers/{customerId}/subscriptions/{id}", "POST", "/v1/subscriptions/{id}", None),
    ("DELETE", "/v1/customers/{customerId}/subscriptions/{id}", "DELETE", "/v1/subscriptions/{id}", None),
    ("DELETE", "/v1/customers/{customerId}/subscriptions/{id}/discount", "DELETE", "/v1/subscriptions/{id}/discount", None),
    ("GET", "/v1/customers/{customerId}/subscriptions/{id}/discount", "GET", "/v1/subscriptions/{id}", None),
    ("GET", "/v1/customers/{id}/discount", "GET", "/v1/customers/{id}", None),
    ("GET", "/v1/balance/history", "GET", "/v1/balance_transactions", None),
    ("GET", "/v1/balance/history/{id}", "GET", "/v1/balance_transactions/{id}", None),
    ("POST", "/v1/subscription_items/{id}/usage_records", "POST", "/v1/billing/meter_events", None),
]

# Hand-reviewed: (method, path) -> (class, valuation). Everything else: write / none, or read.
MOVE, COMMIT, ADMIN, WRITE = "move_money", "commit_money", "admin", "write"
REVIEWED = {
    # Payments: money collected now.
    ("POST", "/v1/payment_intents"): (MOVE, "fields:payment_intent_create"),
    ("POST", "/v1/payment_intents/{id}"): (MOVE, "lookup:payment_intent_update"),
    ("POST", "/v1/payment_intents/{id}/confirm"): (MOVE, "lookup:payment_intent_settle"),
    ("POST", "/v1/payment_intents/{id}/apply_customer_balance"): (MOVE, "lookup:payment_intent_settle"),
    ("POST", "/v1/payment_intents/{id}/capture"): (MOVE, "lookup:payment_intent_capture"),
    ("POST", "/v1/payment_intents/{id}/increment_authorization"): (MOVE, "lookup:increment_authorization"),
    ("POST", "/v1/charges"): (MOVE, "fields:charge_create"),
    ("POST", "/v1/charges/{id}/capture"): (MOVE, "lookup:charge_capture"),
    ("POST", "/v1/checkout/sessions"): (MOVE, "lookup:checkout_session"),
    ("POST", "/v1/checkout/sessions/{id}"): (MOVE, "lookup:checkout_session_update"),
    ("POST", "/v1/terminal/readers/{id}/process_payment_intent"): (MOVE, "lookup:payment_intent_param"),
    ("POST", "/v1/terminal/readers/{id}/confirm_payment_intent"): (MOVE, "lookup:payment_intent_param"),
    ("POST", "/v1/invoices/{id}/pay"): (MOVE, "lookup:invoice_pay"),
    ("POST", "/v1/issuing/authorizations/{id}/approve"): (MOVE, "lookup:issuing_authorization_approve"),
    ("POST", "/v1/treasury/inbound_transfers"): (MOVE, "fields:amount_currency"),
    ("POST", "/v2/money_management/inbound_transfers"): (MOVE, "fields:v2_amount"),
    # Money leaving now.
    ("POST", "/v1/refunds"): (MOVE, "lookup:refund_create"),
    ("POST", "/v1/terminal/readers/{id}/refund_payment"): (MOVE, "lookup:refund_create"),
    ("POST", "/v1/application_fees/{id}/refunds"): (MOVE, "lookup:application_fee_refund"),
    ("POST", "/v1/transfers"): (MOVE, "fields:amount_currency"),
    ("POST", "/v1/transfers/{id}/reversals"): (MOVE, "lookup:transfer_reversal"),
    ("POST", "/v1/payouts"): (MOVE, "fields:amount_currency"),
    ("POST", "/v1/payouts/{id}/reverse"): (MOVE, "lookup:payout_reverse"),
    ("POST", "/v1/topups"): (MOVE, "fields:amount_currency"),
    ("POST", "/v1/credit_notes"): (MOVE, "lookup:credit_note"),
    ("POST", "/v1/disputes/{id}/close"): (MOVE, "lookup:dispute_close"),
    ("POST", "/v1/climate/orders"): (MOVE, "fields:climate_order"),
    ("POST", "/v1/treasury/outbound_payments"): (MOVE, "fields:amount_currency"),
    ("POST", "/v1/treasury/outbound_transfers"): (MOVE, "fields:amount_currency"),
    ("POST", "/v1/treasury/credit_reversals"): (MOVE, "lookup:treasury_credit_reversal"),
    ("POST", "/v1/treasury/debit_reversals"): (MOVE, "lookup:treasury_debit_reversal"),
    ("POST", "/v2/money_management/outbound_payments"): (MOVE, "fields:v2_amount"),
    ("POST", "/v2/money_management/payout_intents"): (MOVE, "fields:v2_amount"),
    ("POST", "/v2/money_management/payout_intents/{id}"): (MOVE, "lookup:v2_payout_intent_update"),
    ("POST", "/v2/money_management/payout_intents/{id}/confirm"): (MOVE, "lookup:v2_payout_intent_confirm"),
    # Obligations to pay later.
    ("POST", "/v1/subscriptions"): (COMMIT, "lookup:subscription"),
    ("POST", "/v1/subscriptions/{id}"): (COMMIT, "lookup:subscription"),
    ("DELETE", "/v1/subscriptions/{id}"): (COMMIT, "fields:subscription_cancel"),
    ("POST", "/v1/subscriptions/{id}/resume"): (COMMIT, "unvaluable"),
    ("POST", "/v1/subscription_items"): (COMMIT, "lookup:subscription_item"),
    ("POST", "/v1/subscription_items/{id}"): (COMMIT, "lookup:subscription_item"),
    ("POST", "/v1/subscription_schedules"): (COMMIT, "unvaluable"),
    ("POST", "/v1/subscription_schedules/{id}"): (COMMIT, "unvaluable"),
    ("POST", "/v1/invoices"): (COMMIT, "none"),
    ("POST", "/v1/invoices/{id}/add_lines"): (COMMIT, "lookup:invoice_lines"),
    ("POST", "/v1/invoices/{id}/update_lines"): (COMMIT, "lookup:invoice_lines"),
    ("POST", "/v1/invoices/{invoiceId}/lines/{id}"): (COMMIT, "lookup:invoice_line"),
    ("POST", "/v1/invoices/{id}/finalize"): (COMMIT, "lookup:invoice_due"),
    ("POST", "/v1/invoiceitems"): (COMMIT, "lookup:invoice_item"),
    ("POST", "/v1/invoiceitems/{id}"): (COMMIT, "lookup:invoice_item"),
    ("POST", "/v1/quotes"): (COMMIT, "lookup:line_items"),
    ("POST", "/v1/quotes/{id}"): (COMMIT, "lookup:line_items"),
    ("POST", "/v1/quotes/{id}/finalize"): (COMMIT, "lookup:quote_total"),
    ("POST", "/v1/quotes/{id}/accept"): (COMMIT, "lookup:quote_total"),
    ("POST", "/v1/payment_links"): (COMMIT, "lookup:line_items"),
    ("POST", "/v1/payment_links/{id}"): (COMMIT, "lookup:line_items"),
    ("POST", "/v1/issuing/cards"): (COMMIT, "fields:issuing_card_create"),
    ("POST", "/v1/issuing/cards/{id}"): (COMMIT, "lookup:issuing_card_update"),
    ("POST", "/v1/issuing/cardholders"): (COMMIT, "fields:issuing_cardholder"),
    ("POST", "/v1/issuing/cardholders/{id}"): (COMMIT, "fields:issuing_cardholder"),
    ("POST", "/v1/customers/{id}/balance_transactions"): (COMMIT, "fields:customer_balance"),
    # A plain write unless it sets `balance`: then it is a balance credit (valuation.rs).
    ("POST", "/v1/customers"): (WRITE, "fields:customer_write"),
    ("POST", "/v1/customers/{id}"): (WRITE, "lookup:customer_write"),
    ("POST", "/v1/invoices/{id}"): (COMMIT, "fields:invoice_update"),
    ("POST", "/v1/billing/credit_grants"): (COMMIT, "fields:credit_grant"),
    # Who the account is, who receives its data, where its money goes, its keys.
    ("POST", "/v1/webhook_endpoints"): (ADMIN, "none"),
    ("POST", "/v1/webhook_endpoints/{id}"): (ADMIN, "none"),
    ("DELETE", "/v1/webhook_endpoints/{id}"): (ADMIN, "none"),
    ("POST", "/v1/balance_settings"): (ADMIN, "none"),
    ("POST", "/v1/ephemeral_keys"): (ADMIN, "none"),
    ("DELETE", "/v1/ephemeral_keys/{id}"): (ADMIN, "none"),
    ("POST", "/v1/forwarding/requests"): (ADMIN, "none"),
    ("POST", "/v1/tax/settings"): (ADMIN, "none"),
    ("POST", "/v1/treasury/financial_accounts"): (ADMIN, "none"),
    ("POST", "/v1/treasury/financial_accounts/{id}"): (ADMIN, "none"),
    ("POST", "/v1/treasury/financial_accounts/{id}/close"): (ADMIN, "none"),
    ("POST", "/v1/treasury/financial_accounts/{id}/features"): (ADMIN, "none"),
    ("POST", "/v1/terminal/connection_tokens"): (ADMIN, "none"),
    ("POST", "/v1/payouts/{id}"): (WRITE, "none"),
}
# Whole families: every POST/DELETE under these prefixes is `admin`.
ADMIN_PREFIXES = [
    "/v1/account_links", "/v1/account_sessions", "/v1/accounts", "/v1/apps/",
    "/v2/core/accounts", "/v2/core/account_links", "/v2/core/account_tokens",
    "/v2/core/event_destinations", "/v2/core/vault/",
    "/v2/money_management/financial_accounts", "/v2/money_management/financial_addresses",
    "/v2/money_management/outbound_setup_intents", "/v2/money_management/payout_methods",
    "/v2/money_management/recipient_verifications",
]

# GET routes that are verbs, not a list or a retrieval.
GET_VERBS = {"search", "find", "upcoming", "preview"}

# Names the path rule gets wrong (a POST that creates though no GET lists the collection).
NAMES = {
    ("POST", "/v1/accounts/{id}/login_links"): "accounts.login_links.create",
    ("GET", "/v1/quotes/{id}/pdf"): "quotes.pdf",
    ("POST", "/v1/terminal/connection_tokens"): "terminal.connection_tokens.create",
    ("POST", "/v2/core/account_links"): "v2.core.account_links.create",
    ("POST", "/v2/billing/meter_event_session"): "v2.billing.meter_event_session.create",
    ("POST", "/v2/billing/meter_event_stream"): "v2.billing.meter_event_stream.create",
    ("POST", "/v1/billing/meter_event_adjustments"): "billing.meter_event_adjustments.create",
    ("POST", "/v1/billing/meter_events"): "billing.meter_events.create",
    ("POST", "/v2/billing/meter_event_adjustments"): "v2.billing.meter_event_adjustments.create",
    ("POST", "/v2/billing/meter_events"): "v2.billing.meter_events.create",
}

# Names of singleton resources: a POST to them updates, a GET retrieves.
SINGLETONS = {
    "/v1/account": "update",
    "/v1/balance": "update",
    "/v1/balance_settings": "update",
    "/v1/billing/credit_balance_summary": "update",
    "/v1/customers/{id}/cash_balance": "update",
    "/v1/tax/settings": "update",
    "/v2/money_management/payout_methods_bank_account_spec": "update",
}


def load_pinned():
    rows = []
    with open(PINNED) as f:
        for line in f:
            line = line.rstrip("\n")
            if not line:
                continue
            method, path, source = line.split("\t")
            rows.append((method, path, source))
    return rows


def shape(path):
    return re.sub(r"\{[^}]+\}", "{}", path)


def action_name(method, path, collections, gets):
    """A dotted Cedar action name from the path (Stripe's own resource.method naming)."""
    segments = path.strip("/").split("/")
    version, rest = segments[0], segments[1:]
    literals = [s for s in rest if not s.startswith("{")]
    prefix = "v2." if version == "v2" else ""
    last = rest[-1]
    base = ".".join(literals)
    if path in SINGLETONS:
        verb = SINGLETONS[path] if method == "POST" else "retrieve"
        return f"{prefix}{base}.{verb}"
    if last.startswith("{"):
        verb = {"GET": "retrieve", "POST": "update", "DELETE": "delete"}[method]
        return f"{prefix}{base}.{verb}"
    is_collection = shape(path) in collections or len(rest) == 1 or ("GET", shape(path)) in gets
    if method == "GET":
        if last in GET_VERBS:
            return f"{prefix}{base}"
        return f"{prefix}{base}.{'list' if is_collection else 'retrieve'}"
    if method == "DELETE":
        return f"{prefix}{base}.delete"
    return f"{prefix}{base}.create" if is_collection else f"{prefix}{base}"


def classify(method, path):
    if method == "GET":
        return "read", "none"
    if (method, path) in REVIEWED:
        return REVIEWED[(method, path)]
    if any(path == p or path.startswith(p.rstrip("/") + "/") or path.startswith(p) and p.endswith("/")
           for p in ADMIN_PREFIXES):
        return ADMIN, "none"
    return WRITE, "none"


def build():
    pinned = load_pinned()
    collections = set()
    for _, path, _ in pinned:
        if path.endswith("}"):
            collections.add(shape(path.rsplit("/", 1)[0]))
    gets = {(m, shape(p)) for m, p, _ in pinned if m == "GET"}
    rows = []
    by_route = {}
    for method, path, _ in pinned:
        action = NAMES.get((method, path)) or action_name(method, path, collections, gets)
        cls, valuation = classify(method, path)
        row = [method, path, action, cls, valuation, "pinned"]
        rows.append(row)
        by_route[(method, shape(path))] = row
    for method, path, target_method, target_path, valuation in ALIASES:
        target = by_route.get((target_method, shape(target_path)))
        if target is None:
            sys.exit(f"alias target {target_method} {target_path} is not a pinned route")
        cls = "read" if method == "GET" else target[3]
        if method == "GET":
            valuation = "none"
        rows.append([method, path, target[2], cls, valuation or target[4], "alias"])
    # Every action has one class, whichever route reaches it.
    classes = {}
    for row in rows:
        prev = classes.setdefault(row[2], row[3])
        if prev != row[3]:
            sys.exit(f"action {row[2]} has two classes: {prev} and {row[3]}")
    seen = set()
    for row in rows:
        key = (row[0], shape(row[1]))
        if key in seen:
            sys.exit(f"two rows for {row[0]} {row[1]}")
        seen.add(key)
    rows.sort(key=lambda r: (r[1], r[0]))
    return rows


def table_text(rows):
    out = ["# Generated by policies/tools/gen_operations.py from policies/stripe/"
           "operations-2026-10-28.tsv; do not edit.",
           "# method\tpath\taction\tclass\tvaluation\tsource"]
    out += ["\t".join(r) for r in rows]
    return "\n".join(out) + "\n"


BEGIN = "// BEGIN GENERATED ACTIONS (policies/tools/gen_operations.py)"
END = "// END GENERATED ACTIONS"


def schema_text(rows):
    by_class = {}
    for r in rows:
        by_class.setdefault(r[3], set()).add(r[2])
    lines = [BEGIN]
    for cls in ["move_money", "commit_money", "admin", "write", "read"]:
        names = sorted(by_class.get(cls, ()))
        lines.append(f"// {cls}: {len(names)} actions")
        lines.append("action " + ",\n  ".join(f'"{n}"' for n in names))
        lines.append(f"  in [{cls}] appliesTo {{ principal: Agent, resource: Request, context: Ctx }};")
    lines.append(END)
    with open(SCHEMA) as f:
        text = f.read()
    start, end = text.index(BEGIN), text.index(END) + len(END)
    return text[:start] + "\n".join(lines) + text[end:]


def doc_text(rows):
    counts = {}
    for r in rows:
        if r[5] == "pinned":
            counts[r[3]] = counts.get(r[3], 0) + 1
    out = ["# What the guard understands", "",
           "Generated by `policies/tools/gen_operations.py` from Stripe's pinned API surface "
           "(`policies/stripe/operations-2026-10-28.tsv`, Node SDK stripe@23.1.0, API 2026-10-28) "
           "and the legacy routes Stripe still serves. Do not edit: change the script and run it.",
           "",
           "A POST or DELETE not listed here is refused with `403 guard_unknown_operation` unless a",
           "policy names the action `unknown` explicitly. `lookup` means the guard reads the object",
           "at the rail (with the organization's key, on the request's connected account) before",
           "deciding; `unvaluable` operations are held unless a policy names their action explicitly.",
           "",
           "| class | pinned routes |", "|---|---|"]
    for cls in ["move_money", "commit_money", "admin", "write", "read"]:
        out.append(f"| `{cls}` | {counts.get(cls, 0)} |")
    out += ["", "| method | path | action | class | valuation | source |", "|---|---|---|---|---|---|"]
    for r in rows:
        out.append("| " + " | ".join(f"`{c}`" if i < 5 else c for i, c in enumerate(r)) + " |")
    return "\n".join(out) + "\n"


def main():
    rows = build()
    outputs = {TABLE: table_text(rows), SCHEMA: schema_text(rows), DOC: doc_text(rows)}
    if "--check" in sys.argv:
        stale = [p for p, text in outputs.items() if open(p).read() != text]
        if stale:
            sys.exit("stale generated files (run policies/tools/gen_operations.py): " + ", ".join(stale))
        return
    for path, text in outputs.items():
        with open(path, "w") as f:
            f.write(text)
    print(f"{len(rows)} rows")


if __name__ == "__main__":
    main()
