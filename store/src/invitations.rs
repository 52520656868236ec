//! Invitations (ADMIN_API.md "members"): the only way a human joins an organization.
//!
//! An Owner or Admin invites an email with a role; the store keeps only the SHA-256 of a
//! one-time token (`pg_inv_<16 hex id>_<64 hex secret>`) that expires after
//! [`INVITATION_TTL_SECS`] and is shown once, to the inviter, who hands it to the invitee. The
//! invitee accepts it by setting their own password (a new account), or by proving the
//! account's password (and its second factor when enrolled) when the email already has one. No
//! human ever chooses another human's password, and the inviter's answer is the same whether or
//! not the email has an account. The membership exists from the acceptance on, records who
//! invited whom, and its `accepted_at` decides which holds the member may decide
//! (approvals.rs).

use redb::ReadableTable;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use crate::Store;
use crate::audit;
use crate::audit_event::{AuditEvent, MemberAdded};
use crate::error::{Result, StoreError};
use crate::ids::{Actor, OrgId, UserId, random_hex, sha256_hex};
use crate::members::{PersonRef, person};
use crate::model::{Membership, Role, User};
use crate::orgs::load_org;
use crate::tables::*;
use crate::time_util::{Clock, now};
use crate::users::{BCRYPT_COST, create_user_in, validate_password};

/// How long an invitation can be accepted.
pub const INVITATION_TTL_SECS: i64 = 7 * 24 * 3600;
/// Pending invitations an organization may have at once.
pub const PENDING_INVITATIONS_MAX: usize = 1000;
const INVITATION_TOKEN_PREFIX: &str = "pg_inv_";

/// Where an invitation is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InvitationStatus {
    /// Waiting for the invitee.
    Pending,
    /// The invitee accepted: the membership exists.
    Accepted,
    /// An Owner or Admin withdrew it.
    Revoked,
    /// Not accepted in time (computed when read; stored records stay `pending`).
    Expired,
}

/// `{org}|{invitation}` → this.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct InvitationRecord {
    id: String,
    org: OrgId,
    email: String,
    role: Role,
    invited_by: UserId,
    created_at: String,
    expires_at_unix: i64,
    status: InvitationStatus,
    token_id: String,
    /// SHA-256 (hex) of the whole token.
    token_digest: String,
    #[serde(default)]
    accepted_by: Option<UserId>,
    #[serde(default)]
    accepted_at: Option<String>,
}

impl InvitationRecord {
    fn status_at(&self, now_unix: i64) -> InvitationStatus {
        match self.status {
            InvitationStatus::Pending if self.expires_at_unix <= now_unix => {
                InvitationStatus::Expired
            }
            s => s,
        }
    }
}

/// An invitation as listed (never its token).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvitationView {
    /// `inv_…`.
    pub id: String,
    /// The invited email (lower-cased).
    pub email: String,
    /// The role the membership will have.
    pub role: Role,
    /// Pending, accepted, revoked or expired.
    pub status: InvitationStatus,
    /// Who invited.
    pub invited_by: PersonRef,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub expires_at: String,
    /// Who accepted (the account that joined).
    pub accepted_by: Option<UserId>,
    /// RFC 3339.
    pub accepted_at: Option<String>,
}

/// What accepting an invitation did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Accepted {
    /// The organization joined.
    pub organization_id: OrgId,
    /// The account that joined.
    pub user_id: UserId,
    /// Its role there.
    pub role: Role,
    /// Whether the account was created by this acceptance.
    pub new_account: bool,
}

/// Checks a TOTP code for a user (the admin crate's RFC 6238 arithmetic), as in humans.rs.
pub type SecondFactorCheck<'a> = &'a dyn Fn(&Store, &UserId) -> Result<bool>;

fn text_at(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .map(|t| Clock::at(t).text)
        .unwrap_or_default()
}

/// The id part of a well-formed invitation token.
fn parse_token(token: &str) -> Option<&str> {
    let rest = token.strip_prefix(INVITATION_TOKEN_PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    let hexish = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    (hexish(id, 16) && hexish(secret, 64)).then_some(id)
}

/// Same rule as account creation (`users::create_user_in`).
fn checked_email(email: &str) -> Result<String> {
    let email = email.trim().to_ascii_lowercase();
    if email.len() > 254 || !email.contains('@') || email.starts_with('@') || email.ends_with('@') {
        return Err(StoreError::Invalid("not an email address".into()));
    }
    Ok(email)
}

fn invalid_invitation() -> StoreError {
    StoreError::refused(
        404,
        "invitation_invalid",
        "this invitation does not exist, was already used, was revoked or has expired",
    )
}

fn view(
    users: &impl redb::ReadableTable<&'static str, &'static [u8]>,
    r: &InvitationRecord,
    now_unix: i64,
) -> Result<InvitationView> {
    Ok(InvitationView {
        id: r.id.clone(),
        email: r.email.clone(),
        role: r.role,
        status: r.status_at(now_unix),
        invited_by: person(users, &r.invited_by)?,
        created_at: r.created_at.clone(),
        expires_at: text_at(r.expires_at_unix),
        accepted_by: r.accepted_by.clone(),
        accepted_at: r.accepted_at.clone(),
    })
}

/// The pending, unexpired invitation that `token` opens, or [`invalid_invitation`].
fn open_token(
    tokens: &impl redb::ReadableTable<S, OrgPair>,
    invitations: &impl redb::ReadableTable<OrgPair, &'static [u8]>,
    token: &str,
    now_unix: i64,
) -> Result<InvitationRecord> {
    let id = parse_token(token).ok_or_else(invalid_invitation)?;
    let Some(key) = tokens.get(id)? else {
        return Err(invalid_invitation());
    };
    let rec: InvitationRecord =
        get_rec(invitations, key.value())?.ok_or_else(invalid_invitation)?;
    let digest_ok: bool = sha256_hex(token)
        .as_bytes()
        .ct_eq(rec.token_digest.as_bytes())
        .into();
    if !digest_ok || rec.status_at(now_unix) != InvitationStatus::Pending {
        return Err(invalid_invitation());
    }
    Ok(rec)
}

impl Store {
    /// Invite `email` into `org` with `role`; returns the invitation and its token (shown once,
    /// stored as a digest). Only an Owner may invite an Owner. The answer does not depend on
    /// whether the email has an account.
    pub fn create_invitation(
        &self,
        org: &OrgId,
        email: &str,
        role: Role,
        by_role: Role,
        inviter: &UserId,
    ) -> Result<(InvitationView, String)> {
        if role == Role::Owner && by_role != Role::Owner {
            return Err(StoreError::Forbidden(
                "only an owner may invite owners".into(),
            ));
        }
        let email = checked_email(email)?;
        let clock = now();
        self.write(|txn| {
            load_org(txn, org)?;
            let users = txn.open_table(USERS)?;
            let existing: Option<String> = txn
                .open_table(USERS_BY_EMAIL)?
                .get(email.as_str())?
                .map(|v| String::from_utf8_lossy(v.value()).into_owned());
            if let Some(uid) = existing
                && txn
                    .open_table(MEMBERS)?
                    .get((org.as_str(), uid.as_str()))?
                    .is_some()
            {
                return Err(StoreError::Conflict(
                    "this email is already a member of the organization".into(),
                ));
            }
            let mut invitations = txn.open_table(INVITATIONS)?;
            let all: Vec<InvitationRecord> = scan_org(&invitations, org.as_str())?;
            let pending: Vec<&InvitationRecord> = all
                .iter()
                .filter(|r| r.status_at(clock.unix) == InvitationStatus::Pending)
                .collect();
            if pending.iter().any(|r| r.email == email) {
                return Err(StoreError::Conflict(
                    "an invitation for this email is pending: revoke it first".into(),
                ));
            }
            if pending.len() >= PENDING_INVITATIONS_MAX {
                return Err(StoreError::Conflict(format!(
                    "the organization has {PENDING_INVITATIONS_MAX} pending invitations"
                )));
            }
            let token_id = random_hex(8);
            let token = format!("{INVITATION_TOKEN_PREFIX}{token_id}_{}", random_hex(32));
            let rec = InvitationRecord {
                id: format!("inv_{}", random_hex(12)),
                org: org.clone(),
                email: email.clone(),
                role,
                invited_by: inviter.clone(),
                created_at: clock.text.clone(),
                expires_at_unix: clock.unix + INVITATION_TTL_SECS,
                status: InvitationStatus::Pending,
                token_id: token_id.clone(),
                token_digest: sha256_hex(&token),
                accepted_by: None,
                accepted_at: None,
            };
            let key = (org.as_str(), rec.id.as_str());
            put_rec(&mut invitations, &key, &rec)?;
            txn.open_control(INVITATION_TOKENS)?
                .insert(token_id.as_str(), key)?;
            let v = view(&users, &rec, clock.unix)?;
            drop((users, invitations));
            let event = AuditEvent::MemberInvited {
                invitation: rec.id.clone(),
                email: email.clone(),
                role,
                expires_at: v.expires_at.clone(),
            };
            audit::append(txn, org, &Actor::User(inviter.clone()), &event, &clock.text)?;
            Ok((v, token))
        })
    }

    /// The organization's invitations, newest first.
    pub fn list_invitations(&self, org: &OrgId) -> Result<Vec<InvitationView>> {
        let r = self.read()?;
        let users = r.open_table(USERS)?;
        let now_unix = now().unix;
        let mut recs: Vec<InvitationRecord> = scan_org(&r.open_table(INVITATIONS)?, org.as_str())?;
        recs.sort_by(|a, b| b.created_at.cmp(&a.created_at));
        recs.iter().map(|rec| view(&users, rec, now_unix)).collect()
    }

    /// Withdraw a pending invitation; its token stops working. Owner invitations are withdrawn
    /// by owners only.
    pub fn revoke_invitation(
        &self,
        org: &OrgId,
        id: &str,
        by_role: Role,
        actor: &Actor,
    ) -> Result<InvitationView> {
        let clock = now();
        self.write(|txn| {
            let key = (org.as_str(), id);
            let mut invitations = txn.open_table(INVITATIONS)?;
            let mut rec: InvitationRecord =
                get_rec(&invitations, &key)?.ok_or(StoreError::NotFound("invitation"))?;
            if rec.role == Role::Owner && by_role != Role::Owner {
                return Err(StoreError::Forbidden(
                    "only an owner may revoke an owner's invitation".into(),
                ));
            }
            if rec.status_at(clock.unix) != InvitationStatus::Pending {
                return Err(StoreError::Conflict(
                    format!(
                        "the invitation is {:?}, not pending",
                        rec.status_at(clock.unix)
                    )
                    .to_lowercase(),
                ));
            }
            rec.status = InvitationStatus::Revoked;
            put_rec(&mut invitations, &key, &rec)?;
            txn.open_control(INVITATION_TOKENS)?
                .remove(rec.token_id.as_str())?;
            let v = view(&txn.open_table(USERS)?, &rec, clock.unix)?;
            drop(invitations);
            let event = AuditEvent::MemberInvitationRevoked {
                invitation: rec.id.clone(),
                email: rec.email.clone(),
            };
            audit::append(txn, org, actor, &event, &clock.text)?;
            Ok(v)
        })
    }

    /// The email a pending invitation token was made for (throttling of its acceptance keys on
    /// it, like sign-in); [`invalid_invitation`] for any token that does not open one.
    pub fn invitation_email(&self, token: &str) -> Result<String> {
        let r = self.read()?;
        let rec = open_token(
            &r.open_table(INVITATION_TOKENS)?,
            &r.open_table(INVITATIONS)?,
            token,
            now().unix,
        )?;
        Ok(rec.email)
    }

    /// Accept an invitation (blocking: bcrypt). When the invited email has no account, one is
    /// created with `password` (which must follow the rules). When it has one, `password` must
    /// be that account's and, when it has 2FA on, `second_factor` must pass. The membership
    /// starts now, in one transaction with the invitation's use.
    pub fn accept_invitation(
        &self,
        token: &str,
        password: &str,
        second_factor: SecondFactorCheck<'_>,
    ) -> Result<Accepted> {
        let clock = now();
        let (rec, existing) = {
            let r = self.read()?;
            let rec = open_token(
                &r.open_table(INVITATION_TOKENS)?,
                &r.open_table(INVITATIONS)?,
                token,
                clock.unix,
            )?;
            let existing = self.user_by_email(&rec.email)?;
            (rec, existing)
        };
        let new_hash = match &existing {
            Some(u) => {
                if !crate::humans::password_matches(password, &u.password_hash) {
                    return Err(StoreError::refused(
                        401,
                        "invalid_credentials",
                        "this email already has an account: give its password",
                    ));
                }
                if self.totp_enabled(&u.id)? && !second_factor(self, &u.id)? {
                    return Err(StoreError::refused(
                        401,
                        "second_factor_required",
                        "this account has two-factor authentication on: send a current totp_code",
                    ));
                }
                None
            }
            None => {
                validate_password(password)?;
                Some(
                    bcrypt::hash(password, BCRYPT_COST)
                        .map_err(|e| StoreError::Db(e.to_string()))?,
                )
            }
        };
        self.write(|txn| {
            // Re-read: another acceptance or a revocation may have won meanwhile.
            let mut rec2 = open_token(
                &txn.open_control(INVITATION_TOKENS)?,
                &txn.open_table(INVITATIONS)?,
                token,
                clock.unix,
            )?;
            if rec2.id != rec.id {
                return Err(invalid_invitation());
            }
            let org = rec2.org.clone();
            load_org(txn, &org)?;
            // The invitation carries its inviter's authority: it opens only while the inviter
            // is still a member who may grant this role (a removed or demoted inviter's pending
            // invitations stop working with them).
            let inviter: Option<Membership> = get_rec(
                &txn.open_table(MEMBERS)?,
                (org.as_str(), rec2.invited_by.as_str()),
            )?;
            let may_grant = inviter.is_some_and(|m| match rec2.role {
                Role::Owner => m.role == Role::Owner,
                _ => matches!(m.role, Role::Owner | Role::Admin),
            });
            if !may_grant {
                return Err(invalid_invitation());
            }
            let (user, new_account): (User, bool) = match (&existing, &new_hash) {
                (Some(u), _) => {
                    let now_user: Option<User> = get_json(&txn.open_table(USERS)?, u.id.as_str())?;
                    match now_user {
                        Some(cur) if cur.password_hash == u.password_hash => (cur, false),
                        _ => {
                            return Err(StoreError::Conflict(
                                "the account changed meanwhile: try again".into(),
                            ));
                        }
                    }
                }
                (None, Some(h)) => (create_user_in(txn, &rec2.email, h.clone())?, true),
                (None, None) => return Err(StoreError::Db("unreachable accept state".into())),
            };
            let mkey = (org.as_str(), user.id.as_str());
            let mut members = txn.open_table(MEMBERS)?;
            if members.get(mkey)?.is_some() {
                return Err(StoreError::Conflict(
                    "already a member of this organization".into(),
                ));
            }
            put_rec(
                &mut members,
                &mkey,
                &Membership {
                    org: org.clone(),
                    user: user.id.clone(),
                    role: rec2.role,
                    accepted_at: clock.text.clone(),
                    invited_by: Some(rec2.invited_by.clone()),
                },
            )?;
            drop(members);
            rec2.status = InvitationStatus::Accepted;
            rec2.accepted_by = Some(user.id.clone());
            rec2.accepted_at = Some(clock.text.clone());
            put_rec(
                &mut txn.open_table(INVITATIONS)?,
                (org.as_str(), rec2.id.as_str()),
                &rec2,
            )?;
            txn.open_control(INVITATION_TOKENS)?
                .remove(rec2.token_id.as_str())?;
            let actor = Actor::User(user.id.clone());
            let event = AuditEvent::MemberAdded(MemberAdded::Invited {
                user: user.id.clone(),
                email: user.email.clone(),
                role: rec2.role,
                invitation: rec2.id.clone(),
                invited_by: rec2.invited_by.clone(),
            });
            audit::append(txn, &org, &actor, &event, &clock.text)?;
            if new_account {
                let event = AuditEvent::UserCreated {
                    email: user.email.clone(),
                };
                audit::append_user(txn, &user.id, &actor, &event, &clock.text)?;
            }
            let event = AuditEvent::UserInvitationAccepted {
                organization: org.clone(),
                role: rec2.role,
                invitation: rec2.id.clone(),
                invited_by: rec2.invited_by.clone(),
            };
            audit::append_user(txn, &user.id, &actor, &event, &clock.text)?;
            Ok(Accepted {
                organization_id: org,
                user_id: user.id,
                role: rec2.role,
                new_account,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_parse_only_in_their_exact_shape() {
        let id = "0123456789abcdef";
        let secret = "a".repeat(64);
        assert_eq!(parse_token(&format!("pg_inv_{id}_{secret}")), Some(id));
        for bad in [
            format!("pg_user_{id}_{secret}"),
            format!("pg_inv_{id}_{}", "a".repeat(63)),
            format!("pg_inv_{}_{secret}", "0".repeat(15)),
            format!("pg_inv_{id}{secret}"),
            format!("pg_inv_{id}_{secret}x"),
            String::new(),
        ] {
            assert_eq!(parse_token(&bad), None, "{bad}");
        }
    }
}
