//! Spend counters per cap window (POLICIES.md "Spending caps"). Spend = settled + reserved amounts.
//! Each allowed money movement adds its amount to eight counters (org and agent scope × daily,
//! weekly, monthly, all-time windows) keyed by operation; a failed upstream call subtracts it again.

use policies::{CapInterval, CapScope, SpendContext, window_start};
use redb::ReadableTable;

use crate::error::{Result, StoreError};
use crate::ids::{AgentId, OrgId};
use crate::tables::{RATE, SPEND};

const WINDOWED: [CapInterval; 4] = [
    CapInterval::Daily,
    CapInterval::Weekly,
    CapInterval::Monthly,
    CapInterval::AllTime,
];

fn scope_key(scope: &CapScope) -> String {
    scope.to_string()
}

fn window_prefix(
    org: &OrgId,
    scope: &CapScope,
    currency: &str,
    interval: CapInterval,
    now: i64,
) -> String {
    let start = window_start(interval, now);
    format!(
        "{org}|{}|{currency}|{}|{start}|",
        scope_key(scope),
        interval.as_str()
    )
}

/// The counter keys an allowed request adds to.
pub(crate) fn counters_for(
    org: &OrgId,
    agent: &AgentId,
    account: &str,
    currency: &str,
    op: &str,
    now: i64,
) -> Vec<String> {
    let mut scopes = vec![CapScope::Org, CapScope::Agent(agent.to_string())];
    if !account.is_empty() {
        scopes.push(CapScope::Account(account.to_string()));
    }
    let mut keys = Vec::with_capacity(4 * scopes.len());
    for scope in &scopes {
        for interval in WINDOWED {
            keys.push(format!(
                "{}{op}",
                window_prefix(org, scope, currency, interval, now)
            ));
        }
    }
    keys
}

/// Add `delta` (may be negative) to each counter.
pub(crate) fn add(txn: &crate::ledger::Tx<'_>, keys: &[String], delta: i64) -> Result<()> {
    let mut t = txn.open_table(SPEND)?;
    for key in keys {
        let cur = t
            .get(key.as_str())?
            .map(|v| decode_i64(v.value()))
            .transpose()?
            .unwrap_or(0);
        let next = cur
            .checked_add(delta)
            .ok_or_else(|| StoreError::Corrupt(format!("spend counter {key} overflows")))?;
        if next < 0 {
            return Err(StoreError::Corrupt(format!(
                "spend counter {key} would go negative"
            )));
        }
        t.insert(key.as_str(), &next.to_le_bytes())?;
    }
    Ok(())
}

fn decode_i64(b: &[u8]) -> Result<i64> {
    let arr: [u8; 8] = b
        .try_into()
        .map_err(|_| StoreError::Corrupt("spend counter".into()))?;
    Ok(i64::from_le_bytes(arr))
}

/// Spend in one window for one scope and currency, counting only `ops` (None = every operation).
pub(crate) fn spent(
    t: &impl ReadableTable<&'static str, &'static [u8]>,
    org: &OrgId,
    scope: &CapScope,
    currency: &str,
    interval: CapInterval,
    now: i64,
    ops: Option<&[String]>,
) -> Result<i64> {
    let prefix = window_prefix(org, scope, currency, interval, now);
    let mut total: i64 = 0;
    for row in t.range(prefix.as_str()..)? {
        let (k, v) = row?;
        let Some(op) = k.value().strip_prefix(prefix.as_str()) else {
            break;
        };
        if ops.is_none_or(|list| list.iter().any(|o| o == op)) {
            total = total.saturating_add(decode_i64(v.value())?);
        }
    }
    Ok(total)
}

/// Day / week / month spend of a scope in a currency (Cedar `context.spend` / `org_spend`).
pub(crate) fn context(
    t: &impl ReadableTable<&'static str, &'static [u8]>,
    org: &OrgId,
    scope: &CapScope,
    currency: &str,
    now: i64,
) -> Result<SpendContext> {
    Ok(SpendContext {
        day: spent(t, org, scope, currency, CapInterval::Daily, now, None)?,
        week: spent(t, org, scope, currency, CapInterval::Weekly, now, None)?,
        month: spent(t, org, scope, currency, CapInterval::Monthly, now, None)?,
    })
}

/// Count this decision in the agent's per-second request counter and return how many decisions
/// the agent had in the 60 seconds before it. Buckets older than two minutes are pruned.
pub(crate) fn count_request(
    txn: &crate::ledger::Tx<'_>,
    org: &OrgId,
    agent: &AgentId,
    now: i64,
) -> Result<i64> {
    let mut t = txn.open_table(RATE)?;
    let prefix = format!("{org}|{agent}|");
    let key = |sec: i64| format!("{prefix}{:012}", sec.max(0));
    let mut last_minute: i64 = 0;
    let mut stale = Vec::new();
    for row in t.range(prefix.as_str()..key(now + 1).as_str())? {
        let (k, v) = row?;
        let k = k.value().to_string();
        let sec: i64 = k[prefix.len()..].parse().unwrap_or(0);
        if sec > now - 60 {
            last_minute += decode_i64(v.value())?;
        } else if sec < now - 120 {
            stale.push(k);
        }
    }
    for k in stale {
        t.remove(k.as_str())?;
    }
    let this = key(now);
    let cur = t
        .get(this.as_str())?
        .map(|v| decode_i64(v.value()))
        .transpose()?
        .unwrap_or(0);
    t.insert(this.as_str(), &(cur + 1).to_le_bytes())?;
    Ok(last_minute)
}

/// What a decision reads about money before this request: the agent's and the organization's
/// day/week/month spend in the request's currency (Cedar context) and each applicable cap's
/// check. Shared by the decision and the simulation so both count the same way.
pub(crate) struct SpendView {
    pub(crate) agent: SpendContext,
    pub(crate) org: SpendContext,
    pub(crate) caps: Vec<policies::CapCheck>,
}

pub(crate) fn view(
    t: &impl ReadableTable<&'static str, &'static [u8]>,
    caps: &[policies::Cap],
    org: &OrgId,
    agent: &AgentId,
    facts: &policies::RequestFacts,
    now: i64,
) -> Result<SpendView> {
    let currency = facts
        .amount
        .as_ref()
        .map(|a| a.currency.as_str())
        .unwrap_or_default();
    let (agent_ctx, org_ctx) = if currency.is_empty() {
        (SpendContext::default(), SpendContext::default())
    } else {
        (
            context(t, org, &CapScope::Agent(agent.to_string()), currency, now)?,
            context(t, org, &CapScope::Org, currency, now)?,
        )
    };
    // What this request would add to spend (the increase, the excess...), not its face value.
    let amount = facts.counted.unwrap_or(0);
    let mut checks = Vec::new();
    for cap in caps.iter().filter(|c| c.applies_to(facts, agent.as_str())) {
        let spent = spent(
            t,
            org,
            &cap.scope,
            cap.currency.as_str(),
            cap.interval,
            now,
            cap.operations.as_deref(),
        )?;
        checks.push(cap.check(amount, spent));
    }
    Ok(SpendView {
        agent: agent_ctx,
        org: org_ctx,
        caps: checks,
    })
}
