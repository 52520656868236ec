//! `Idempotency-Key` records of admin API mutations (ADMIN_API.md "Mutations and step-up"):
//! the proxy's semantics (PROXY.md step 3) for humans. A key is scoped to the signed-in user
//! and the organization the request acts in; the first request with it claims it, and its
//! answer is kept, sealed under the master key, for 24 hours.
//!
//! One table, [`ADMIN_IDEMPOTENCY`], keyed `(org, user, sha256(key))` (no organization for a
//! user without one). A record is either `in_progress` (claimed by a request
//! still running) or `done` (the answer, sealed). The claim is one write transaction, so two
//! concurrent requests with one key can never both run.

use std::sync::LazyLock;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::Store;
use crate::error::{Result, StoreError};
use crate::ids::{OrgId, UserId, random_hex};
use crate::tables::{ADMIN_IDEMPOTENCY, S, get_rec, put_rec};
use crate::time_util::now;

/// How long an answer is kept and replayed (ADMIN_API.md: the proxy's "at least 24 h").
pub const ADMIN_IDEMPOTENCY_TTL_SECS: i64 = 24 * 3600;
/// Records kept per (organization, user); the oldest finished ones are dropped beyond it.
pub const ADMIN_IDEMPOTENCY_KEYS_PER_USER_MAX: usize = 1000;
/// A claim older than this whose request never finished is reported as of unknown outcome,
/// never run again (admin requests take milliseconds; this only bounds a lost record).
pub const ADMIN_IDEMPOTENCY_STALE_SECS: i64 = 300;
/// Largest answer kept (admin mutation answers are small JSON documents).
pub const ADMIN_IDEMPOTENCY_ANSWER_MAX_BYTES: usize = 1024 * 1024;
/// Expired records of every user are swept at most this often.
const SWEEP_EVERY_SECS: i64 = 3600;

/// Tells a claim made by this process from one made by a process that has since stopped.
static INSTANCE: LazyLock<String> = LazyLock::new(|| random_hex(16));
/// Unix second of the last full sweep of expired records (0: never).
static LAST_SWEEP: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(0);

/// Whose key it is: the principal and the organization the request acts in.
#[derive(Clone, Debug)]
pub struct AdminKeyScope {
    /// The active organization, if the user has one.
    pub org: Option<OrgId>,
    /// The signed-in user.
    pub user: UserId,
    /// The client's `Idempotency-Key` (validated by the caller).
    pub key: String,
}

/// A row's key, owned: `(org, user, hex sha256 of the client's key)`.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Row {
    org: Option<String>,
    user: String,
    digest: String,
}

impl Row {
    /// The typed key of [`ADMIN_IDEMPOTENCY`].
    fn key(&self) -> (Option<&str>, &str, &str) {
        (self.org.as_deref(), &self.user, &self.digest)
    }
}

impl AdminKeyScope {
    /// The row key: the client's key enters hashed, so the row key has a fixed shape whatever
    /// bytes the client chose.
    fn row(&self) -> Row {
        Row {
            org: self.org.as_ref().map(|o| o.to_string()),
            user: self.user.to_string(),
            digest: hex::encode(Sha256::digest(&self.key)),
        }
    }

    /// Associated data of the sealed answer: it opens only under this row. Its text is the
    /// row's key as it was stored before typed keys (`{org or -}|{user}|{digest}`), so answers
    /// sealed then still open.
    fn seal_context(&self) -> String {
        let r = self.row();
        seal_context_of(r.key())
    }
}

/// The sealing context of the answer stored under `key` (also master key rotation, rekey.rs).
pub(crate) fn seal_context_of((org, user, digest): (Option<&str>, &str, &str)) -> String {
    format!("admin-idempotency|{}|{user}|{digest}", org.unwrap_or("-"))
}

/// An answer as kept for replay.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdminAnswer {
    /// HTTP status.
    pub status: u16,
    /// The headers that belong to the answer (`Content-Type`, `Location`), in order.
    pub headers: Vec<(String, String)>,
    /// The body bytes.
    #[serde(with = "crate::model::b64")]
    pub body: Vec<u8>,
}

/// What a claim found.
#[derive(Debug, PartialEq, Eq)]
pub enum AdminClaim {
    /// The key is new (or its record expired): run the request, then
    /// [`Store::complete_admin_key`] or [`Store::release_admin_key`].
    Claimed,
    /// Same key, same request, finished: its answer.
    Replay(AdminAnswer),
    /// Same key, different method, path, query or body.
    Reused,
    /// Same key, and the first request is still running.
    InProgress,
    /// The first request started but its end was never recorded (the guard stopped while it
    /// ran): whether it acted is unknown, so it is not run again.
    OutcomeUnknown,
}

#[derive(Serialize, Deserialize)]
struct Record {
    request_digest: String,
    created_at_unix: i64,
    #[serde(flatten)]
    state: State,
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
enum State {
    InProgress {
        instance: String,
    },
    /// The answer, sealed ([`crate::MasterKey::seal`]): it may hold a secret shown once.
    Done {
        sealed: String,
    },
}

/// SHA-256 over method, path, query and body: "the same request" (PROXY.md step 3).
pub fn admin_request_digest(method: &str, path: &str, query: &str, body: &[u8]) -> String {
    crate::ledger::decide::request_digest(method, path, query, "", body)
}

impl Store {
    /// Claim `scope`'s key for a request with `digest`, or find what an earlier request with
    /// it left. One write transaction: of two concurrent requests, exactly one claims.
    ///
    /// Only a digest keyed with the master key is stored: a request body may hold a password
    /// (`/me/password`, `/me/totp/setup`), and a plain SHA-256 of it in a copied data
    /// directory would be an offline guess away from it. A rotated master key therefore turns a
    /// replay of an older request into `Reused` (refused), never into a second execution.
    pub fn claim_admin_key(&self, scope: &AdminKeyScope, digest: &str) -> Result<AdminClaim> {
        let keyed = self
            .master
            .keyed_digest("admin-idempotency-digest", digest.as_bytes());
        let digest = keyed.as_str();
        let clock = now();
        let sweep = sweep_due(clock.unix);
        let row = scope.row();
        self.write(|txn| {
            let mut t = txn.open_table(ADMIN_IDEMPOTENCY)?;
            if sweep {
                remove_expired(&mut t, None, clock.unix)?;
            }
            let existing: Option<Record> = get_rec(&t, row.key())?;
            if let Some(rec) = existing.filter(|r| !expired(r, clock.unix)) {
                return self.found(scope, rec, digest, clock.unix);
            }
            make_room(&mut t, (row.org.as_deref(), &row.user), clock.unix)?;
            let rec = Record {
                request_digest: digest.to_string(),
                created_at_unix: clock.unix,
                state: State::InProgress {
                    instance: INSTANCE.clone(),
                },
            };
            put_rec(&mut t, row.key(), &rec)?;
            Ok(AdminClaim::Claimed)
        })
    }

    fn found(
        &self,
        scope: &AdminKeyScope,
        rec: Record,
        digest: &str,
        now: i64,
    ) -> Result<AdminClaim> {
        if rec.request_digest != digest {
            return Ok(AdminClaim::Reused);
        }
        match rec.state {
            State::InProgress { instance }
                if instance == *INSTANCE
                    && now - rec.created_at_unix < ADMIN_IDEMPOTENCY_STALE_SECS =>
            {
                Ok(AdminClaim::InProgress)
            }
            State::InProgress { .. } => Ok(AdminClaim::OutcomeUnknown),
            State::Done { sealed } => {
                let plain = self.master.open(&scope.seal_context(), &sealed)?;
                Ok(AdminClaim::Replay(serde_json::from_slice(&plain)?))
            }
        }
    }

    /// Keep the answer of the request that claimed `scope`'s key, sealed.
    pub fn complete_admin_key(&self, scope: &AdminKeyScope, answer: &AdminAnswer) -> Result<()> {
        if answer.body.len() > ADMIN_IDEMPOTENCY_ANSWER_MAX_BYTES {
            return Err(StoreError::Invalid(format!(
                "an answer over {ADMIN_IDEMPOTENCY_ANSWER_MAX_BYTES} bytes is not kept"
            )));
        }
        let sealed = self
            .master
            .seal(&scope.seal_context(), &serde_json::to_vec(answer)?);
        let row = scope.row();
        self.write(|txn| {
            let mut t = txn.open_table(ADMIN_IDEMPOTENCY)?;
            let Some(mut rec) = get_rec::<_, Record>(&t, row.key())? else {
                return Err(StoreError::NotFound("idempotency claim"));
            };
            if !matches!(rec.state, State::InProgress { .. }) {
                return Err(StoreError::Conflict(
                    "the key's answer is already kept".into(),
                ));
            }
            rec.state = State::Done { sealed };
            put_rec(&mut t, row.key(), &rec)
        })
    }

    /// Give the key back: the request that claimed it changed nothing (it was refused), so a
    /// retry with the same key runs.
    pub fn release_admin_key(&self, scope: &AdminKeyScope) -> Result<()> {
        let row = scope.row();
        self.write(|txn| {
            let mut t = txn.open_table(ADMIN_IDEMPOTENCY)?;
            let claimed = matches!(
                get_rec::<_, Record>(&t, row.key())?,
                Some(Record {
                    state: State::InProgress { .. },
                    ..
                })
            );
            if claimed {
                t.remove(row.key())?;
            }
            Ok(())
        })
    }

    /// Records kept for `org` (tests and operators: the table stays bounded).
    pub fn admin_key_count(&self, org: &OrgId) -> Result<usize> {
        let txn = self.read()?;
        let t = txn.open_table(ADMIN_IDEMPOTENCY)?;
        let mut n = 0;
        for row in t.range((Some(org.as_str()), "", "")..)? {
            if row?.0.value().0 != Some(org.as_str()) {
                break;
            }
            n += 1;
        }
        Ok(n)
    }
}

fn expired(rec: &Record, now: i64) -> bool {
    now - rec.created_at_unix >= ADMIN_IDEMPOTENCY_TTL_SECS
}

fn sweep_due(now: i64) -> bool {
    use std::sync::atomic::Ordering;
    let last = LAST_SWEEP.load(Ordering::Relaxed);
    now - last >= SWEEP_EVERY_SECS
        && LAST_SWEEP
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
}

type RowTable<'t> = crate::ledger::TxTable<'t, (Option<S>, S, S)>;

/// One user's rows in one organization (`None` for the org: the rows of users without one), or
/// with `None` every row; decoded, in key order.
fn rows(t: &RowTable<'_>, of: Option<(Option<&str>, &str)>) -> Result<Vec<(Row, Record)>> {
    use redb::ReadableTable;
    let mut out = Vec::new();
    let start = of.map(|(org, user)| (org, user, ""));
    let range = match start {
        Some(start) => t.range(start..)?,
        None => t.range::<(Option<&str>, &str, &str)>(..)?,
    };
    for row in range {
        let (k, v) = row?;
        let (org, user, digest) = k.value();
        if of.is_some_and(|of| of != (org, user)) {
            break;
        }
        let key = Row {
            org: org.map(str::to_string),
            user: user.to_string(),
            digest: digest.to_string(),
        };
        out.push((key, serde_json::from_slice(v.value())?));
    }
    Ok(out)
}

fn remove_expired(t: &mut RowTable<'_>, of: Option<(Option<&str>, &str)>, now: i64) -> Result<()> {
    for (k, rec) in rows(t, of)? {
        if expired(&rec, now) {
            t.remove(k.key())?;
        }
    }
    Ok(())
}

/// Drop this user's expired records, then the oldest finished ones until one more fits.
fn make_room(t: &mut RowTable<'_>, of: (Option<&str>, &str), now: i64) -> Result<()> {
    remove_expired(t, Some(of), now)?;
    let mut live = rows(t, Some(of))?;
    if live.len() < ADMIN_IDEMPOTENCY_KEYS_PER_USER_MAX {
        return Ok(());
    }
    let excess = live.len() + 1 - ADMIN_IDEMPOTENCY_KEYS_PER_USER_MAX;
    live.retain(|(_, r)| matches!(r.state, State::Done { .. }));
    live.sort_by_key(|(_, r)| r.created_at_unix);
    if live.len() < excess {
        return Err(StoreError::Conflict(
            "too many of your requests are still running; retry shortly".into(),
        ));
    }
    for (k, _) in live.into_iter().take(excess) {
        t.remove(k.key())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MasterKey;

    fn scope(key: &str) -> AdminKeyScope {
        AdminKeyScope {
            org: Some(OrgId::generate()),
            user: UserId::generate(),
            key: key.into(),
        }
    }

    fn answer(body: &str) -> AdminAnswer {
        AdminAnswer {
            status: 201,
            headers: vec![("content-type".into(), "application/json".into())],
            body: body.as_bytes().to_vec(),
        }
    }

    #[test]
    fn claim_then_replay_reuse_and_release() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path(), MasterKey::generate()).unwrap();
        let k = scope("k1");
        assert_eq!(s.claim_admin_key(&k, "d1").unwrap(), AdminClaim::Claimed);
        assert_eq!(s.claim_admin_key(&k, "d1").unwrap(), AdminClaim::InProgress);
        assert_eq!(s.claim_admin_key(&k, "d2").unwrap(), AdminClaim::Reused);
        s.complete_admin_key(&k, &answer(r#"{"token":"pg_agent_secret"}"#))
            .unwrap();
        assert_eq!(
            s.claim_admin_key(&k, "d1").unwrap(),
            AdminClaim::Replay(answer(r#"{"token":"pg_agent_secret"}"#))
        );
        // What is stored is keyed with the master key, never the request's plain digest (a body
        // may hold a password).
        let r = s.read().unwrap();
        let rec: Record = get_rec(&r.open_table(ADMIN_IDEMPOTENCY).unwrap(), k.row().key())
            .unwrap()
            .unwrap();
        assert_ne!(rec.request_digest, "d1");
        assert_eq!(rec.request_digest.len(), 64);
        drop(r);
        // Another user, same key text: their own claim.
        let other = AdminKeyScope {
            user: UserId::generate(),
            ..k.clone()
        };
        assert_eq!(
            s.claim_admin_key(&other, "d1").unwrap(),
            AdminClaim::Claimed
        );
        s.release_admin_key(&other).unwrap();
        assert_eq!(
            s.claim_admin_key(&other, "d2").unwrap(),
            AdminClaim::Claimed
        );
        // Releasing a finished key keeps its answer.
        s.release_admin_key(&k).unwrap();
        assert!(matches!(
            s.claim_admin_key(&k, "d1").unwrap(),
            AdminClaim::Replay(_)
        ));
    }

    #[test]
    fn a_claim_of_a_stopped_process_is_never_run_again() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path(), MasterKey::generate()).unwrap();
        let k = scope("k");
        let keyed = s.master.keyed_digest("admin-idempotency-digest", b"d");
        s.write(|txn| {
            let rec = Record {
                request_digest: keyed.clone(),
                created_at_unix: now().unix,
                state: State::InProgress {
                    instance: "gone".into(),
                },
            };
            put_rec(&mut txn.open_table(ADMIN_IDEMPOTENCY)?, k.row().key(), &rec)
        })
        .unwrap();
        assert_eq!(
            s.claim_admin_key(&k, "d").unwrap(),
            AdminClaim::OutcomeUnknown
        );
    }

    #[test]
    fn records_per_user_are_bounded_and_expire() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path(), MasterKey::generate()).unwrap();
        let base = scope("x");
        let org = base.org.clone().unwrap();
        for i in 0..ADMIN_IDEMPOTENCY_KEYS_PER_USER_MAX + 5 {
            let k = AdminKeyScope {
                key: format!("k{i}"),
                ..base.clone()
            };
            assert_eq!(s.claim_admin_key(&k, "d").unwrap(), AdminClaim::Claimed);
            s.complete_admin_key(&k, &answer("{}")).unwrap();
        }
        assert_eq!(
            s.admin_key_count(&org).unwrap(),
            ADMIN_IDEMPOTENCY_KEYS_PER_USER_MAX
        );
        // An expired record is a new claim, and the stored answer is sealed.
        s.write(|txn| {
            let mut t = txn.open_table(ADMIN_IDEMPOTENCY)?;
            let row = base.row();
            let mut rec: Record = get_rec(&t, row.key())?.unwrap_or(Record {
                request_digest: "d".into(),
                created_at_unix: 0,
                state: State::Done {
                    sealed: String::new(),
                },
            });
            rec.created_at_unix = now().unix - ADMIN_IDEMPOTENCY_TTL_SECS;
            put_rec(&mut t, row.key(), &rec)
        })
        .unwrap();
        assert_eq!(s.claim_admin_key(&base, "d").unwrap(), AdminClaim::Claimed);
    }
}
