//! Organizations, users, agents, policy versions, caps and rail keys: everything the decision
//! reads and humans (or the bootstrap CLI) manage. Every change appends an audit event.

use std::sync::Arc;

use policies::{Cap, CapInterval, CapScope, CompiledPolicies, Currency, OnExceed};
use redb::ReadableTable;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::audit;
use crate::audit_event::{AuditEvent, CapChange, MemberAdded};
use crate::error::{Result, StoreError};
use crate::ids::{Actor, AgentId, CapId, OrgId, UserId, random_hex};
use crate::model::{
    Agent, AgentStatus, Membership, Org, PolicyVersion, RailInfo, RailKey, Role, TokenRef, User,
};
use crate::tables::*;
use crate::time_util::now;
use crate::{Store, audit::AuditHead};

/// bcrypt cost for human passwords (ADMIN_API.md).
pub const BCRYPT_COST: u32 = 10;

/// Agent token prefix (PROXY.md).
const AGENT_TOKEN_PREFIX: &str = "pg_agent_";

/// An authenticated agent.
#[derive(Clone, Debug)]
pub struct AuthedAgent {
    /// The agent record.
    pub agent: Agent,
    /// Its organization's kill switch.
    pub org_frozen: bool,
}

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

fn default_on_exceed() -> OnExceed {
    OnExceed::Hold
}

/// ADMIN_API.md password rules: ≥ 10 characters, a letter and a digit, ≤ 72 bytes (bcrypt's limit).
pub fn validate_password(password: &str) -> Result<()> {
    if password.chars().count() < 10 {
        return Err(StoreError::Invalid(
            "password must have at least 10 characters".into(),
        ));
    }
    if password.len() > 72 {
        return Err(StoreError::Invalid(
            "password must be at most 72 bytes".into(),
        ));
    }
    if !password.chars().any(char::is_alphabetic) || !password.chars().any(|c| c.is_ascii_digit()) {
        return Err(StoreError::Invalid(
            "password needs at least one letter and one digit".into(),
        ));
    }
    Ok(())
}

fn sha256_hex(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

fn author(actor: &Actor) -> String {
    match actor {
        Actor::Agent(a) => format!("agent:{a}"),
        Actor::User(u) => format!("user:{u}"),
        Actor::System(s) => format!("system:{s}"),
    }
}

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

    fn create_org_in(&self, txn: &crate::ledger::Tx<'_>, name: &str, actor: &Actor) -> Result<Org> {
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
            put_json(
                &mut txn.open_table(MEMBERS)?,
                &format!("{}|{}", org.id, user.id),
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

    /// Create an agent; returns it with its token, which is not stored and cannot be shown again.
    pub fn create_agent(
        &self,
        org: &OrgId,
        name: &str,
        tags: Vec<String>,
        actor: &Actor,
    ) -> Result<(Agent, String)> {
        let name = name.trim();
        if name.is_empty() || name.len() > 200 {
            return Err(StoreError::Invalid(
                "agent name must be 1..=200 bytes".into(),
            ));
        }
        self.write(|txn| {
            load_org(txn, org)?;
            let t = now();
            let (token_id, token) = new_agent_token();
            let agent = Agent {
                id: AgentId::generate(),
                org: org.clone(),
                name: name.to_string(),
                tags,
                status: AgentStatus::Active,
                token_digest: sha256_hex(&token),
                token_id: token_id.clone(),
                created_at: t.text.clone(),
                created_by: match actor {
                    Actor::User(u) => Some(u.clone()),
                    _ => None,
                },
            };
            put_json(
                &mut txn.open_table(AGENTS)?,
                &format!("{org}|{}", agent.id),
                &agent,
            )?;
            let tref = TokenRef {
                org: org.clone(),
                agent: agent.id.clone(),
            };
            put_json(&mut txn.open_table(AGENT_TOKENS)?, &token_id, &tref)?;
            let event = AuditEvent::AgentCreated {
                agent: agent.id.clone(),
                name: agent.name.clone(),
            };
            audit::append(txn, org, actor, &event, &t.text)?;
            Ok((agent, token))
        })
    }

    /// Change an agent's status (freeze, unfreeze, revoke). Revoking is final.
    pub fn set_agent_status(
        &self,
        org: &OrgId,
        agent: &AgentId,
        status: AgentStatus,
        actor: &Actor,
    ) -> Result<Agent> {
        self.write(|txn| {
            let mut agents = txn.open_table(AGENTS)?;
            let key = format!("{org}|{agent}");
            let mut a: Agent = get_json(&agents, &key)?.ok_or(StoreError::NotFound("agent"))?;
            if a.status == AgentStatus::Revoked {
                return Err(StoreError::Conflict("agent is revoked".into()));
            }
            a.status = status;
            put_json(&mut agents, &key, &a)?;
            drop(agents);
            if status == AgentStatus::Revoked {
                txn.open_table(AGENT_TOKENS)?.remove(a.token_id.as_str())?;
            }
            let event = match status {
                AgentStatus::Active => AuditEvent::AgentUnfrozen {
                    agent: agent.clone(),
                },
                AgentStatus::Frozen => AuditEvent::AgentFrozen {
                    agent: agent.clone(),
                },
                AgentStatus::Revoked => AuditEvent::AgentRevoked {
                    agent: agent.clone(),
                },
            };
            audit::append(txn, org, actor, &event, &now().text)?;
            Ok(a)
        })
    }

    /// Agents of an organization.
    pub fn list_agents(&self, org: &OrgId) -> Result<Vec<Agent>> {
        let r = self.read()?;
        scan_json(&r.open_table(AGENTS)?, &format!("{org}|"))
    }

    /// Authenticate an agent token: look up by its id part, then compare the SHA-256 digest in
    /// constant time. `None` for malformed, unknown or revoked tokens.
    pub fn authenticate_agent(&self, token: &str) -> Result<Option<AuthedAgent>> {
        let Some(token_id) = parse_agent_token(token) else {
            return Ok(None);
        };
        let r = self.read()?;
        let Some(tref): Option<TokenRef> = get_json(&r.open_table(AGENT_TOKENS)?, token_id)? else {
            return Ok(None);
        };
        let key = format!("{}|{}", tref.org, tref.agent);
        let Some(agent): Option<Agent> = get_json(&r.open_table(AGENTS)?, &key)? else {
            return Ok(None);
        };
        let presented = sha256_hex(token);
        let same: bool = presented
            .as_bytes()
            .ct_eq(agent.token_digest.as_bytes())
            .into();
        if !same || agent.status == AgentStatus::Revoked || agent.token_id != token_id {
            return Ok(None);
        }
        // A deleted organization's agents no longer authenticate.
        let Some(org): Option<Org> = get_json(&r.open_table(ORGS)?, tref.org.as_str())? else {
            return Ok(None);
        };
        Ok(Some(AuthedAgent {
            agent,
            org_frozen: org.frozen,
        }))
    }

    /// Validate and store a policy set as a new version, and activate it.
    pub fn set_policy(&self, org: &OrgId, text: &str, actor: &Actor) -> Result<u64> {
        let compiled = Arc::new(policies::compile(text).map_err(StoreError::PolicyRejected)?);
        let version = self.write(|txn| self.store_policy_in(txn, org, text, actor))?;
        // Cached only once committed: an aborted version number is reused by the next set.
        self.cache_policy(org, version, compiled);
        Ok(version)
    }

    fn store_policy_in(
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
        put_json(
            &mut txn.open_table(POLICY_VERSIONS)?,
            &format!("{org}|{version:010}"),
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

    fn cache_policy(&self, org: &OrgId, version: u64, compiled: Arc<CompiledPolicies>) {
        if let Ok(mut cache) = self.policy_cache.lock() {
            cache.insert((org.clone(), version), compiled);
        }
    }

    /// The active compiled policy set, parsed once per version and shared.
    pub(crate) fn active_policies<T: ReadableTable<&'static str, &'static [u8]>>(
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
        let pv: PolicyVersion = get_json(
            &versions,
            &format!("{}|{:010}", org.id, org.active_policy_version),
        )?
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
            put_json(
                &mut txn.open_table(CAPS)?,
                &format!("{org}|{}", cap.id),
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
        scan_json(&r.open_table(CAPS)?, &format!("{org}|"))
    }

    /// Store the organization's Stripe secret key, sealed with the master key.
    pub fn set_rail_key(&self, org: &OrgId, key: &str, actor: &Actor) -> Result<RailInfo> {
        let key = key.trim();
        let mode = if key.starts_with("sk_live_") || key.starts_with("rk_live_") {
            "live"
        } else if key.starts_with("sk_test_") || key.starts_with("rk_test_") {
            "test"
        } else {
            return Err(StoreError::Invalid(
                "a Stripe secret key starts with sk_test_, sk_live_, rk_test_ or rk_live_".into(),
            ));
        };
        if key.len() > 256 || !key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(StoreError::Invalid(
                "the key has unexpected characters".into(),
            ));
        }
        self.write(|txn| {
            load_org(txn, org)?;
            let t = now();
            let last4: String = key
                .chars()
                .rev()
                .take(4)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            let rk = RailKey {
                sealed: self.master.seal(&format!("rail|{org}"), key.as_bytes()),
                mode: mode.to_string(),
                last4: last4.clone(),
                updated_at: t.text.clone(),
            };
            put_json(&mut txn.open_table(RAIL_KEYS)?, org.as_str(), &rk)?;
            audit::append(
                txn,
                org,
                actor,
                &AuditEvent::RailUpdated {
                    mode: mode.to_string(),
                    last4: last4.clone(),
                },
                &t.text,
            )?;
            Ok(RailInfo {
                mode: rk.mode,
                last4: rk.last4,
                updated_at: rk.updated_at,
            })
        })
    }

    /// The rail key's public view.
    pub fn rail_info(&self, org: &OrgId) -> Result<Option<RailInfo>> {
        let r = self.read()?;
        let rk: Option<RailKey> = get_json(&r.open_table(RAIL_KEYS)?, org.as_str())?;
        Ok(rk.map(|rk| RailInfo {
            mode: rk.mode,
            last4: rk.last4,
            updated_at: rk.updated_at,
        }))
    }

    /// The decrypted rail key inside a transaction (for forwarding only).
    pub(crate) fn rail_key_in(
        &self,
        txn: &crate::ledger::Tx<'_>,
        org: &OrgId,
    ) -> Result<Option<(String, bool)>> {
        self.rail_key_from(&txn.open_table(RAIL_KEYS)?, org)
    }

    /// Decrypt the rail key from the rail-keys table of any transaction.
    pub(crate) fn rail_key_from(
        &self,
        t: &impl ReadableTable<&'static str, &'static [u8]>,
        org: &OrgId,
    ) -> Result<Option<(String, bool)>> {
        let rk: Option<RailKey> = get_json(t, org.as_str())?;
        let Some(rk) = rk else { return Ok(None) };
        let plain = self.master.open(&format!("rail|{org}"), &rk.sealed)?;
        let key = String::from_utf8(plain).map_err(|_| StoreError::Crypto)?;
        Ok(Some((key, rk.mode == "live")))
    }

    /// Whether the organization's rail key is a live one (`None`: no key), without decrypting it.
    pub(crate) fn rail_mode_from(
        &self,
        t: &impl ReadableTable<&'static str, &'static [u8]>,
        org: &OrgId,
    ) -> Result<Option<bool>> {
        let rk: Option<RailKey> = get_json(t, org.as_str())?;
        Ok(rk.map(|rk| rk.mode == "live"))
    }

    /// The decrypted rail key (for the executor).
    pub fn rail_key(&self, org: &OrgId) -> Result<Option<String>> {
        let r = self.read()?;
        Ok(self
            .rail_key_from(&r.open_table(RAIL_KEYS)?, org)?
            .map(|(k, _)| k))
    }

    /// Verify an organization's audit chain.
    pub fn audit_verify(&self, org: &OrgId) -> Result<audit::VerifyReport> {
        let r = self.read()?;
        let events = r.open_table(AUDIT)?;
        let stored = audit::head(&r.open_table(AUDIT_HEADS)?, org.as_str())?;
        audit::verify_events(audit::raw_events(&events, org)?, Some(&stored))
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
        let start = format!("{user}|{:020}", after.saturating_add(1));
        let end = format!("{user}}}");
        let mut out = Vec::new();
        for row in t.range(start.as_str()..end.as_str())?.take(limit) {
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
        let prefix = format!("{user}|");
        let end = format!("{user}}}");
        let iter = events.range(prefix.as_str()..end.as_str())?.map(|row| {
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
}

pub(crate) fn create_user_in(
    txn: &crate::ledger::Tx<'_>,
    email: &str,
    hash: String,
) -> Result<User> {
    let email = email.trim().to_ascii_lowercase();
    if email.len() > 254 || !email.contains('@') || email.starts_with('@') || email.ends_with('@') {
        return Err(StoreError::Invalid("not an email address".into()));
    }
    let mut by_email = txn.open_table(USERS_BY_EMAIL)?;
    if by_email.get(email.as_str())?.is_some() {
        return Err(StoreError::Conflict("a user with this email exists".into()));
    }
    let user = User {
        id: UserId::generate(),
        email: email.clone(),
        password_hash: hash,
        created_at: now().text,
    };
    by_email.insert(email.as_str(), user.id.as_str().as_bytes())?;
    put_json(&mut txn.open_table(USERS)?, user.id.as_str(), &user)?;
    Ok(user)
}

/// `pg_agent_<16 hex id>_<64 hex secret>`: returns (id, whole token).
fn new_agent_token() -> (String, String) {
    let id = random_hex(8);
    let secret = random_hex(32);
    (id.clone(), format!("{AGENT_TOKEN_PREFIX}{id}_{secret}"))
}

/// The id part of a well-formed agent token.
fn parse_agent_token(token: &str) -> Option<&str> {
    let rest = token.strip_prefix(AGENT_TOKEN_PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    let hexish = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    (hexish(id, 16) && hexish(secret, 64)).then_some(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_rules_match_admin_api_md() {
        assert!(validate_password("abcdefgh1").is_err(), "9 chars");
        assert!(validate_password("abcdefghij").is_err(), "no digit");
        assert!(validate_password("1234567890").is_err(), "no letter");
        assert!(validate_password("abcdefghi1").is_ok());
        let long = format!("a1{}", "x".repeat(71));
        assert_eq!(long.len(), 73);
        assert!(validate_password(&long).is_err(), "73 bytes");
    }

    #[test]
    fn agent_token_format_is_checked() {
        let (id, tok) = new_agent_token();
        assert_eq!(parse_agent_token(&tok), Some(id.as_str()));
        assert_eq!(parse_agent_token("pg_agent_x_y"), None);
        assert_eq!(parse_agent_token("sk_test_123"), None);
        assert_eq!(parse_agent_token(&format!("{tok}0")), None);
    }
}
