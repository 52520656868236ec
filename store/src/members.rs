//! Memberships and roles of an organization (ADMIN_API.md "Members"): who is in, with which
//! role, and the rule that an organization keeps an owner.

use redb::ReadableTable;
use serde::{Deserialize, Serialize};

use crate::Store;
use crate::audit;
use crate::audit_event::AuditEvent;
use crate::error::{Result, StoreError};
use crate::ids::{Actor, OrgId, UserId};
use crate::model::{Membership, Org, Role, User};
use crate::tables::*;
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

pub(crate) fn count_owners(
    members: &impl ReadableTable<OrgPair, &'static [u8]>,
    org: &OrgId,
) -> Result<usize> {
    let ms: Vec<Membership> = scan_org(members, org.as_str())?;
    Ok(ms.iter().filter(|m| m.role == Role::Owner).count())
}

impl Store {
    /// A user's role in an organization (`None`: not a member, or no such organization).
    pub fn member_role(&self, org: &OrgId, user: &UserId) -> Result<Option<Role>> {
        let r = self.read()?;
        if get_json::<Org>(&r.open_table(ORGS)?, org.as_str())?.is_none() {
            return Ok(None);
        }
        let m: Option<Membership> =
            get_rec(&r.open_table(MEMBERS)?, (org.as_str(), user.as_str()))?;
        Ok(m.map(|m| m.role))
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
            if let Some(m) = get_rec::<_, Membership>(&members, (k.value(), user.as_str()))? {
                out.push((org, m.role));
            }
        }
        Ok(out)
    }

    /// Members of an organization.
    pub fn list_members(&self, org: &OrgId) -> Result<Vec<MemberView>> {
        let r = self.read()?;
        let users = r.open_table(USERS)?;
        let ms: Vec<Membership> = scan_org(&r.open_table(MEMBERS)?, org.as_str())?;
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
            let key = (org.as_str(), user.as_str());
            let mut m: Membership =
                get_rec(&members, &key)?.ok_or(StoreError::NotFound("member"))?;
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
            put_rec(&mut members, &key, &m)?;
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
            let key = (org.as_str(), user.as_str());
            let m: Membership = get_rec(&members, &key)?.ok_or(StoreError::NotFound("member"))?;
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
            members.remove(key)?;
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
}
