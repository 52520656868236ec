//! Agents and their tokens: creation (token shown once, stored as a digest), status (the
//! agent's kill switch), rotation, and the data path's authentication.

use subtle::ConstantTimeEq;

use crate::Store;
use crate::audit;
use crate::audit_event::AuditEvent;
use crate::error::{Result, StoreError};
use crate::ids::{Actor, AgentId, OrgId, random_hex, sha256_hex};
use crate::model::{Agent, AgentStatus, Org, TokenRef};
use crate::orgs::load_org;
use crate::tables::*;
use crate::time_util::now;

/// Agent token prefix (PROXY.md).
pub(crate) const AGENT_TOKEN_PREFIX: &str = "pg_agent_";

/// An authenticated agent.
#[derive(Clone, Debug)]
pub struct AuthedAgent {
    /// The agent record.
    pub agent: Agent,
    /// Its organization's kill switch.
    pub org_frozen: bool,
}

/// `pg_agent_<16 hex id>_<64 hex secret>`: returns (id, whole token).
pub(crate) fn new_agent_token() -> (String, String) {
    let id = random_hex(8);
    let secret = random_hex(32);
    (id.clone(), format!("{AGENT_TOKEN_PREFIX}{id}_{secret}"))
}

/// The id part of a well-formed agent token.
pub(crate) fn parse_agent_token(token: &str) -> Option<&str> {
    let rest = token.strip_prefix(AGENT_TOKEN_PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    let hexish = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    (hexish(id, 16) && hexish(secret, 64)).then_some(id)
}

impl Store {
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
            put_rec(
                &mut txn.open_table(AGENTS)?,
                (org.as_str(), agent.id.as_str()),
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
            let key = (org.as_str(), agent.as_str());
            let mut a: Agent = get_rec(&agents, &key)?.ok_or(StoreError::NotFound("agent"))?;
            if a.status == AgentStatus::Revoked {
                return Err(StoreError::Conflict("agent is revoked".into()));
            }
            a.status = status;
            put_rec(&mut agents, &key, &a)?;
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
        scan_org(&r.open_table(AGENTS)?, org.as_str())
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
        let key = (tref.org.as_str(), tref.agent.as_str());
        let Some(agent): Option<Agent> = get_rec(&r.open_table(AGENTS)?, &key)? else {
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

    /// One agent of an organization.
    pub fn agent(&self, org: &OrgId, id: &AgentId) -> Result<Option<Agent>> {
        let r = self.read()?;
        get_rec(&r.open_table(AGENTS)?, (org.as_str(), id.as_str()))
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
            let key = (org.as_str(), id.as_str());
            let mut a: Agent = get_rec(&agents, &key)?.ok_or(StoreError::NotFound("agent"))?;
            if a.status == crate::AgentStatus::Revoked {
                return Err(StoreError::Conflict("agent is revoked".into()));
            }
            let old = a.token_id.clone();
            let token_id = random_hex(8);
            let token = format!("pg_agent_{token_id}_{}", random_hex(32));
            a.token_id = token_id.clone();
            a.token_digest = sha256_hex(&token);
            put_rec(&mut agents, &key, &a)?;
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_token_format_is_checked() {
        let (id, tok) = new_agent_token();
        assert_eq!(parse_agent_token(&tok), Some(id.as_str()));
        assert_eq!(parse_agent_token("pg_agent_x_y"), None);
        assert_eq!(parse_agent_token("sk_test_123"), None);
        assert_eq!(parse_agent_token(&format!("{tok}0")), None);
    }
}
