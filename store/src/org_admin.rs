//! What admins manage in an organization (ADMIN_API.md "Resources"): the organization itself,
//! members and roles, agents, policy versions, caps, and reads of intents and the audit trail.
//! Every function takes the organization id; every change appends an audit event.

use policies::Cap;
use redb::ReadableTable;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::Store;
use crate::audit;
use crate::audit_event::{AuditEvent, CapChange, MemberAdded};
use crate::error::{Result, StoreError};
use crate::ids::{Actor, AgentId, OrgId, UserId, random_hex};
use crate::model::{Agent, Membership, Org, PolicyVersion, Role, User};
use crate::tables::*;
use crate::tenants::{load_org, save_org};
use crate::time_util::now;

/// A member as listed.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MemberView {
    /// User id.
    pub user_id: UserId,
    /// Email.
    pub email: String,
    /// Role.
    pub role: Role,
    /// When the membership began (RFC 3339; `""` for memberships older than invitations).
    pub accepted_at: String,
    /// Who invited them (`None` for an organization's creator).
    pub invited_by: Option<PersonRef>,
}

/// A human named in a view: id and email.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PersonRef {
    /// User id.
    pub id: UserId,
    /// Email (`""` when the user no longer exists).
    pub email: String,
}

/// The person behind `user`, read from `users`.
pub(crate) fn person(
    users: &impl ReadableTable<&'static str, &'static [u8]>,
    user: &UserId,
) -> Result<PersonRef> {
    let email = get_json::<User>(users, user.as_str())?
        .map(|u| u.email)
        .unwrap_or_default();
    Ok(PersonRef {
        id: user.clone(),
        email,
    })
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

fn sha256_hex(s: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(s.as_bytes()))
}

impl Store {
    /// A user's role in an organization (`None`: not a member, or no such organization).
    pub fn member_role(&self, org: &OrgId, user: &UserId) -> Result<Option<Role>> {
        let r = self.read()?;
        if get_json::<Org>(&r.open_table(ORGS)?, org.as_str())?.is_none() {
            return Ok(None);
        }
        let m: Option<Membership> = get_json(&r.open_table(MEMBERS)?, &format!("{org}|{user}"))?;
        Ok(m.map(|m| m.role))
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

    /// Every membership of a user, with the organization.
    pub fn memberships_of(&self, user: &UserId) -> Result<Vec<(Org, Role)>> {
        let r = self.read()?;
        let orgs = r.open_table(ORGS)?;
        let members = r.open_table(MEMBERS)?;
        let mut out = Vec::new();
        for row in orgs.iter()? {
            let (k, v) = row?;
            let org: Org = serde_json::from_slice(v.value())?;
            if let Some(m) = get_json::<Membership>(&members, &format!("{}|{user}", k.value()))? {
                out.push((org, m.role));
            }
        }
        Ok(out)
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
            put_json(
                &mut txn.open_table(MEMBERS)?,
                &format!("{}|{owner}", org.id),
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
            let keys: Vec<String> = {
                let prefix = format!("{org}|");
                let mut keys = Vec::new();
                for row in members.range(prefix.as_str()..)? {
                    let (k, _) = row?;
                    if !k.value().starts_with(&prefix) {
                        break;
                    }
                    keys.push(k.value().to_string());
                }
                keys
            };
            for k in keys {
                members.remove(k.as_str())?;
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

    /// Members of an organization.
    pub fn list_members(&self, org: &OrgId) -> Result<Vec<MemberView>> {
        let r = self.read()?;
        let users = r.open_table(USERS)?;
        let ms: Vec<Membership> = scan_json(&r.open_table(MEMBERS)?, &format!("{org}|"))?;
        let mut out = Vec::new();
        for m in ms {
            let invited_by = m
                .invited_by
                .as_ref()
                .map(|u| person(&users, u))
                .transpose()?;
            out.push(MemberView {
                email: person(&users, &m.user)?.email,
                user_id: m.user,
                role: m.role,
                accepted_at: m.accepted_at,
                invited_by,
            });
        }
        Ok(out)
    }

    /// Change a member's role. Owners are changed only by owners; the last owner stays.
    pub fn set_member_role(
        &self,
        org: &OrgId,
        user: &UserId,
        role: Role,
        by_role: Role,
        actor: &Actor,
    ) -> Result<MemberView> {
        self.write(|txn| {
            let mut members = txn.open_table(MEMBERS)?;
            let key = format!("{org}|{user}");
            let mut m: Membership =
                get_json(&members, &key)?.ok_or(StoreError::NotFound("member"))?;
            if (m.role == Role::Owner || role == Role::Owner) && by_role != Role::Owner {
                return Err(StoreError::Forbidden(
                    "only an owner may change owners".into(),
                ));
            }
            if m.role == Role::Owner && role != Role::Owner && count_owners(&members, org)? <= 1 {
                return Err(StoreError::Conflict(
                    "an organization keeps at least one owner".into(),
                ));
            }
            let from = m.role;
            m.role = role;
            put_json(&mut members, &key, &m)?;
            drop(members);
            audit::append(
                txn,
                org,
                actor,
                &AuditEvent::MemberRoleChanged {
                    user: user.clone(),
                    from,
                    to: role,
                },
                &now().text,
            )?;
            let users = txn.open_table(USERS)?;
            let invited_by = m
                .invited_by
                .as_ref()
                .map(|u| person(&users, u))
                .transpose()?;
            Ok(MemberView {
                user_id: user.clone(),
                email: person(&users, user)?.email,
                role,
                accepted_at: m.accepted_at.clone(),
                invited_by,
            })
        })
    }

    /// Remove a member (owners only by owners; never the last owner).
    pub fn remove_member(
        &self,
        org: &OrgId,
        user: &UserId,
        by_role: Role,
        actor: &Actor,
    ) -> Result<()> {
        self.write(|txn| {
            let mut members = txn.open_table(MEMBERS)?;
            let key = format!("{org}|{user}");
            let m: Membership = get_json(&members, &key)?.ok_or(StoreError::NotFound("member"))?;
            if m.role == Role::Owner && by_role != Role::Owner {
                return Err(StoreError::Forbidden(
                    "only an owner may remove owners".into(),
                ));
            }
            if m.role == Role::Owner && count_owners(&members, org)? <= 1 {
                return Err(StoreError::Conflict(
                    "an organization keeps at least one owner".into(),
                ));
            }
            members.remove(key.as_str())?;
            drop(members);
            // Their API tokens bound here end too: a later re-invitation starts clean.
            let tokens = crate::humans::revoke_tokens_in(txn, user, Some(org))?;
            audit::append(
                txn,
                org,
                actor,
                &AuditEvent::MemberRemoved {
                    user: user.clone(),
                    api_tokens_revoked: tokens,
                },
                &now().text,
            )?;
            Ok(())
        })
    }

    /// One agent of an organization.
    pub fn agent(&self, org: &OrgId, id: &AgentId) -> Result<Option<Agent>> {
        let r = self.read()?;
        get_json(&r.open_table(AGENTS)?, &format!("{org}|{id}"))
    }

    /// A new token for an agent; the old one stops working at once.
    pub fn rotate_agent_token(
        &self,
        org: &OrgId,
        id: &AgentId,
        actor: &Actor,
    ) -> Result<(Agent, String)> {
        self.write(|txn| {
            let mut agents = txn.open_table(AGENTS)?;
            let key = format!("{org}|{id}");
            let mut a: Agent = get_json(&agents, &key)?.ok_or(StoreError::NotFound("agent"))?;
            if a.status == crate::AgentStatus::Revoked {
                return Err(StoreError::Conflict("agent is revoked".into()));
            }
            let old = a.token_id.clone();
            let token_id = random_hex(8);
            let token = format!("pg_agent_{token_id}_{}", random_hex(32));
            a.token_id = token_id.clone();
            a.token_digest = sha256_hex(&token);
            put_json(&mut agents, &key, &a)?;
            drop(agents);
            let mut tokens = txn.open_table(AGENT_TOKENS)?;
            tokens.remove(old.as_str())?;
            put_json(
                &mut tokens,
                &token_id,
                &crate::model::TokenRef {
                    org: org.clone(),
                    agent: id.clone(),
                },
            )?;
            drop(tokens);
            audit::append(
                txn,
                org,
                actor,
                &AuditEvent::AgentTokenRotated { agent: id.clone() },
                &now().text,
            )?;
            Ok((a, token))
        })
    }

    /// The active policy version.
    pub fn active_policy(&self, org: &OrgId) -> Result<PolicyVersion> {
        let o = self.org(org)?;
        let r = self.read()?;
        get_json(
            &r.open_table(POLICY_VERSIONS)?,
            &format!("{org}|{:010}", o.active_policy_version),
        )?
        .ok_or(StoreError::NotFound("policy version"))
    }

    /// Every stored policy version.
    pub fn policy_versions(&self, org: &OrgId) -> Result<Vec<PolicyVersion>> {
        let r = self.read()?;
        scan_json(&r.open_table(POLICY_VERSIONS)?, &format!("{org}|"))
    }

    /// Roll back (or forward): activate a stored version.
    pub fn activate_policy_version(&self, org: &OrgId, version: u64, actor: &Actor) -> Result<u64> {
        self.write(|txn| {
            let exists = txn
                .open_table(POLICY_VERSIONS)?
                .get(format!("{org}|{version:010}").as_str())?
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

    /// One cap.
    pub fn cap(&self, org: &OrgId, id: &str) -> Result<Option<Cap>> {
        let r = self.read()?;
        get_json(&r.open_table(CAPS)?, &format!("{org}|{id}"))
    }

    /// Change a cap's limit or outcome.
    pub fn update_cap(&self, org: &OrgId, id: &str, patch: CapPatch, actor: &Actor) -> Result<Cap> {
        if patch.limit.is_some_and(|l| l < 0) {
            return Err(StoreError::Invalid("limit must be ≥ 0 minor units".into()));
        }
        self.write(|txn| {
            let mut caps = txn.open_table(CAPS)?;
            let key = format!("{org}|{id}");
            let mut cap: Cap = get_json(&caps, &key)?.ok_or(StoreError::NotFound("cap"))?;
            if let Some(l) = patch.limit {
                cap.limit = l;
            }
            if let Some(e) = patch.on_exceed {
                cap.on_exceed = e;
            }
            put_json(&mut caps, &key, &cap)?;
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
            let removed = txn
                .open_table(CAPS)?
                .remove(format!("{org}|{id}").as_str())?;
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

    /// A page of audit events after `after` (seq), oldest first.
    pub fn audit_page(&self, org: &OrgId, after: u64, limit: usize) -> Result<Vec<Value>> {
        let r = self.read()?;
        let t = r.open_table(AUDIT)?;
        let start = format!("{org}|{:020}", after.saturating_add(1));
        let end = format!("{org}}}");
        let mut out = Vec::new();
        for row in t.range(start.as_str()..end.as_str())?.take(limit) {
            let (_, v) = row?;
            out.push(serde_json::from_slice(v.value())?);
        }
        Ok(out)
    }

    /// Append an audit event for a change made outside the store's own functions (e.g. a
    /// simulation is not one; a sign-in is).
    pub fn audit_note(&self, org: &OrgId, actor: &Actor, event: &AuditEvent) -> Result<()> {
        self.write(|txn| audit::append(txn, org, actor, event, &now().text).map(|_| ()))
    }
}

fn count_owners(
    members: &impl ReadableTable<&'static str, &'static [u8]>,
    org: &OrgId,
) -> Result<usize> {
    let ms: Vec<Membership> = scan_json(members, &format!("{org}|"))?;
    Ok(ms.iter().filter(|m| m.role == Role::Owner).count())
}
