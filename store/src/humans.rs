//! Humans signing in (ADMIN_API.md "Authentication"): password checks, sessions, the TOTP second
//! factor with its replay rule, single-use recovery codes, and personal API tokens.
//!
//! Secrets at rest: session ids, recovery codes and API tokens are stored as SHA-256 digests
//! only; the TOTP secret is sealed with the master key (context `totp|{user}`). The TOTP
//! algorithm itself (RFC 6238 HMAC) is supplied by the caller as a [`TotpCodeFn`], so this crate
//! keeps the records and the rules that must hold inside one transaction (ARCHITECTURE.md:
//! "store the last accepted time step per user and refuse a step not greater than it").

use std::sync::OnceLock;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use redb::ReadableTable;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use crate::Store;
use crate::audit;
use crate::audit_event::AuditEvent;
use crate::error::{Result, StoreError};
use crate::ids::{Actor, OrgId, UserId, random_bytes, random_hex, sha256_hex};
use crate::model::{Org, User};
use crate::orgs::load_org;
use crate::tables::*;
use crate::time_util::now;
use crate::users::{BCRYPT_COST, validate_password};

/// bcrypt reads at most 72 bytes; longer passwords are refused, never truncated.
pub const PASSWORD_MAX_BYTES: usize = 72;
/// RFC 6238 time step.
pub const TOTP_STEP_SECS: u64 = 30;
/// Steps accepted either side of the current one (ADMIN_API.md: ±1).
pub const TOTP_SKEW_STEPS: u64 = 1;
/// Digits of a code.
pub const TOTP_DIGITS: usize = 6;
/// Shortest TOTP secret accepted (RFC 4226 §4: at least 128 bits).
pub const TOTP_SECRET_MIN_BYTES: usize = 16;
/// Recovery codes per set (ADMIN_API.md).
pub const RECOVERY_CODES: usize = 10;
/// A session's `last_seen` is written at most this often, so a busy console does not commit on
/// every request; idle expiry is therefore exact to within this many seconds.
pub const SESSION_TOUCH_SECS: i64 = 60;
/// Longest personal API token name.
pub const TOKEN_NAME_MAX_BYTES: usize = 200;
/// Personal API tokens one user may hold at once.
pub const TOKENS_PER_USER_MAX: usize = 50;

const USER_TOKEN_PREFIX: &str = "pg_user_";
/// 32 symbols (no `l`, `o`, `0`, `1`): 5 bits each, so a random byte masked with 31 is unbiased.
const RECOVERY_ALPHABET: &[u8; 32] = b"abcdefghijkmnpqrstuvwxyz23456789";

/// The RFC 6238 code of `secret` at time step `step` (`unix / 30`), as `TOTP_DIGITS` digits.
/// The admin crate supplies it (totp-rs, SHA-1); tests may supply a stand-in.
pub type TotpCodeFn = fn(secret: &[u8], step: u64) -> String;

/// How a sign-in was completed, recorded in its audit event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SignInFactor {
    /// Password only (2FA not enabled).
    Password,
    /// Password and a TOTP code.
    Totp,
    /// Password and a recovery code.
    RecoveryCode,
}

impl SignInFactor {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            SignInFactor::Password => "password",
            SignInFactor::Totp => "totp",
            SignInFactor::RecoveryCode => "recovery_code",
        }
    }
}

/// `{session id hash}` → this.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct SessionRecord {
    user: UserId,
    active_org: Option<OrgId>,
    created_at_unix: i64,
    last_seen_unix: i64,
    absolute_expiry_unix: i64,
}

impl SessionRecord {
    /// Idle: more than `idle_secs` since the last request. Absolute: at or past the fixed end.
    fn expired(&self, now_unix: i64, idle_secs: i64) -> bool {
        now_unix >= self.absolute_expiry_unix || now_unix - self.last_seen_unix > idle_secs
    }
}

/// A live session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionInfo {
    /// Storage key: SHA-256 (hex) of the raw id. Safe to log or hold; the raw id is not.
    pub hash: String,
    /// Who signed in.
    pub user: UserId,
    /// The organization requests act on.
    pub active_org: Option<OrgId>,
    /// Unix seconds of the sign-in.
    pub created_at_unix: i64,
    /// Unix seconds of the last recorded request.
    pub last_seen_unix: i64,
    /// Unix seconds at which the session ends whatever its use.
    pub absolute_expiry_unix: i64,
}

impl SessionInfo {
    fn new(hash: String, r: SessionRecord) -> Self {
        Self {
            hash,
            user: r.user,
            active_org: r.active_org,
            created_at_unix: r.created_at_unix,
            last_seen_unix: r.last_seen_unix,
            absolute_expiry_unix: r.absolute_expiry_unix,
        }
    }
}

/// `{user}` → this: the second factor of one user.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct UserSecrets {
    /// Sealed active TOTP secret (2FA on).
    #[serde(default)]
    totp: Option<String>,
    /// Sealed secret of a setup not yet confirmed.
    #[serde(default)]
    totp_pending: Option<String>,
    /// Highest time step accepted so far; a code for a step not above it is a replay.
    #[serde(default)]
    totp_last_step: Option<u64>,
    /// SHA-256 (hex) of each unused recovery code.
    #[serde(default)]
    recovery: Vec<String>,
}

/// `{token id}` → this.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct UserTokenRecord {
    user: UserId,
    org: Option<OrgId>,
    name: String,
    /// SHA-256 (hex) of the whole token.
    digest: String,
    created_at: String,
}

/// A personal API token, without its secret.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct UserToken {
    /// Id part of the token (`pg_user_<id>_…`).
    pub id: String,
    /// Owner; the token carries this user's role.
    pub user: UserId,
    /// The organization it acts in (the creator's active organization).
    pub org: Option<OrgId>,
    /// Label given at creation.
    pub name: String,
    /// RFC 3339.
    pub created_at: String,
}

impl UserToken {
    fn new(id: &str, r: UserTokenRecord) -> Self {
        Self {
            id: id.to_string(),
            user: r.user,
            org: r.org,
            name: r.name,
            created_at: r.created_at,
        }
    }
}

fn ct_eq_str(a: &str, b: &str) -> bool {
    a.as_bytes().ct_eq(b.as_bytes()).into()
}

/// The storage key of a raw session id.
pub fn session_hash(raw_id: &str) -> String {
    sha256_hex(raw_id)
}

/// Same normalization as account creation (`users::create_user_in`).
fn normalize_email(email: &str) -> String {
    email.trim().to_ascii_lowercase()
}

/// A bcrypt hash of a random password, so an unknown email costs the same bcrypt work as a
/// known one (ARCHITECTURE.md: timing must not reveal accounts).
fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| {
        bcrypt::hash(random_hex(16), BCRYPT_COST)
            .expect("bcrypt of a 32-character password at a valid cost cannot fail")
    })
}

/// bcrypt verify, refusing (not truncating) passwords over the limit.
pub(crate) fn password_matches(password: &str, hash: &str) -> bool {
    password.len() <= PASSWORD_MAX_BYTES && bcrypt::verify(password, hash).unwrap_or(false)
}

fn too_long() -> StoreError {
    StoreError::Invalid(format!("passwords are at most {PASSWORD_MAX_BYTES} bytes"))
}

/// 10 random characters shown as `xxxxx-xxxxx`.
fn new_recovery_code() -> String {
    let chars: String = random_bytes(10)
        .into_iter()
        .map(|b| RECOVERY_ALPHABET[usize::from(b & 31)] as char)
        .collect();
    format!("{}-{}", &chars[..5], &chars[5..])
}

/// Digest of a recovery code as typed: case, spaces and the dash do not matter.
fn recovery_digest(code: &str) -> String {
    let norm: String = code
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '-')
        .collect::<String>()
        .to_ascii_lowercase();
    sha256_hex(&norm)
}

/// A fresh set: (codes to show once, digests to store).
fn new_recovery_set() -> (Vec<String>, Vec<String>) {
    let codes: Vec<String> = (0..RECOVERY_CODES).map(|_| new_recovery_code()).collect();
    let digests = codes.iter().map(|c| recovery_digest(c)).collect();
    (codes, digests)
}

/// The time step a code matches among `t-1, t, t+1` (`t = now / 30`), skipping steps at or below
/// `last_step` (replays). The highest matching step wins, so a code that happens to match two
/// steps cannot be accepted twice.
fn matching_step(
    secret: &[u8],
    code: &str,
    now_unix: i64,
    last_step: Option<u64>,
    code_at: TotpCodeFn,
) -> Option<u64> {
    let well_formed = code.len() == TOTP_DIGITS && code.bytes().all(|b| b.is_ascii_digit());
    let now = u64::try_from(now_unix).ok()?;
    if !well_formed {
        return None;
    }
    let t = now / TOTP_STEP_SECS;
    let mut found = None;
    for step in t.saturating_sub(TOTP_SKEW_STEPS)..=t + TOTP_SKEW_STEPS {
        if last_step.is_some_and(|last| step <= last) {
            continue;
        }
        if ct_eq_str(&code_at(secret, step), code) {
            found = Some(step);
        }
    }
    found
}

fn load_secrets(
    t: &impl ReadableTable<&'static str, &'static [u8]>,
    user: &UserId,
) -> Result<UserSecrets> {
    Ok(get_json(t, user.as_str())?.unwrap_or_default())
}

/// A change to a user's own credentials goes to the user's own trail (`GET /api/v1/me/audit`),
/// not to the organizations they belong to: an organization that added them never receives
/// events about their account.
fn audit_user_event(txn: &crate::ledger::Tx<'_>, user: &UserId, event: &AuditEvent) -> Result<()> {
    let actor = Actor::User(user.clone());
    audit::append_user(txn, user, &actor, event, &now().text).map(|_| ())
}

/// Delete every personal API token of `user` (optionally only those bound to `org`); returns
/// how many. A password change or a 2FA reset ends them all (ADMIN_API.md).
pub(crate) fn revoke_tokens_in(
    txn: &crate::ledger::Tx<'_>,
    user: &UserId,
    only_org: Option<&OrgId>,
) -> Result<usize> {
    let mut table = txn.open_table(USER_TOKENS)?;
    let mut doomed = Vec::new();
    for row in table.iter()? {
        let (k, v) = row?;
        let rec: UserTokenRecord = serde_json::from_slice(v.value())?;
        if &rec.user == user && only_org.is_none_or(|o| rec.org.as_ref() == Some(o)) {
            doomed.push(k.value().to_string());
        }
    }
    for k in &doomed {
        table.remove(k.as_str())?;
    }
    Ok(doomed.len())
}

/// Remove `user`'s sessions except `keep` (a hash); returns how many ended.
fn end_sessions_in(
    txn: &crate::ledger::Tx<'_>,
    user: &UserId,
    keep: Option<&str>,
) -> Result<usize> {
    let mut sessions = txn.open_table(SESSIONS)?;
    let mut doomed = Vec::new();
    for row in sessions.iter()? {
        let (k, v) = row?;
        let rec: SessionRecord = serde_json::from_slice(v.value())?;
        if &rec.user == user && Some(k.value()) != keep {
            doomed.push(k.value().to_string());
        }
    }
    for k in &doomed {
        sessions.remove(k.as_str())?;
    }
    Ok(doomed.len())
}

/// Remove every expired session (housekeeping at each sign-in keeps the table bounded).
fn purge_expired_in(txn: &crate::ledger::Tx<'_>, now_unix: i64, idle_secs: i64) -> Result<()> {
    let mut sessions = txn.open_table(SESSIONS)?;
    let mut doomed = Vec::new();
    for row in sessions.iter()? {
        let (k, v) = row?;
        let rec: SessionRecord = serde_json::from_slice(v.value())?;
        if rec.expired(now_unix, idle_secs) {
            doomed.push(k.value().to_string());
        }
    }
    for k in &doomed {
        sessions.remove(k.as_str())?;
    }
    Ok(())
}

/// `pg_user_<16 hex id>_<64 hex secret>`: returns (id, whole token).
fn new_user_token() -> (String, String) {
    let id = random_hex(8);
    let secret = random_hex(32);
    (id.clone(), format!("{USER_TOKEN_PREFIX}{id}_{secret}"))
}

/// The id part of a well-formed personal API token.
fn parse_user_token(token: &str) -> Option<&str> {
    let rest = token.strip_prefix(USER_TOKEN_PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    let hexish = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    (hexish(id, 16) && hexish(secret, 64)).then_some(id)
}

// ------------------------------------------------------------------------------ users, passwords

impl Store {
    /// A user by email (case-insensitive).
    pub fn user_by_email(&self, email: &str) -> Result<Option<User>> {
        let r = self.read()?;
        let by_email = r.open_table(USERS_BY_EMAIL)?;
        let Some(id) = by_email.get(normalize_email(email).as_str())? else {
            return Ok(None);
        };
        let id = String::from_utf8(id.value().to_vec())
            .map_err(|_| StoreError::Corrupt("user id is not UTF-8".into()))?;
        get_json(&r.open_table(USERS)?, &id)
    }

    /// A user by id.
    pub fn user(&self, user: &UserId) -> Result<Option<User>> {
        let r = self.read()?;
        get_json(&r.open_table(USERS)?, user.as_str())
    }

    /// Check an email and password (blocking: bcrypt). `None` for an unknown email or a wrong
    /// password alike, after the same bcrypt work. A password over 72 bytes is refused with
    /// [`StoreError::Invalid`] before any lookup.
    pub fn verify_login(&self, email: &str, password: &str) -> Result<Option<User>> {
        let dummy = dummy_hash();
        if password.len() > PASSWORD_MAX_BYTES {
            return Err(too_long());
        }
        let user = self.user_by_email(email)?;
        let hash = user.as_ref().map_or(dummy, |u| u.password_hash.as_str());
        let ok = password_matches(password, hash);
        Ok(user.filter(|_| ok))
    }

    /// Whether `password` is the user's (blocking: bcrypt).
    pub fn verify_password(&self, user: &UserId, password: &str) -> Result<bool> {
        let u = self.user(user)?.ok_or(StoreError::NotFound("user"))?;
        Ok(password_matches(password, &u.password_hash))
    }

    /// Change a password (blocking: bcrypt). The new one must follow the rules; the user's other
    /// sessions end (all but `keep_session`, a session hash), in the same transaction.
    pub fn change_password(
        &self,
        user: &UserId,
        current: &str,
        new: &str,
        keep_session: Option<&str>,
    ) -> Result<()> {
        validate_password(new)?;
        let before = self.user(user)?.ok_or(StoreError::NotFound("user"))?;
        if !password_matches(current, &before.password_hash) {
            return Err(StoreError::Invalid("the current password is wrong".into()));
        }
        let hash = bcrypt::hash(new, BCRYPT_COST).map_err(|e| StoreError::Db(e.to_string()))?;
        self.write(|txn| {
            let mut users = txn.open_table(USERS)?;
            let mut u: User =
                get_json(&users, user.as_str())?.ok_or(StoreError::NotFound("user"))?;
            if u.password_hash != before.password_hash {
                return Err(StoreError::Conflict(
                    "the password was changed meanwhile".into(),
                ));
            }
            u.password_hash = hash;
            put_json(&mut users, user.as_str(), &u)?;
            drop(users);
            let ended = end_sessions_in(txn, user, keep_session)?;
            let tokens = revoke_tokens_in(txn, user, None)?;
            let event = AuditEvent::UserPasswordChanged {
                user: user.clone(),
                other_sessions_ended: ended,
                api_tokens_revoked: tokens,
            };
            audit_user_event(txn, user, &event)
        })
    }
}

// ------------------------------------------------------------------------------ sessions

impl Store {
    /// Start a session and audit the sign-in (`user.signed_in` in `active_org`). Returns the raw
    /// id (256 random bits, base64url) for the cookie; only its SHA-256 is stored. Every call
    /// makes a new id: a sign-in never reuses an earlier one. Expired sessions are purged.
    pub fn create_session(
        &self,
        user: &UserId,
        active_org: Option<&OrgId>,
        now_unix: i64,
        idle_secs: i64,
        absolute_secs: i64,
        factor: SignInFactor,
    ) -> Result<String> {
        let raw = URL_SAFE_NO_PAD.encode(random_bytes(32));
        let hash = session_hash(&raw);
        self.write(|txn| {
            if txn.open_table(USERS)?.get(user.as_str())?.is_none() {
                return Err(StoreError::NotFound("user"));
            }
            purge_expired_in(txn, now_unix, idle_secs)?;
            let org = match active_org {
                Some(o) => match load_org(txn, o) {
                    Ok(org) => Some(org.id),
                    Err(StoreError::NotFound(_)) => None,
                    Err(e) => return Err(e),
                },
                None => None,
            };
            let rec = SessionRecord {
                user: user.clone(),
                active_org: org.clone(),
                created_at_unix: now_unix,
                last_seen_unix: now_unix,
                absolute_expiry_unix: now_unix.saturating_add(absolute_secs),
            };
            let mut sessions = txn.open_table(SESSIONS)?;
            assert!(
                sessions.get(hash.as_str())?.is_none(),
                "256-bit session ids do not collide"
            );
            put_json(&mut sessions, &hash, &rec)?;
            drop(sessions);
            if let Some(org) = &org {
                let event = AuditEvent::UserSignedIn {
                    user: user.clone(),
                    factor,
                };
                let actor = Actor::User(user.clone());
                audit::append(txn, org, &actor, &event, &now().text)?;
            }
            Ok(raw)
        })
    }

    /// The live session for a raw id. An expired one (idle or absolute) is deleted and `None`
    /// returned; a live one has its `last_seen` refreshed (at most every [`SESSION_TOUCH_SECS`]).
    pub fn session(
        &self,
        raw_id: &str,
        now_unix: i64,
        idle_secs: i64,
    ) -> Result<Option<SessionInfo>> {
        let hash = session_hash(raw_id);
        let rec: Option<SessionRecord> = {
            let r = self.read()?;
            get_json(&r.open_table(SESSIONS)?, &hash)?
        };
        let Some(mut rec) = rec else {
            return Ok(None);
        };
        if rec.expired(now_unix, idle_secs) {
            self.end_session(&hash)?;
            return Ok(None);
        }
        if now_unix - rec.last_seen_unix >= SESSION_TOUCH_SECS {
            self.touch_session(&hash, now_unix)?;
            rec.last_seen_unix = now_unix;
        }
        Ok(Some(SessionInfo::new(hash, rec)))
    }

    /// Record a request at `now_unix` on the session `hash`.
    pub fn touch_session(&self, hash: &str, now_unix: i64) -> Result<()> {
        self.write(|txn| {
            let mut sessions = txn.open_table(SESSIONS)?;
            let Some(mut rec): Option<SessionRecord> = get_json(&sessions, hash)? else {
                return Ok(());
            };
            rec.last_seen_unix = rec.last_seen_unix.max(now_unix);
            put_json(&mut sessions, hash, &rec)
        })
    }

    /// End the session `hash` (sign-out). Returns whether it existed.
    pub fn end_session(&self, hash: &str) -> Result<bool> {
        self.write(|txn| txn.open_table(SESSIONS)?.remove(hash))
    }

    /// End every session of `user` but `keep` (a hash). Returns how many ended.
    pub fn end_other_sessions(&self, user: &UserId, keep: Option<&str>) -> Result<usize> {
        self.write(|txn| end_sessions_in(txn, user, keep))
    }

    /// Switch the session's active organization. The user must be a member of an existing
    /// organization, else `NotFound` (never reveal that another tenant exists).
    pub fn set_session_org(&self, hash: &str, org: &OrgId) -> Result<()> {
        self.write(|txn| {
            let mut sessions = txn.open_table(SESSIONS)?;
            let mut rec: SessionRecord =
                get_json(&sessions, hash)?.ok_or(StoreError::NotFound("session"))?;
            load_org(txn, org)?;
            let key = (org.as_str(), rec.user.as_str());
            if txn.open_table(MEMBERS)?.get(key)?.is_none() {
                return Err(StoreError::NotFound("organization"));
            }
            rec.active_org = Some(org.clone());
            put_json(&mut sessions, hash, &rec)
        })
    }
}

// ------------------------------------------------------------------------------ TOTP

impl Store {
    /// Whether the user has 2FA on.
    pub fn totp_enabled(&self, user: &UserId) -> Result<bool> {
        let r = self.read()?;
        Ok(load_secrets(&r.open_table(USER_SECRETS)?, user)?
            .totp
            .is_some())
    }

    /// Store `secret` as the user's pending TOTP secret (sealed; not active until
    /// [`Store::totp_confirm`]). Refused while 2FA is on: disable it first.
    /// Enrolling asks for the password again (blocking: bcrypt), so a borrowed session cannot
    /// bind its own authenticator to the account.
    pub fn totp_begin_setup(&self, user: &UserId, password: &str, secret: &[u8]) -> Result<()> {
        assert!(
            secret.len() >= TOTP_SECRET_MIN_BYTES,
            "TOTP secrets have at least 128 bits"
        );
        if !self.verify_password(user, password)? {
            return Err(StoreError::Invalid("the password is wrong".into()));
        }
        self.write(|txn| {
            if txn.open_table(USERS)?.get(user.as_str())?.is_none() {
                return Err(StoreError::NotFound("user"));
            }
            let mut table = txn.open_table(USER_SECRETS)?;
            let mut s = load_secrets(&table, user)?;
            if s.totp.is_some() {
                return Err(StoreError::Conflict(
                    "two-factor authentication is already on; disable it first".into(),
                ));
            }
            s.totp_pending = Some(self.master.seal(&format!("totp|{user}"), secret));
            put_json(&mut table, user.as_str(), &s)
        })
    }

    /// Activate the pending secret with a code from it; returns the 10 recovery codes, shown
    /// once (only their digests are stored). A wrong code is [`StoreError::Invalid`].
    pub fn totp_confirm(
        &self,
        user: &UserId,
        code: &str,
        now_unix: i64,
        code_at: TotpCodeFn,
    ) -> Result<Vec<String>> {
        self.write(|txn| {
            let mut table = txn.open_table(USER_SECRETS)?;
            let mut s = load_secrets(&table, user)?;
            let pending = s.totp_pending.clone().ok_or_else(|| {
                StoreError::Conflict("start the setup first (POST /api/v1/me/totp/setup)".into())
            })?;
            let secret = self.master.open(&format!("totp|{user}"), &pending)?;
            let step = matching_step(&secret, code, now_unix, s.totp_last_step, code_at)
                .ok_or_else(|| StoreError::Invalid("the code is wrong or expired".into()))?;
            let (codes, digests) = new_recovery_set();
            s.totp = Some(pending);
            s.totp_pending = None;
            s.totp_last_step = Some(step);
            s.recovery = digests;
            put_json(&mut table, user.as_str(), &s)?;
            drop(table);
            audit_user_event(
                txn,
                user,
                &AuditEvent::User2faEnabled { user: user.clone() },
            )?;
            Ok(codes)
        })
    }

    /// Check a TOTP code at `now_unix` (±1 step). Accepting it records its step in the same
    /// transaction, so the same code — or any earlier one — is refused afterwards (replay).
    /// `false` when 2FA is off.
    pub fn totp_verify(
        &self,
        user: &UserId,
        code: &str,
        now_unix: i64,
        code_at: TotpCodeFn,
    ) -> Result<bool> {
        self.write(|txn| self.totp_verify_in(txn, user, code, now_unix, code_at))
    }

    fn totp_verify_in(
        &self,
        txn: &crate::ledger::Tx<'_>,
        user: &UserId,
        code: &str,
        now_unix: i64,
        code_at: TotpCodeFn,
    ) -> Result<bool> {
        let mut table = txn.open_table(USER_SECRETS)?;
        let mut s = load_secrets(&table, user)?;
        let Some(sealed) = &s.totp else {
            return Ok(false);
        };
        let secret = self.master.open(&format!("totp|{user}"), sealed)?;
        let Some(step) = matching_step(&secret, code, now_unix, s.totp_last_step, code_at) else {
            return Ok(false);
        };
        s.totp_last_step = Some(step);
        put_json(&mut table, user.as_str(), &s)?;
        Ok(true)
    }

    /// Spend one recovery code: `true` (and it never works again) when it is one of the
    /// user's unused codes.
    pub fn use_recovery_code(&self, user: &UserId, code: &str) -> Result<bool> {
        self.write(|txn| use_recovery_code_in(txn, user, code))
    }

    /// Turn 2FA off (blocking: bcrypt). Needs the password and a current TOTP code or an unused
    /// recovery code (a lost phone is the usual reason). Removes the secret and the codes.
    pub fn totp_disable(
        &self,
        user: &UserId,
        password: &str,
        code: &str,
        now_unix: i64,
        code_at: TotpCodeFn,
    ) -> Result<()> {
        if !self.verify_password(user, password)? {
            return Err(StoreError::Invalid("wrong password or code".into()));
        }
        self.write(|txn| {
            let s = load_secrets(&txn.open_table(USER_SECRETS)?, user)?;
            if s.totp.is_none() {
                return Err(StoreError::Conflict(
                    "two-factor authentication is not on".into(),
                ));
            }
            let ok = self.totp_verify_in(txn, user, code, now_unix, code_at)?
                || use_recovery_code_in(txn, user, code)?;
            if !ok {
                return Err(StoreError::Invalid("wrong password or code".into()));
            }
            txn.open_table(USER_SECRETS)?.remove(user.as_str())?;
            let tokens = revoke_tokens_in(txn, user, None)?;
            let event = AuditEvent::User2faDisabled {
                user: user.clone(),
                api_tokens_revoked: tokens,
            };
            audit_user_event(txn, user, &event)
        })
    }

    /// A new set of recovery codes (blocking: bcrypt); the old set stops working.
    pub fn regenerate_recovery_codes(&self, user: &UserId, password: &str) -> Result<Vec<String>> {
        if !self.verify_password(user, password)? {
            return Err(StoreError::Invalid("the password is wrong".into()));
        }
        self.write(|txn| {
            let mut table = txn.open_table(USER_SECRETS)?;
            let mut s = load_secrets(&table, user)?;
            if s.totp.is_none() {
                return Err(StoreError::Conflict(
                    "two-factor authentication is not on".into(),
                ));
            }
            let (codes, digests) = new_recovery_set();
            s.recovery = digests;
            put_json(&mut table, user.as_str(), &s)?;
            drop(table);
            let event = AuditEvent::UserRecoveryCodesRegenerated { user: user.clone() };
            audit_user_event(txn, user, &event)?;
            Ok(codes)
        })
    }
}

fn use_recovery_code_in(txn: &crate::ledger::Tx<'_>, user: &UserId, code: &str) -> Result<bool> {
    let mut table = txn.open_table(USER_SECRETS)?;
    let mut s = load_secrets(&table, user)?;
    let presented = recovery_digest(code);
    // Compare against every stored digest (no early exit) so timing says nothing of position.
    let mut hit = None;
    for (i, d) in s.recovery.iter().enumerate() {
        if ct_eq_str(d, &presented) {
            hit = Some(i);
        }
    }
    let Some(i) = hit else {
        return Ok(false);
    };
    s.recovery.remove(i);
    put_json(&mut table, user.as_str(), &s)?;
    Ok(true)
}

// ------------------------------------------------------------------------------ API tokens

impl Store {
    /// Create a personal API token bound to `org` (the creator's active organization, where
    /// they must be a member); returns it with the token, which is not stored (only its
    /// SHA-256) and cannot be shown again. A user has at most [`TOKENS_PER_USER_MAX`].
    pub fn create_user_token(
        &self,
        user: &UserId,
        org: &OrgId,
        name: &str,
    ) -> Result<(UserToken, String)> {
        let name = name.trim();
        if name.is_empty() || name.len() > TOKEN_NAME_MAX_BYTES {
            return Err(StoreError::Invalid(format!(
                "token name must be 1..={TOKEN_NAME_MAX_BYTES} bytes"
            )));
        }
        self.write(|txn| {
            if txn.open_table(USERS)?.get(user.as_str())?.is_none() {
                return Err(StoreError::NotFound("user"));
            }
            load_org(txn, org)?;
            if txn
                .open_table(MEMBERS)?
                .get((org.as_str(), user.as_str()))?
                .is_none()
            {
                return Err(StoreError::NotFound("organization"));
            }
            let mut table = txn.open_table(USER_TOKENS)?;
            let mut held = 0usize;
            for row in table.iter()? {
                let (_, v) = row?;
                let rec: UserTokenRecord = serde_json::from_slice(v.value())?;
                held += usize::from(&rec.user == user);
            }
            if held >= TOKENS_PER_USER_MAX {
                return Err(StoreError::Conflict(format!(
                    "at most {TOKENS_PER_USER_MAX} API tokens per user: revoke one first"
                )));
            }
            let t = now();
            let (id, token) = new_user_token();
            let rec = UserTokenRecord {
                user: user.clone(),
                org: Some(org.clone()),
                name: name.to_string(),
                digest: sha256_hex(&token),
                created_at: t.text.clone(),
            };
            put_json(&mut table, &id, &rec)?;
            drop(table);
            let event = AuditEvent::UserTokenCreated {
                user: user.clone(),
                token_id: id.clone(),
                name: name.to_string(),
            };
            let actor = Actor::User(user.clone());
            audit::append(txn, org, &actor, &event, &t.text)?;
            Ok((UserToken::new(&id, rec), token))
        })
    }

    /// Authenticate a personal API token: look up by its id part, then compare the SHA-256
    /// digest in constant time. `None` for malformed, unknown or revoked tokens, and for any
    /// other kind of token (an agent token never authenticates a human).
    pub fn authenticate_user_token(&self, token: &str) -> Result<Option<UserToken>> {
        let Some(id) = parse_user_token(token) else {
            return Ok(None);
        };
        let r = self.read()?;
        let Some(rec): Option<UserTokenRecord> = get_json(&r.open_table(USER_TOKENS)?, id)? else {
            return Ok(None);
        };
        if !ct_eq_str(&sha256_hex(token), &rec.digest) {
            return Ok(None);
        }
        // A token is bound to one organization; tokens made before binding (no organization)
        // acted in whichever organization came first and no longer authenticate.
        if rec.org.is_none() {
            return Ok(None);
        }
        if r.open_table(USERS)?.get(rec.user.as_str())?.is_none() {
            return Ok(None);
        }
        Ok(Some(UserToken::new(id, rec)))
    }

    /// The user's personal API tokens (without secrets).
    pub fn list_user_tokens(&self, user: &UserId) -> Result<Vec<UserToken>> {
        let r = self.read()?;
        let mut out = Vec::new();
        for row in r.open_table(USER_TOKENS)?.iter()? {
            let (k, v) = row?;
            let rec: UserTokenRecord = serde_json::from_slice(v.value())?;
            if &rec.user == user {
                out.push(UserToken::new(k.value(), rec));
            }
        }
        Ok(out)
    }

    /// Revoke one of the user's tokens (`NotFound` when it is not theirs).
    pub fn revoke_user_token(&self, user: &UserId, id: &str) -> Result<()> {
        self.write(|txn| {
            let mut table = txn.open_table(USER_TOKENS)?;
            let rec: UserTokenRecord =
                get_json(&table, id)?.ok_or(StoreError::NotFound("token"))?;
            if &rec.user != user {
                return Err(StoreError::NotFound("token"));
            }
            table.remove(id)?;
            drop(table);
            if let Some(org) = &rec.org
                && load_org(txn, org).is_ok()
            {
                let event = AuditEvent::UserTokenRevoked {
                    user: user.clone(),
                    token_id: id.to_string(),
                };
                let actor = Actor::User(user.clone());
                audit::append(txn, org, &actor, &event, &now().text)?;
            }
            Ok(())
        })
    }

    /// The user's oldest organization: the default active organization at sign-in.
    pub fn first_org_of(&self, user: &UserId) -> Result<Option<Org>> {
        // The oldest organization, not the first by id (ids are random): a sign-in lands in the
        // same organization every time, whatever other organizations the user created later.
        Ok(self
            .memberships_of(user)?
            .into_iter()
            .map(|(o, _)| o)
            .min_by(|a, b| {
                a.created_at
                    .cmp(&b.created_at)
                    .then_with(|| a.id.cmp(&b.id))
            }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MasterKey;
    use serde_json::Value;

    const PASSWORD: &str = "correct-horse-42";
    /// 2026-11-24T09:15:00Z, a step boundary.
    const T0: i64 = 1_795_511_700;

    /// Stand-in for RFC 6238 (the real one lives in `admin` and is checked against pyotp):
    /// a 6-digit code that depends on the secret and the step.
    fn fake_code(secret: &[u8], step: u64) -> String {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        h.update(secret);
        h.update(step.to_be_bytes());
        let d = h.finalize();
        format!(
            "{:06}",
            u32::from_be_bytes([d[0], d[1], d[2], d[3]]) % 1_000_000
        )
    }

    fn code(step_time: i64) -> String {
        fake_code(SECRET, step_time as u64 / TOTP_STEP_SECS)
    }

    const SECRET: &[u8] = b"0123456789abcdef0123";

    fn store() -> (tempfile::TempDir, Store, Org, User) {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path(), MasterKey::generate()).unwrap();
        let (org, user) = s
            .init_org_with_owner("acme", "Owner@Example.com", PASSWORD)
            .unwrap();
        (dir, s, org, user)
    }

    fn enroll(s: &Store, user: &UserId) -> Vec<String> {
        s.totp_begin_setup(user, PASSWORD, SECRET).unwrap();
        s.totp_confirm(user, &code(T0), T0, fake_code).unwrap()
    }

    fn user_kinds(s: &Store, user: &UserId) -> Vec<String> {
        s.user_audit_page(user, 0, 500)
            .unwrap()
            .iter()
            .map(|e| e["kind"].as_str().unwrap_or_default().to_string())
            .collect()
    }

    fn audit_kinds(s: &Store, org: &OrgId) -> Vec<String> {
        let mut kinds = Vec::new();
        s.audit_export(org, |raw| {
            let v: Value = serde_json::from_slice(raw).unwrap();
            kinds.push(v["kind"].as_str().unwrap().to_string());
            Ok(())
        })
        .unwrap();
        kinds
    }

    #[test]
    fn login_answers_none_for_unknown_email_and_wrong_password() {
        let (_d, s, _o, user) = store();
        assert_eq!(
            s.verify_login("nobody@example.com", PASSWORD)
                .unwrap()
                .map(|u| u.id),
            None
        );
        assert_eq!(
            s.verify_login("owner@example.com", "wrong-pass-1")
                .unwrap()
                .map(|u| u.id),
            None
        );
        let ok = s
            .verify_login(" OWNER@example.com ", PASSWORD)
            .unwrap()
            .unwrap();
        assert_eq!(ok.id, user.id);
        let long = "a1".repeat(37);
        assert!(matches!(
            s.verify_login("owner@example.com", &long),
            Err(StoreError::Invalid(_))
        ));
    }

    #[test]
    fn totp_accepts_skew_of_one_step_and_refuses_two() {
        let (_d, s, _o, user) = store();
        enroll(&s, &user.id);
        let now = T0 + 300;
        assert!(
            !s.totp_verify(&user.id, &code(now - 60), now, fake_code)
                .unwrap(),
            "t-2"
        );
        assert!(
            !s.totp_verify(&user.id, &code(now + 60), now, fake_code)
                .unwrap(),
            "t+2"
        );
        assert!(
            s.totp_verify(&user.id, &code(now - 30), now, fake_code)
                .unwrap(),
            "t-1"
        );
        let later = now + 300;
        assert!(
            s.totp_verify(&user.id, &code(later + 30), later, fake_code)
                .unwrap(),
            "t+1"
        );
    }

    #[test]
    fn totp_refuses_a_replayed_code_and_earlier_steps() {
        let (_d, s, _o, user) = store();
        enroll(&s, &user.id);
        let now = T0 + 600;
        assert!(s.totp_verify(&user.id, &code(now), now, fake_code).unwrap());
        assert!(
            !s.totp_verify(&user.id, &code(now), now, fake_code).unwrap(),
            "same code"
        );
        assert!(
            !s.totp_verify(&user.id, &code(now), now + 29, fake_code)
                .unwrap(),
            "same window"
        );
        assert!(
            !s.totp_verify(&user.id, &code(now - 30), now, fake_code)
                .unwrap(),
            "older step"
        );
        assert!(
            s.totp_verify(&user.id, &code(now + 30), now + 30, fake_code)
                .unwrap(),
            "next"
        );
        // The confirm code itself was recorded: it cannot be replayed at sign-in.
        let (_d2, s2, _o2, u2) = store();
        enroll(&s2, &u2.id);
        assert!(
            !s2.totp_verify(&u2.id, &code(T0), T0 + 1, fake_code)
                .unwrap()
        );
    }

    #[test]
    fn totp_refuses_malformed_codes_and_users_without_2fa() {
        let (_d, s, _o, user) = store();
        assert!(
            !s.totp_verify(&user.id, &code(T0), T0, fake_code).unwrap(),
            "not enrolled"
        );
        s.totp_begin_setup(&user.id, PASSWORD, SECRET).unwrap();
        assert!(!s.totp_enabled(&user.id).unwrap(), "pending is not active");
        assert!(
            !s.totp_verify(&user.id, &code(T0), T0, fake_code).unwrap(),
            "pending"
        );
        assert!(matches!(
            s.totp_confirm(&user.id, "000000x", T0, fake_code),
            Err(StoreError::Invalid(_))
        ));
        s.totp_confirm(&user.id, &code(T0), T0, fake_code).unwrap();
        assert!(s.totp_enabled(&user.id).unwrap());
        let now = T0 + 90;
        for bad in ["", "12345", "1234567", " 123456", "abcdef"] {
            assert!(
                !s.totp_verify(&user.id, bad, now, fake_code).unwrap(),
                "{bad:?}"
            );
        }
        assert!(matches!(
            s.totp_begin_setup(&user.id, PASSWORD, SECRET),
            Err(StoreError::Conflict(_))
        ));
    }

    #[test]
    fn totp_secret_is_sealed_at_rest() {
        let (_d, s, _o, user) = store();
        enroll(&s, &user.id);
        let r = s.read().unwrap();
        let raw = r.open_table(USER_SECRETS).unwrap();
        let bytes = raw.get(user.id.as_str()).unwrap().unwrap().value().to_vec();
        let text = String::from_utf8(bytes).unwrap();
        assert!(!text.contains("0123456789abcdef"), "{text}");
        assert!(!text.contains(&hex::encode(SECRET)), "{text}");
    }

    #[test]
    fn recovery_codes_work_once_and_regeneration_voids_the_old_set() {
        let (_d, s, org, user) = store();
        let codes = enroll(&s, &user.id);
        assert_eq!(codes.len(), RECOVERY_CODES);
        let distinct: std::collections::BTreeSet<_> = codes.iter().collect();
        assert_eq!(distinct.len(), RECOVERY_CODES);
        assert!(
            codes
                .iter()
                .all(|c| c.len() == 11 && c.as_bytes()[5] == b'-')
        );
        assert!(s.use_recovery_code(&user.id, &codes[0]).unwrap());
        assert!(
            !s.use_recovery_code(&user.id, &codes[0]).unwrap(),
            "second use"
        );
        assert!(
            s.use_recovery_code(&user.id, &codes[1].to_uppercase())
                .unwrap(),
            "case"
        );
        assert!(!s.use_recovery_code(&user.id, "aaaaa-aaaaa").unwrap());
        assert!(matches!(
            s.regenerate_recovery_codes(&user.id, "wrong-pass-1"),
            Err(StoreError::Invalid(_))
        ));
        let fresh = s.regenerate_recovery_codes(&user.id, PASSWORD).unwrap();
        assert!(
            !s.use_recovery_code(&user.id, &codes[2]).unwrap(),
            "old set"
        );
        assert!(s.use_recovery_code(&user.id, &fresh[9]).unwrap());
        // A user's credential events are theirs: in their own trail, never in an organization's.
        let kinds = user_kinds(&s, &user.id);
        assert!(kinds.contains(&"user.2fa_enabled".to_string()), "{kinds:?}");
        assert!(
            kinds.contains(&"user.recovery_codes_regenerated".to_string()),
            "{kinds:?}"
        );
        assert!(s.user_audit_verify(&user.id).unwrap().is_ok());
        let org_kinds = audit_kinds(&s, &org.id);
        assert!(
            !org_kinds.iter().any(|k| k.starts_with("user.")),
            "{org_kinds:?}"
        );
        assert!(s.audit_verify(&org.id).unwrap().is_ok());
    }

    #[test]
    fn totp_disable_needs_password_and_a_code() {
        let (_d, s, _o, user) = store();
        let codes = enroll(&s, &user.id);
        let now = T0 + 120;
        assert!(matches!(
            s.totp_disable(&user.id, "wrong-pass-1", &code(now), now, fake_code),
            Err(StoreError::Invalid(_))
        ));
        assert!(matches!(
            s.totp_disable(&user.id, PASSWORD, "000000", now, fake_code),
            Err(StoreError::Invalid(_))
        ));
        assert!(s.totp_enabled(&user.id).unwrap());
        s.totp_disable(&user.id, PASSWORD, &codes[3], now, fake_code)
            .unwrap();
        assert!(!s.totp_enabled(&user.id).unwrap());
        assert!(
            !s.use_recovery_code(&user.id, &codes[4]).unwrap(),
            "codes went with it"
        );
        enroll(&s, &user.id);
        s.totp_disable(&user.id, PASSWORD, &code(now), now, fake_code)
            .unwrap();
        assert!(!s.totp_enabled(&user.id).unwrap());
    }

    #[test]
    fn sessions_expire_when_idle_and_at_the_absolute_limit() {
        let (_d, s, org, user) = store();
        let (idle, absolute) = (600, 3600);
        let raw = s
            .create_session(
                &user.id,
                Some(&org.id),
                T0,
                idle,
                absolute,
                SignInFactor::Password,
            )
            .unwrap();
        assert_eq!(URL_SAFE_NO_PAD.decode(&raw).unwrap().len(), 32);
        let info = s.session(&raw, T0 + 500, idle).unwrap().unwrap();
        assert_eq!(info.user, user.id);
        assert_eq!(info.active_org.as_ref(), Some(&org.id));
        assert_eq!(info.hash, session_hash(&raw));
        assert_eq!(info.last_seen_unix, T0 + 500, "touched");
        // Kept alive by use every 500 s, it still ends at the absolute limit.
        for t in [
            T0 + 1000,
            T0 + 1500,
            T0 + 2000,
            T0 + 2500,
            T0 + 3000,
            T0 + 3500,
        ] {
            assert!(s.session(&raw, t, idle).unwrap().is_some(), "{t}");
        }
        assert!(
            s.session(&raw, T0 + 3600, idle).unwrap().is_none(),
            "absolute"
        );
        assert!(
            s.session(&raw, T0 + 3500, idle).unwrap().is_none(),
            "deleted"
        );

        let raw2 = s
            .create_session(&user.id, None, T0, idle, absolute, SignInFactor::Password)
            .unwrap();
        assert_ne!(raw, raw2);
        assert!(
            s.session(&raw2, T0 + idle, idle).unwrap().is_some(),
            "at the idle limit"
        );
        assert!(
            s.session(&raw2, T0 + 2 * idle + 1, idle).unwrap().is_none(),
            "idle"
        );
        assert!(
            s.session(&raw2, T0 + 10, idle).unwrap().is_none(),
            "deleted"
        );
        assert!(s.session("not-a-session", T0, idle).unwrap().is_none());
    }

    #[test]
    fn sign_in_is_audited_in_the_active_org_and_logout_ends_the_session() {
        let (_d, s, org, user) = store();
        let raw = s
            .create_session(&user.id, Some(&org.id), T0, 600, 3600, SignInFactor::Totp)
            .unwrap();
        assert_eq!(
            audit_kinds(&s, &org.id).last().map(String::as_str),
            Some("user.signed_in")
        );
        assert!(s.end_session(&session_hash(&raw)).unwrap());
        assert!(s.session(&raw, T0 + 1, 600).unwrap().is_none());
        assert!(s.audit_verify(&org.id).unwrap().is_ok());
    }

    #[test]
    fn password_change_ends_other_sessions_only() {
        let (_d, s, org, user) = store();
        let now = now().unix;
        let mk = || {
            s.create_session(
                &user.id,
                Some(&org.id),
                now,
                600,
                3600,
                SignInFactor::Password,
            )
            .unwrap()
        };
        let (mine, other) = (mk(), mk());
        let keep = session_hash(&mine);
        assert!(matches!(
            s.change_password(&user.id, "wrong-pass-1", "new-password-7", Some(&keep)),
            Err(StoreError::Invalid(_))
        ));
        for bad in [
            "short-1",
            "no-digits-at-all",
            &format!("a1{}", "x".repeat(71)),
        ] {
            assert!(matches!(
                s.change_password(&user.id, PASSWORD, bad, Some(&keep)),
                Err(StoreError::Invalid(_))
            ));
        }
        assert!(
            s.session(&other, now, 600).unwrap().is_some(),
            "nothing changed yet"
        );
        s.change_password(&user.id, PASSWORD, "new-password-7", Some(&keep))
            .unwrap();
        assert!(s.session(&mine, now, 600).unwrap().is_some());
        assert!(s.session(&other, now, 600).unwrap().is_none());
        assert!(
            s.verify_login("owner@example.com", PASSWORD)
                .unwrap()
                .is_none()
        );
        assert!(
            s.verify_login("owner@example.com", "new-password-7")
                .unwrap()
                .is_some()
        );
    }

    #[test]
    fn session_org_switch_needs_membership() {
        let (_d, s, org, user) = store();
        let (other_org, _) = {
            let o = s
                .create_org("other", &Actor::System("test".into()))
                .unwrap();
            (o, ())
        };
        let raw = s
            .create_session(
                &user.id,
                Some(&org.id),
                T0,
                600,
                3600,
                SignInFactor::Password,
            )
            .unwrap();
        let h = session_hash(&raw);
        assert!(matches!(
            s.set_session_org(&h, &other_org.id),
            Err(StoreError::NotFound(_))
        ));
        assert!(matches!(
            s.set_session_org(&h, &OrgId::generate()),
            Err(StoreError::NotFound(_))
        ));
        s.set_session_org(&h, &org.id).unwrap();
    }

    #[test]
    fn user_tokens_authenticate_by_digest_and_can_be_revoked() {
        let (_d, s, org, user) = store();
        let (t, token) = s.create_user_token(&user.id, &org.id, "ci").unwrap();
        assert!(token.starts_with("pg_user_"));
        assert_eq!(parse_user_token(&token), Some(t.id.as_str()));
        let got = s.authenticate_user_token(&token).unwrap().unwrap();
        assert_eq!((got.user, got.org), (user.id.clone(), Some(org.id.clone())));
        // Same id, different secret: the digest comparison refuses it.
        let forged = format!("pg_user_{}_{}", t.id, "0".repeat(64));
        assert!(s.authenticate_user_token(&forged).unwrap().is_none());
        assert!(
            s.authenticate_user_token(&token.replace("pg_user_", "pg_agent_"))
                .unwrap()
                .is_none()
        );
        assert!(
            s.authenticate_user_token(&format!("{token}0"))
                .unwrap()
                .is_none()
        );
        let stored = s
            .read()
            .unwrap()
            .open_table(USER_TOKENS)
            .unwrap()
            .get(t.id.as_str())
            .unwrap()
            .unwrap()
            .value()
            .to_vec();
        assert!(
            !String::from_utf8(stored).unwrap().contains(&token[24..]),
            "secret not stored"
        );
        assert_eq!(s.list_user_tokens(&user.id).unwrap(), vec![t.clone()]);
        assert!(matches!(
            s.revoke_user_token(&UserId::generate(), &t.id),
            Err(StoreError::NotFound(_))
        ));
        s.revoke_user_token(&user.id, &t.id).unwrap();
        assert!(s.authenticate_user_token(&token).unwrap().is_none());
        assert!(matches!(
            s.create_user_token(&user.id, &org.id, "  "),
            Err(StoreError::Invalid(_))
        ));
    }
}
