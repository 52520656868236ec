//! Human decisions on held intents, their expiry, and the hand-off to the executor
//! (PROXY.md steps 5–6, ADMIN_API.md "Approvals").

use redb::ReadableTable;
use serde_json::{Value, json};

use crate::Store;
use crate::audit;
use crate::audit_event::{AuditEvent, HumanDecision};
use crate::error::{Result, StoreError};
use crate::ids::{Actor, IntentId, OrgId, UserId};
use crate::ledger::Tx;
use crate::ledger::decide::{intent_key, load_intent, release_in, reserve_in, save_intent};
use crate::members::person;
use crate::model::{Agent, AgentStatus, Approval, Intent, IntentStatus, Membership};
use crate::orgs::load_org;
use crate::tables::*;
use crate::time_util::Clock;

/// What the executor's claim found.
#[derive(Debug)]
pub enum Claim {
    /// Send it: the intent (now `forwarding`) and the rail key.
    Execute(Box<Intent>, String),
    /// The kill switch was on: the intent is now `denied` and will never be sent.
    Cancelled(Box<Intent>),
    /// Nothing to do (another claim won, or the rail key is missing).
    Gone,
}

/// A human's verdict on a hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HumanVerdict {
    /// Approve.
    Approve,
    /// Deny.
    Deny,
}

impl HumanVerdict {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            HumanVerdict::Approve => "approve",
            HumanVerdict::Deny => "deny",
        }
    }
}

impl Store {
    /// Record a human's approval or denial of a held intent in one transaction. Approval by the
    /// required number of distinct humans moves it to `approved` and reserves its amount (even
    /// above a cap: the humans decided, and the event records it).
    ///
    /// Refused, in the same transaction, when: the organization is frozen or the agent frozen
    /// or revoked (the kill switch holds for decisions too); the organization requires 2FA of
    /// approvers and this decision did not carry a fresh TOTP code (`stepped_up`); the human
    /// is not a member, or became one at or after the hold's creation (a quorum counts only
    /// members accepted before the hold existed, so nobody can be invited to approve it).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn decide_hold_in(
        &self,
        txn: &Tx<'_>,
        org: &OrgId,
        id: &IntentId,
        user: &UserId,
        verdict: HumanVerdict,
        comment: Option<String>,
        stepped_up: bool,
        clock: &Clock,
    ) -> Result<Intent> {
        let o = load_org(txn, org)?;
        if o.frozen {
            return Err(StoreError::refused(
                409,
                "organization_frozen",
                "the organization is frozen: no hold is approved, denied or executed until it is unfrozen",
            ));
        }
        if o.require_2fa_for_approvals && !stepped_up {
            return Err(StoreError::refused(
                403,
                "step_up_required",
                "this organization requires a fresh TOTP code (totp_code) with every approval or denial",
            ));
        }
        let mut intent = load_intent(txn, org, id)?;
        let agent: Option<Agent> = get_rec(
            &txn.open_table(AGENTS)?,
            (org.as_str(), intent.agent.as_str()),
        )?;
        match agent.map(|a| a.status) {
            Some(AgentStatus::Active) => {}
            Some(AgentStatus::Frozen) => {
                return Err(StoreError::refused(
                    409,
                    "agent_frozen",
                    "the agent is frozen: its holds are not decided until it is unfrozen",
                ));
            }
            Some(AgentStatus::Revoked) | None => {
                return Err(StoreError::refused(
                    409,
                    "agent_revoked",
                    "the agent is revoked: its holds can no longer be approved",
                ));
            }
        }
        let membership: Membership =
            get_rec(&txn.open_table(MEMBERS)?, (org.as_str(), user.as_str()))?
                .ok_or(StoreError::NotFound("member"))?;
        if membership.accepted_at.as_str() >= intent.created_at.as_str() {
            return Err(StoreError::refused(
                403,
                "joined_after_hold",
                "you became a member after this hold was created: it is decided by members who were there before it",
            ));
        }
        if intent.status != IntentStatus::PendingApproval {
            return Err(StoreError::Conflict(format!(
                "the intent is {}, not pending_approval",
                intent.status.as_str()
            )));
        }
        if intent.expires_at_unix.is_some_and(|e| e <= clock.unix) {
            return Err(StoreError::Conflict("the hold has expired".into()));
        }
        if intent.approvals.iter().any(|a| &a.user == user) {
            return Err(StoreError::Conflict(
                "you already decided on this intent".into(),
            ));
        }
        intent.approvals.push(Approval {
            user: user.clone(),
            verdict: verdict.as_str().into(),
            comment: comment.clone(),
            at: clock.text.clone(),
        });
        let approvals = intent
            .approvals
            .iter()
            .filter(|a| a.verdict == "approve")
            .count() as u32;
        let kind: fn(HumanDecision) -> AuditEvent = match verdict {
            HumanVerdict::Deny => {
                intent.status = intent.status.transition(IntentStatus::Denied)?;
                intent.decided_at = clock.text.clone();
                AuditEvent::IntentDenied
            }
            HumanVerdict::Approve if approvals >= intent.approvals_required.max(1) => {
                intent.status = intent.status.transition(IntentStatus::Approved)?;
                intent.decided_at = clock.text.clone();
                intent.reservation = reserve_in(txn, &intent, clock)?;
                AuditEvent::IntentApproved
            }
            HumanVerdict::Approve => AuditEvent::IntentApprovalRecorded,
        };
        save_intent(txn, &intent)?;
        let event = kind(HumanDecision {
            intent: intent.id.clone(),
            verdict,
            comment: comment.clone(),
            approvals,
            approvals_required: intent.approvals_required,
            status: intent.status,
            reserved: intent.reservation.as_ref().map(|r| r.amount),
            step_up: stepped_up,
            member_since: membership.accepted_at,
            invited_by: membership.invited_by,
        });
        audit::append(txn, org, &Actor::User(user.clone()), &event, &clock.text)?;
        Ok(intent)
    }

    /// What an approver should see next to a hold: who created the requesting agent, and for
    /// each human who decided, who invited them and since when they are a member.
    pub fn hold_context(&self, org: &OrgId, intent: &Intent) -> Result<Value> {
        let r = self.read()?;
        let users = r.open_table(USERS)?;
        let members = r.open_table(MEMBERS)?;
        let agent: Option<Agent> = get_rec(
            &r.open_table(AGENTS)?,
            (org.as_str(), intent.agent.as_str()),
        )?;
        let agent = match agent {
            Some(a) => {
                let created_by = a
                    .created_by
                    .as_ref()
                    .map(|u| person(&users, u))
                    .transpose()?;
                json!({"id": a.id, "name": a.name, "status": a.status, "created_at": a.created_at,
                    "created_by": created_by})
            }
            None => Value::Null,
        };
        let mut deciders = Vec::new();
        for a in &intent.approvals {
            let m: Option<Membership> = get_rec(&members, (org.as_str(), a.user.as_str()))?;
            let invited_by = m
                .as_ref()
                .and_then(|m| m.invited_by.as_ref())
                .map(|u| person(&users, u))
                .transpose()?;
            deciders.push(
                json!({"user": person(&users, &a.user)?, "verdict": a.verdict, "at": a.at,
                "member_since": m.as_ref().map(|m| m.accepted_at.clone()),
                "invited_by": invited_by}),
            );
        }
        Ok(json!({"agent": agent, "decisions": deciders}))
    }

    /// Approved intents waiting for the executor, oldest first.
    pub fn approved_queue(&self) -> Result<Vec<(OrgId, IntentId)>> {
        let r = self.read()?;
        let t = r.open_table(APPROVED)?;
        let mut out = Vec::new();
        for row in redb::ReadableTable::iter(&t)? {
            let (k, _) = row?;
            if let Some((o, i)) = k.value().split_once('|')
                && let (Some(o), Some(i)) = (OrgId::parse(o), IntentId::parse(i))
            {
                out.push((o, i));
            }
        }
        Ok(out)
    }

    /// Claim an approved intent for execution: `approved → forwarding`, durably, before the
    /// executor sends anything. Returns the intent (with its held body) and the rail key.
    ///
    /// The kill switch is re-checked here, in the claim's transaction: when the organization is
    /// frozen or the agent frozen or revoked, the intent is cancelled instead (`approved →
    /// denied`, its reservation released, `intent.cancelled` audited) and never sent; humans
    /// decide again on a new request once the switch is off.
    pub(crate) fn claim_approved_in(
        &self,
        txn: &Tx<'_>,
        org: &OrgId,
        id: &IntentId,
        clock: &Clock,
    ) -> Result<Claim> {
        let mut intent = load_intent(txn, org, id)?;
        if intent.status != IntentStatus::Approved {
            return Ok(Claim::Gone);
        }
        let o = load_org(txn, org)?;
        let agent: Option<Agent> = get_rec(
            &txn.open_table(AGENTS)?,
            (org.as_str(), intent.agent.as_str()),
        )?;
        let stopped = if o.frozen {
            Some("the organization is frozen")
        } else {
            match agent.map(|a| a.status) {
                Some(AgentStatus::Active) => None,
                Some(AgentStatus::Frozen) => Some("the agent is frozen"),
                Some(AgentStatus::Revoked) | None => Some("the agent is revoked"),
            }
        };
        if let Some(why) = stopped {
            intent.status = intent.status.transition(IntentStatus::Denied)?;
            intent.decided_at = clock.text.clone();
            intent.reason = format!("cancelled before execution: {why}");
            release_in(txn, &mut intent)?;
            save_intent(txn, &intent)?;
            let event = AuditEvent::IntentCancelled {
                intent: intent.id.clone(),
                reason: intent.reason.clone(),
            };
            audit::append(
                txn,
                org,
                &Actor::System("executor".into()),
                &event,
                &clock.text,
            )?;
            return Ok(Claim::Cancelled(Box::new(intent)));
        }
        let Some((rail_key, _)) = self.hot_rail(txn, org)?.as_ref().clone() else {
            return Ok(Claim::Gone);
        };
        intent.status = intent.status.transition(IntentStatus::Forwarding)?;
        save_intent(txn, &intent)?;
        let event = AuditEvent::IntentExecuting {
            intent: intent.id.clone(),
        };
        audit::append(
            txn,
            org,
            &Actor::System("executor".into()),
            &event,
            &clock.text,
        )?;
        Ok(Claim::Execute(Box::new(intent), rail_key))
    }

    /// A page of an organization's intents, newest id order is not meaningful: ids are random,
    /// so pages follow creation time through the filter below.
    pub fn intents_page(
        &self,
        org: &OrgId,
        status: Option<IntentStatus>,
        agent: Option<&crate::AgentId>,
        limit: usize,
        starting_after: Option<&IntentId>,
    ) -> Result<Vec<Intent>> {
        let mut all = self.list_intents(org)?;
        all.retain(|i| status.is_none_or(|s| i.status == s) && agent.is_none_or(|a| &i.agent == a));
        // Newest first, ties broken by id, so `starting_after` is stable.
        all.sort_by(|a, b| {
            b.created_at
                .cmp(&a.created_at)
                .then_with(|| a.id.cmp(&b.id))
        });
        let start = match starting_after {
            Some(after) => all
                .iter()
                .position(|i| &i.id == after)
                .map_or(all.len(), |p| p + 1),
            None => 0,
        };
        Ok(all.into_iter().skip(start).take(limit).collect())
    }

    /// Whether the intent exists in the organization (tenant check without loading it all).
    pub fn intent_exists(&self, org: &OrgId, id: &IntentId) -> Result<bool> {
        let r = self.read()?;
        Ok(
            redb::ReadableTable::get(&r.open_table(INTENTS)?, intent_key(org, id).as_str())?
                .is_some(),
        )
    }
}

/// Expire holds whose time has passed (`pending_approval → expired`); returns their ids.
pub(crate) fn expire_holds_in(
    txn: &Tx<'_>,
    now_unix: i64,
    max: usize,
    clock: &Clock,
) -> Result<Vec<IntentId>> {
    // Only the holds that are due: `pending_by_expiry` sorts by expiry, so the scan stops at the
    // first hold still running (keys up to `{now:020}|~`; `~` sorts after every id character).
    let due: Vec<(String, String)> = {
        let t = txn.open_table(PENDING_BY_EXPIRY)?;
        let end = format!("{:020}|~", now_unix.max(0));
        let mut due = Vec::new();
        for row in t.range(..end.as_str())?.take(max) {
            let (k, _) = row?;
            let index_key = k.value().to_string();
            if let Some((_, intent_key)) = index_key.split_once('|') {
                due.push((index_key.clone(), intent_key.to_string()));
            } else {
                due.push((index_key, String::new()));
            }
        }
        due
    };
    let mut expired = Vec::new();
    for (index_key, key) in due {
        let parsed = key
            .split_once('|')
            .and_then(|(o, i)| Some((OrgId::parse(o)?, IntentId::parse(i)?)));
        // An index entry without a pending intent is stale: drop it (and its `pending` twin)
        // rather than stop every organization's holds from expiring (it would be read first on
        // every later round). A storage error is not staleness: it fails the round.
        let intent = match &parsed {
            Some((org, id)) => match load_intent(txn, org, id) {
                Ok(i) => Some(i),
                Err(StoreError::NotFound(_) | StoreError::Corrupt(_)) => None,
                Err(e) => return Err(e),
            },
            None => None,
        };
        let (Some((org, id)), Some(mut intent)) = (parsed, intent) else {
            tracing::error!(entry = %index_key, "a pending-by-expiry entry names no readable intent; dropped");
            txn.open_table(PENDING_BY_EXPIRY)?
                .remove(index_key.as_str())?;
            txn.open_table(PENDING)?.remove(key.as_str())?;
            continue;
        };
        if intent.status != IntentStatus::PendingApproval {
            tracing::error!(intent = %id, found = ?intent.status, "a pending-hold index entry has no pending intent; dropped");
            txn.open_table(PENDING_BY_EXPIRY)?
                .remove(index_key.as_str())?;
            txn.open_table(PENDING)?.remove(key.as_str())?;
            continue;
        }
        intent.status = intent.status.transition(IntentStatus::Expired)?;
        intent.decided_at = clock.text.clone();
        save_intent(txn, &intent)?;
        audit::append(
            txn,
            &org,
            &Actor::System("expiry".into()),
            &AuditEvent::IntentExpired { intent: id.clone() },
            &clock.text,
        )?;
        expired.push(id);
    }
    Ok(expired)
}
