//! Organizations: creation (with the bootstrap owner), settings, the kill switch, deletion.
//! Every change appends an audit event.

use redb::ReadableTable;

use crate::Store;
use crate::audit;
use crate::audit_event::{AuditEvent, MemberAdded};
use crate::error::{Result, StoreError};
use crate::ids::{Actor, OrgId, UserId};
use crate::model::{Membership, Org, Role, User};
use crate::tables::*;
use crate::time_util::now;
use crate::users::{BCRYPT_COST, create_user_in, validate_password};

pub(crate) fn load_org(txn: &crate::ledger::Tx<'_>, org: &OrgId) -> Result<Org> {
    get_json(&txn.open_table(ORGS)?, org.as_str())?.ok_or(StoreError::NotFound("organization"))
}

pub(crate) fn save_org(txn: &crate::ledger::Tx<'_>, org: &Org) -> Result<()> {
    put_json(&mut txn.open_table(ORGS)?, org.id.as_str(), org)
}

impl Store {
    /// Create an organization with the default policy set as version 1.
    pub fn create_org(&self, name: &str, actor: &Actor) -> Result<Org> {
        self.write(|txn| self.create_org_in(txn, name, actor))
    }

    pub(crate) fn create_org_in(
        &self,
        txn: &crate::ledger::Tx<'_>,
        name: &str,
        actor: &Actor,
    ) -> Result<Org> {
        let name = name.trim();
        if name.is_empty() || name.len() > 200 {
            return Err(StoreError::Invalid(
                "organization name must be 1..=200 bytes".into(),
            ));
        }
        let t = now();
        let org = Org {
            id: OrgId::generate(),
            name: name.to_string(),
            frozen: false,
            active_policy_version: 0,
            latest_policy_version: 0,
            require_2fa_for_approvals: false,
            created_at: t.text.clone(),
        };
        save_org(txn, &org)?;
        audit::append(
            txn,
            &org.id,
            actor,
            &AuditEvent::OrgCreated {
                name: org.name.clone(),
            },
            &t.text,
        )?;
        self.store_policy_in(txn, &org.id, policies::DEFAULT_POLICY_TEXT, actor)?;
        load_org(txn, &org.id)
    }

    /// Bootstrap: an organization and its owner, in one transaction (`init`, first start).
    pub fn init_org_with_owner(
        &self,
        org_name: &str,
        email: &str,
        password: &str,
    ) -> Result<(Org, User)> {
        validate_password(password)?;
        let hash =
            bcrypt::hash(password, BCRYPT_COST).map_err(|e| StoreError::Db(e.to_string()))?;
        let actor = Actor::System("init".into());
        self.write(|txn| {
            let org = self.create_org_in(txn, org_name, &actor)?;
            let user = create_user_in(txn, email, hash)?;
            let m = Membership {
                org: org.id.clone(),
                user: user.id.clone(),
                role: Role::Owner,
                accepted_at: now().text,
                invited_by: None,
            };
            put_rec(
                &mut txn.open_table(MEMBERS)?,
                (org.id.as_str(), user.id.as_str()),
                &m,
            )?;
            let t = now();
            let event = AuditEvent::MemberAdded(MemberAdded::Bootstrap {
                user: user.id.clone(),
                email: user.email.clone(),
            });
            audit::append(txn, &org.id, &actor, &event, &t.text)?;
            Ok((org, user))
        })
    }

    /// Whether any organization exists (first start creates one when not). Also the readiness
    /// probe's check: an error when the store is unreadable or stopped writing (poisoned).
    pub fn is_empty(&self) -> Result<bool> {
        self.check_poisoned()?;
        let r = self.read()?;
        Ok(r.open_table(ORGS)?.first()?.is_none())
    }

    /// Every organization id.
    pub fn org_ids(&self) -> Result<Vec<OrgId>> {
        let r = self.read()?;
        let orgs: Vec<Org> = scan_json(&r.open_table(ORGS)?, "")?;
        Ok(orgs.into_iter().map(|o| o.id).collect())
    }

    /// One organization.
    pub fn org(&self, org: &OrgId) -> Result<Org> {
        let r = self.read()?;
        get_json(&r.open_table(ORGS)?, org.as_str())?.ok_or(StoreError::NotFound("organization"))
    }

    /// Create an organization; `owner` becomes its Owner.
    pub fn create_org_for(&self, name: &str, owner: &UserId) -> Result<Org> {
        let actor = Actor::User(owner.clone());
        let org = self.create_org(name, &actor)?;
        self.write(|txn| {
            let m = Membership {
                org: org.id.clone(),
                user: owner.clone(),
                role: Role::Owner,
                accepted_at: now().text,
                invited_by: None,
            };
            put_rec(
                &mut txn.open_table(MEMBERS)?,
                (org.id.as_str(), owner.as_str()),
                &m,
            )?;
            audit::append(
                txn,
                &org.id,
                &actor,
                &AuditEvent::MemberAdded(MemberAdded::Creator {
                    user: owner.clone(),
                }),
                &now().text,
            )?;
            Ok(())
        })?;
        Ok(org)
    }

    /// Delete an organization: its record and memberships go; intents and the audit trail stay
    /// (append-only). Sessions whose active organization it was must sign in again.
    pub fn delete_org(&self, org: &OrgId, actor: &Actor) -> Result<()> {
        self.write(|txn| {
            load_org(txn, org)?;
            audit::append(txn, org, actor, &AuditEvent::OrgDeleted, &now().text)?;
            txn.open_table(ORGS)?.remove(org.as_str())?;
            let mut members = txn.open_table(MEMBERS)?;
            let users: Vec<String> = {
                let mut users = Vec::new();
                for row in members.range((org.as_str(), "")..)? {
                    let (k, _) = row?;
                    let (row_org, user) = k.value();
                    if row_org != org.as_str() {
                        break;
                    }
                    users.push(user.to_string());
                }
                users
            };
            for user in users {
                members.remove((org.as_str(), user.as_str()))?;
            }
            Ok(())
        })
    }

    /// The kill switch for every agent of the organization.
    pub fn set_org_frozen(&self, org: &OrgId, frozen: bool, actor: &Actor) -> Result<Org> {
        self.write(|txn| {
            let mut o = load_org(txn, org)?;
            o.frozen = frozen;
            save_org(txn, &o)?;
            let event = if frozen {
                AuditEvent::OrgFrozen
            } else {
                AuditEvent::OrgUnfrozen
            };
            audit::append(txn, org, actor, &event, &now().text)?;
            Ok(o)
        })
    }

    /// Organization settings.
    pub fn update_org(
        &self,
        org: &OrgId,
        name: Option<String>,
        require_2fa: Option<bool>,
        actor: &Actor,
    ) -> Result<Org> {
        self.write(|txn| {
            let mut o = load_org(txn, org)?;
            if let Some(n) = name {
                let n = n.trim().to_string();
                if n.is_empty() || n.len() > 200 {
                    return Err(StoreError::Invalid(
                        "organization name must be 1..=200 bytes".into(),
                    ));
                }
                o.name = n;
            }
            if let Some(r) = require_2fa {
                o.require_2fa_for_approvals = r;
            }
            save_org(txn, &o)?;
            let event = AuditEvent::OrgUpdated {
                name: o.name.clone(),
                require_2fa_for_approvals: o.require_2fa_for_approvals,
            };
            audit::append(txn, org, actor, &event, &now().text)?;
            Ok(o)
        })
    }
}
