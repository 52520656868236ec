//! Reading the hash-chained trails: pages, export, verification, heads, and notes appended
//! by the control plane.

use serde_json::Value;

use crate::audit;
use crate::audit_event::AuditEvent;
use crate::error::Result;
use crate::ids::{Actor, OrgId, UserId};
use crate::tables::*;
use crate::time_util::now;
use crate::{Store, audit::AuditHead};

impl Store {
    /// Verify an organization's audit chain.
    pub fn audit_verify(&self, org: &OrgId) -> Result<audit::VerifyReport> {
        let r = self.read()?;
        let events = r.open_table(AUDIT)?;
        let stored = audit::head(&r.open_table(AUDIT_HEADS)?, org.as_str())?;
        audit::verify_events(audit::deferred_events_from(&events, org, 1)?, Some(&stored))
    }

    /// Every event of an organization as stored (canonical JSON), in order.
    pub fn audit_export(
        &self,
        org: &OrgId,
        mut sink: impl FnMut(&[u8]) -> Result<()>,
    ) -> Result<()> {
        let r = self.read()?;
        let events = r.open_table(AUDIT)?;
        for raw in audit::raw_events(&events, org)? {
            sink(&raw?)?;
        }
        Ok(())
    }

    /// A page of a user's own trail after `after` (seq), oldest first.
    pub fn user_audit_page(&self, user: &UserId, after: u64, limit: usize) -> Result<Vec<Value>> {
        let r = self.read()?;
        let t = r.open_table(USER_AUDIT)?;
        let start = (user.as_str(), after.saturating_add(1));
        let end = (user.as_str(), u64::MAX);
        let mut out = Vec::new();
        for row in t.range(start..=end)?.take(limit) {
            let (_, v) = row?;
            out.push(serde_json::from_slice(v.value())?);
        }
        Ok(out)
    }

    /// Verify a user's own trail (same chain rules as an organization's).
    pub fn user_audit_verify(&self, user: &UserId) -> Result<audit::VerifyReport> {
        let r = self.read()?;
        let events = r.open_table(USER_AUDIT)?;
        let stored = audit::head(&r.open_table(USER_AUDIT_HEADS)?, user.as_str())?;
        let all = (user.as_str(), 0)..=(user.as_str(), u64::MAX);
        let iter = events.range(all)?.map(|row| {
            let (_, v) = row?;
            Ok(v.value().to_vec())
        });
        audit::verify_events(iter, Some(&stored))
    }

    /// The organization's chain head.
    pub fn audit_head(&self, org: &OrgId) -> Result<AuditHead> {
        let r = self.read()?;
        audit::head(&r.open_table(AUDIT_HEADS)?, org.as_str())
    }

    /// A page of audit events after `after` (seq), oldest first.
    pub fn audit_page(&self, org: &OrgId, after: u64, limit: usize) -> Result<Vec<Value>> {
        let r = self.read()?;
        let t = r.open_table(AUDIT)?;
        let mut out = Vec::new();
        for line in audit::raw_events_from(&t, org, after.saturating_add(1))?.take(limit) {
            out.push(serde_json::from_slice(&line?)?);
        }
        Ok(out)
    }

    /// Append an audit event for a change made outside the store's own functions (e.g. a
    /// simulation is not one; a sign-in is).
    pub fn audit_note(&self, org: &OrgId, actor: &Actor, event: &AuditEvent) -> Result<()> {
        self.write(|txn| audit::append(txn, org, actor, event, &now().text).map(|_| ()))
    }
}
