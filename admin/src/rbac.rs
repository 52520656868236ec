//! Roles and what each may do (ADMIN_API.md "Roles"), checked in one place.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use store::{OrgId, Role};

use crate::auth::{AuthVia, Principal};
use crate::{ApiError, AppState};

/// What an endpoint needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Perm {
    /// Read intents, audit, policies, caps, agents.
    Read,
    /// Approve or deny holds.
    Approve,
    /// Create, rotate, freeze, revoke agents; the organization kill switch.
    ManageAgents,
    /// Policies, caps, webhooks, rail key.
    ManageConfig,
    /// Invite members, change roles, remove (not owners).
    ManageMembers,
    /// Owners and deleting the organization.
    Owner,
}

/// Whether `role` may do `perm`.
pub fn allows(role: Role, perm: Perm) -> bool {
    match perm {
        Perm::Read => true,
        Perm::Approve => matches!(role, Role::Owner | Role::Admin | Role::Approver),
        Perm::ManageAgents | Perm::ManageConfig | Perm::ManageMembers => {
            matches!(role, Role::Owner | Role::Admin)
        }
        Perm::Owner => role == Role::Owner,
    }
}

/// A principal acting in their active organization, with their role there.
#[derive(Clone, Debug)]
pub struct Member {
    /// Who.
    pub principal: Principal,
    /// The active organization.
    pub org: OrgId,
    /// Their role in it.
    pub role: Role,
}

impl Member {
    /// Refuse with 403 unless the role allows `perm`.
    pub fn require(&self, perm: Perm) -> Result<(), ApiError> {
        if allows(self.role, perm) {
            Ok(())
        } else {
            Err(ApiError::Forbidden(
                format!("the {:?} role may not do this", self.role).to_lowercase(),
            ))
        }
    }

    /// A signed-in human session (not an API token): approvals need one.
    pub fn require_session(&self) -> Result<(), ApiError> {
        match self.principal.via {
            AuthVia::Session(_) => Ok(()),
            AuthVia::ApiToken(_) => Err(ApiError::Forbidden(
                "approvals need a signed-in human session, not an API token".into(),
            )),
        }
    }

    /// The audit actor for this member.
    pub fn actor(&self) -> store::Actor {
        store::Actor::User(self.principal.user.clone())
    }
}

impl FromRequestParts<AppState> for Member {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let principal = Principal::from_request_parts(parts, state).await?;
        let org = principal
            .active_org
            .clone()
            .ok_or_else(|| ApiError::Forbidden("no active organization".into()))?;
        let (o, u) = (org.clone(), principal.user.clone());
        let role = state
            .blocking(move |s| s.member_role(&o, &u))
            .await?
            .ok_or(ApiError::ReauthenticationRequired)?;
        Ok(Member {
            principal,
            org,
            role,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matrix_matches_admin_api_md() {
        let table = [
            (Role::Owner, [true, true, true, true, true, true]),
            (Role::Admin, [true, true, true, true, true, false]),
            (Role::Approver, [true, true, false, false, false, false]),
            (Role::Viewer, [true, false, false, false, false, false]),
        ];
        let perms = [
            Perm::Read,
            Perm::Approve,
            Perm::ManageAgents,
            Perm::ManageConfig,
            Perm::ManageMembers,
            Perm::Owner,
        ];
        for (role, row) in table {
            for (perm, want) in perms.into_iter().zip(row) {
                assert_eq!(allows(role, perm), want, "{role:?} {perm:?}");
            }
        }
    }
}
