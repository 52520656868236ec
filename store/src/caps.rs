//! Spending caps: add, change, delete, list (POLICIES.md "Caps").

use policies::{Cap, CapInterval, CapScope, Currency, OnExceed};
use serde::{Deserialize, Serialize};

use crate::Store;
use crate::audit;
use crate::audit_event::{AuditEvent, CapChange};
use crate::error::{Result, StoreError};
use crate::ids::{Actor, CapId, OrgId};
use crate::orgs::load_org;
use crate::tables::*;
use crate::time_util::now;

/// A new cap as given by an admin or the CLI.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CapSpec {
    /// `org` or `agent:<id>`.
    pub scope: CapScope,
    /// Currency counted.
    pub currency: Currency,
    /// Window.
    pub interval: CapInterval,
    /// Limit in minor units.
    pub limit: i64,
    /// Outcome when exceeded.
    #[serde(default = "default_on_exceed")]
    pub on_exceed: OnExceed,
    /// Operations counted (default: every money movement).
    #[serde(default)]
    pub operations: Option<Vec<String>>,
}

pub(crate) fn default_on_exceed() -> OnExceed {
    OnExceed::Hold
}

/// Changes to a cap (absent fields stay).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CapPatch {
    /// New limit (minor units).
    pub limit: Option<i64>,
    /// New outcome when exceeded.
    pub on_exceed: Option<policies::OnExceed>,
}

impl Store {
    /// Add a spending cap.
    pub fn add_cap(&self, org: &OrgId, spec: CapSpec, actor: &Actor) -> Result<Cap> {
        if spec.limit < 0 {
            return Err(StoreError::Invalid("limit must be ≥ 0 minor units".into()));
        }
        self.write(|txn| {
            load_org(txn, org)?;
            let cap = Cap {
                id: CapId::generate().to_string(),
                scope: spec.scope,
                currency: spec.currency,
                interval: spec.interval,
                limit: spec.limit,
                on_exceed: spec.on_exceed,
                operations: spec.operations,
            };
            put_rec(
                &mut txn.open_table(CAPS)?,
                (org.as_str(), cap.id.as_str()),
                &cap,
            )?;
            audit::append(
                txn,
                org,
                actor,
                &AuditEvent::CapChanged(CapChange::Added(cap.clone())),
                &now().text,
            )?;
            Ok(cap)
        })
    }

    /// Caps of an organization.
    pub fn list_caps(&self, org: &OrgId) -> Result<Vec<Cap>> {
        let r = self.read()?;
        scan_org(&r.open_table(CAPS)?, org.as_str())
    }

    /// One cap.
    pub fn cap(&self, org: &OrgId, id: &str) -> Result<Option<Cap>> {
        let r = self.read()?;
        get_rec(&r.open_table(CAPS)?, (org.as_str(), id))
    }

    /// Change a cap's limit or outcome.
    pub fn update_cap(&self, org: &OrgId, id: &str, patch: CapPatch, actor: &Actor) -> Result<Cap> {
        if patch.limit.is_some_and(|l| l < 0) {
            return Err(StoreError::Invalid("limit must be ≥ 0 minor units".into()));
        }
        self.write(|txn| {
            let mut caps = txn.open_table(CAPS)?;
            let key = (org.as_str(), id);
            let mut cap: Cap = get_rec(&caps, key)?.ok_or(StoreError::NotFound("cap"))?;
            if let Some(l) = patch.limit {
                cap.limit = l;
            }
            if let Some(e) = patch.on_exceed {
                cap.on_exceed = e;
            }
            put_rec(&mut caps, key, &cap)?;
            drop(caps);
            audit::append(
                txn,
                org,
                actor,
                &AuditEvent::CapChanged(CapChange::Updated(cap.clone())),
                &now().text,
            )?;
            Ok(cap)
        })
    }

    /// Delete a cap.
    pub fn delete_cap(&self, org: &OrgId, id: &str, actor: &Actor) -> Result<()> {
        self.write(|txn| {
            let removed = txn.open_table(CAPS)?.remove((org.as_str(), id))?;
            if !removed {
                return Err(StoreError::NotFound("cap"));
            }
            audit::append(
                txn,
                org,
                actor,
                &AuditEvent::CapChanged(CapChange::Deleted {
                    cap: id.to_string(),
                }),
                &now().text,
            )?;
            Ok(())
        })
    }
}
