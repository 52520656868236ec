//! The agent's own view of an intent (PROXY.md "The agent's own view").

use serde_json::json;
use store::Intent;

/// `{id, status, decision, reasons, amount, currency, operation, account, created_at, decided_at,
/// approvals}`
pub fn intent_json(i: &Intent) -> Vec<u8> {
    let mut reasons: Vec<String> = i.policies.iter().map(|p| format!("policy:{p}")).collect();
    reasons.extend(i.caps.iter().map(|c| format!("cap:{c}")));
    let approvals: Vec<_> = i
        .approvals
        .iter()
        .map(|a| json!({"verdict": a.verdict, "at": a.at}))
        .collect();
    let v = json!({
        "id": i.id, "status": i.status.as_str(), "decision": i.decision.as_str(),
        "reasons": reasons, "reason": i.reason, "amount": i.amount.minor(), "currency": i.amount.currency(),
        "operation": i.operation, "account": i.account, "created_at": i.created_at, "decided_at": i.decided_at,
        "approvals": approvals, "approvals_required": i.approvals_required,
        "upstream_id": i.upstream_id,
    });
    serde_json::to_vec(&v).unwrap_or_default()
}
