//! Policy sets as numbered versions: validation, activation, rollback, the compiled-set
//! cache, and the upgrade of untouched default sets.

use std::sync::Arc;

use policies::CompiledPolicies;
use redb::ReadableTable;

use crate::Store;
use crate::audit;
use crate::audit_event::AuditEvent;
use crate::error::{Result, StoreError};
use crate::ids::{Actor, OrgId, sha256_hex};
use crate::model::{Org, PolicyVersion};
use crate::orgs::{load_org, save_org};
use crate::tables::*;
use crate::time_util::now;

pub(crate) fn author(actor: &Actor) -> String {
    match actor {
        Actor::Agent(a) => format!("agent:{a}"),
        Actor::User(u) => format!("user:{u}"),
        Actor::System(s) => format!("system:{s}"),
    }
}

impl Store {
    /// Validate and store a policy set as a new version, and activate it.
    pub fn set_policy(&self, org: &OrgId, text: &str, actor: &Actor) -> Result<u64> {
        let compiled = Arc::new(policies::compile(text).map_err(StoreError::PolicyRejected)?);
        let version = self.write(|txn| self.store_policy_in(txn, org, text, actor))?;
        // Cached only once committed: an aborted version number is reused by the next set.
        self.cache_policy(org, version, compiled);
        Ok(version)
    }

    pub(crate) fn store_policy_in(
        &self,
        txn: &crate::ledger::Tx<'_>,
        org: &OrgId,
        text: &str,
        actor: &Actor,
    ) -> Result<u64> {
        policies::compile(text).map_err(StoreError::PolicyRejected)?;
        let mut o = load_org(txn, org)?;
        let version = o.latest_policy_version + 1;
        let t = now();
        let pv = PolicyVersion {
            version,
            text: text.to_string(),
            author: author(actor),
            created_at: t.text.clone(),
        };
        put_rec(
            &mut txn.open_table(POLICY_VERSIONS)?,
            (org.as_str(), version),
            &pv,
        )?;
        o.latest_policy_version = version;
        o.active_policy_version = version;
        save_org(txn, &o)?;
        let digest = sha256_hex(text);
        audit::append(
            txn,
            org,
            actor,
            &AuditEvent::PolicyUpdated {
                version,
                sha256: digest,
            },
            &t.text,
        )?;
        Ok(version)
    }

    pub(crate) fn cache_policy(&self, org: &OrgId, version: u64, compiled: Arc<CompiledPolicies>) {
        if let Ok(mut cache) = self.policy_cache.lock() {
            cache.insert((org.clone(), version), compiled);
        }
    }

    /// The active compiled policy set, parsed once per version and shared.
    pub(crate) fn active_policies<T: ReadableTable<(&'static str, u64), &'static [u8]>>(
        &self,
        open_versions: impl FnOnce() -> Result<T>,
        org: &Org,
    ) -> Result<Arc<CompiledPolicies>> {
        let key = (org.id.clone(), org.active_policy_version);
        if let Some(p) = self
            .policy_cache
            .lock()
            .ok()
            .and_then(|c| c.get(&key).cloned())
        {
            return Ok(p);
        }
        let versions = open_versions()?;
        let pv: PolicyVersion = get_rec(&versions, (org.id.as_str(), org.active_policy_version))?
            .ok_or(StoreError::NotFound("policy version"))?;
        let compiled = policies::compile_stored(&pv.text).map_err(|d| {
            StoreError::Corrupt(format!(
                "stored policy set no longer compiles: {} diagnostics",
                d.len()
            ))
        })?;
        let compiled = Arc::new(compiled);
        self.cache_policy(&org.id, org.active_policy_version, compiled.clone());
        Ok(compiled)
    }

    /// The active policy version.
    pub fn active_policy(&self, org: &OrgId) -> Result<PolicyVersion> {
        let o = self.org(org)?;
        let r = self.read()?;
        get_rec(
            &r.open_table(POLICY_VERSIONS)?,
            (org.as_str(), o.active_policy_version),
        )?
        .ok_or(StoreError::NotFound("policy version"))
    }

    /// Every stored policy version.
    pub fn policy_versions(&self, org: &OrgId) -> Result<Vec<PolicyVersion>> {
        let r = self.read()?;
        let t = r.open_table(POLICY_VERSIONS)?;
        let mut out = Vec::new();
        for row in t.range((org.as_str(), 0)..=(org.as_str(), u64::MAX))? {
            out.push(serde_json::from_slice(row?.1.value())?);
        }
        Ok(out)
    }

    /// Roll back (or forward): activate a stored version.
    pub fn activate_policy_version(&self, org: &OrgId, version: u64, actor: &Actor) -> Result<u64> {
        self.write(|txn| {
            let exists = txn
                .open_table(POLICY_VERSIONS)?
                .get((org.as_str(), version))?
                .is_some();
            if !exists {
                return Err(StoreError::NotFound("policy version"));
            }
            let mut o = load_org(txn, org)?;
            o.active_policy_version = version;
            save_org(txn, &o)?;
            audit::append(
                txn,
                org,
                actor,
                &AuditEvent::PolicyActivated { version },
                &now().text,
            )?;
            Ok(version)
        })
    }

    /// Organizations whose active policy set is, byte for byte, a default set an earlier version
    /// shipped get the current default as a new version (audited, actor `system:upgrade`), so
    /// an organization nobody customized keeps meaning "the safe default" when operations gain
    /// names (issue 11: the old default's `action == Action::"read"` matches no named read).
    /// Customized sets are left alone. Returns the organizations upgraded.
    pub fn upgrade_default_policies(&self, previous_defaults: &[&str]) -> Result<Vec<OrgId>> {
        let orgs: Vec<OrgId> = {
            let r = self.read()?;
            let t = r.open_table(ORGS)?;
            let mut ids = Vec::new();
            for row in t.iter()? {
                let (_, v) = row?;
                let org: Org = serde_json::from_slice(v.value())?;
                ids.push(org.id);
            }
            ids
        };
        let mut upgraded = Vec::new();
        for org in orgs {
            let active = self.active_policy(&org)?;
            if previous_defaults.contains(&active.text.as_str()) {
                self.set_policy(
                    &org,
                    policies::DEFAULT_POLICY_TEXT,
                    &Actor::System("upgrade".into()),
                )?;
                upgraded.push(org);
            }
        }
        Ok(upgraded)
    }
}
