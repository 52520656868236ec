//! Human decisions on held intents, their expiry, and the hand-off to the executor
//! (PROXY.md steps 5–6, ADMIN_API.md "Approvals").

use serde_json::json;

use crate::Store;
use crate::audit;
use crate::decide::{intent_key, load_intent, reserve_in, save_intent};
use crate::error::{Result, StoreError};
use crate::ids::{Actor, IntentId, OrgId, UserId};
use crate::model::{Approval, Intent, IntentStatus};
use crate::tables::*;
use crate::tenants::load_org;
use crate::time_util::now;

/// A human's verdict on a hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HumanVerdict {
    /// Approve.
    Approve,
    /// Deny.
    Deny,
}

impl HumanVerdict {
    fn as_str(self) -> &'static str {
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
    pub fn decide_hold(
        &self,
        org: &OrgId,
        id: &IntentId,
        user: &UserId,
        verdict: HumanVerdict,
        comment: Option<String>,
        user_has_2fa: bool,
    ) -> Result<Intent> {
        let clock = now();
        self.write(|txn| {
            let o = load_org(txn, org)?;
            if o.require_2fa_for_approvals && !user_has_2fa {
                return Err(StoreError::Forbidden("this organization requires 2FA of approvers: enable it first".into()));
            }
            let mut intent = load_intent(txn, org, id)?;
            if intent.status != IntentStatus::PendingApproval {
                return Err(StoreError::Conflict(format!("the intent is {}, not pending_approval", intent.status.as_str())));
            }
            if intent.expires_at_unix.is_some_and(|e| e <= clock.unix) {
                return Err(StoreError::Conflict("the hold has expired".into()));
            }
            if intent.approvals.iter().any(|a| &a.user == user) {
                return Err(StoreError::Conflict("you already decided on this intent".into()));
            }
            intent.approvals.push(Approval { user: user.clone(), verdict: verdict.as_str().into(), comment: comment.clone(), at: clock.text.clone() });
            let approvals = intent.approvals.iter().filter(|a| a.verdict == "approve").count() as u32;
            let kind = match verdict {
                HumanVerdict::Deny => {
                    intent.status = intent.status.transition(IntentStatus::Denied)?;
                    intent.decided_at = clock.text.clone();
                    "intent.denied"
                }
                HumanVerdict::Approve if approvals >= intent.approvals_required.max(1) => {
                    intent.status = intent.status.transition(IntentStatus::Approved)?;
                    intent.decided_at = clock.text.clone();
                    intent.reservation = reserve_in(txn, &intent, &clock)?;
                    "intent.approved"
                }
                HumanVerdict::Approve => "intent.approval_recorded",
            };
            save_intent(txn, &intent)?;
            let data = json!({"intent": intent.id, "verdict": verdict.as_str(), "comment": comment,
                "approvals": approvals, "approvals_required": intent.approvals_required,
                "status": intent.status.as_str(), "reserved": intent.reservation.as_ref().map(|r| r.amount)});
            audit::append(txn, org, &Actor::User(user.clone()), kind, data, &clock.text)?;
            Ok(intent)
        })
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
    /// executor sends anything. Returns the intent (with its held body) and the rail key; `None`
    /// when it is no longer `approved` (another claim won) or the rail key is missing.
    pub fn claim_approved(&self, org: &OrgId, id: &IntentId) -> Result<Option<(Intent, String)>> {
        let clock = now();
        self.write(|txn| {
            let mut intent = load_intent(txn, org, id)?;
            if intent.status != IntentStatus::Approved {
                return Ok(None);
            }
            let Some((rail_key, _)) = self.rail_key_in(txn, org)? else {
                return Ok(None);
            };
            intent.status = intent.status.transition(IntentStatus::Forwarding)?;
            save_intent(txn, &intent)?;
            let data = json!({"intent": intent.id, "status": "forwarding", "executor": true});
            audit::append(
                txn,
                org,
                &Actor::System("executor".into()),
                "intent.executing",
                data,
                &clock.text,
            )?;
            Ok(Some((intent, rail_key)))
        })
    }

    /// Expire holds whose time has passed (`pending_approval → expired`); returns their ids.
    pub fn expire_holds(&self, now_unix: i64, max: usize) -> Result<Vec<IntentId>> {
        let clock = now();
        self.write(|txn| {
            let due: Vec<String> = {
                let t = txn.open_table(PENDING)?;
                let mut due = Vec::new();
                for row in redb::ReadableTable::iter(&t)? {
                    let (k, v) = row?;
                    let bytes: [u8; 8] = v
                        .value()
                        .try_into()
                        .map_err(|_| StoreError::Corrupt("pending index".into()))?;
                    if i64::from_le_bytes(bytes) <= now_unix {
                        due.push(k.value().to_string());
                        if due.len() >= max {
                            break;
                        }
                    }
                }
                due
            };
            let mut expired = Vec::new();
            for key in due {
                let Some((o, i)) = key.split_once('|') else {
                    continue;
                };
                let (Some(org), Some(id)) = (OrgId::parse(o), IntentId::parse(i)) else {
                    continue;
                };
                let mut intent = load_intent(txn, &org, &id)?;
                intent.status = intent.status.transition(IntentStatus::Expired)?;
                intent.decided_at = clock.text.clone();
                save_intent(txn, &intent)?;
                audit::append(
                    txn,
                    &org,
                    &Actor::System("expiry".into()),
                    "intent.expired",
                    json!({"intent": id}),
                    &clock.text,
                )?;
                expired.push(id);
            }
            Ok(expired)
        })
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
