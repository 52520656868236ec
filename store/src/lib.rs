//! Durable state of Payment Guard on redb: organizations, users, agents, policy versions, caps,
//! rail keys, intents, idempotency records, spend counters and the per-organization audit hash
//! chain. Every function that touches tenant data takes an [`OrgId`]; tenant keys start with it.
//!
//! A decision is one serializable write transaction (idempotency lookup, spend read, verdict,
//! intent, reservation, audit event), committed durably before the caller acts on it
//! ([`Store::decide`]); the upstream result is a second one ([`Store::settle`]).

mod admin_idempotency;
mod agents;
mod audit;
mod audit_event;
mod audit_record;
mod audit_trail;
mod caps;
mod crypto;
mod error;
mod events;
mod files;
mod humans;
mod ids;
mod invitations;
mod jcs;
mod ledger;
mod members;
mod metrics;
mod model;
mod orgs;
mod policy_versions;
mod rail;
mod rekey;
mod stats;
mod tables;
mod time_util;
mod users;
mod webhooks;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use redb::ReadableDatabase;

pub use admin_idempotency::{
    ADMIN_IDEMPOTENCY_ANSWER_MAX_BYTES, ADMIN_IDEMPOTENCY_KEYS_PER_USER_MAX,
    ADMIN_IDEMPOTENCY_STALE_SECS, ADMIN_IDEMPOTENCY_TTL_SECS, AdminAnswer, AdminClaim,
    AdminKeyScope, admin_request_digest,
};
pub use agents::AuthedAgent;
pub use audit::{AuditHead, GENESIS, VerifyReport, check_event};
pub use audit_event::{
    AuditEvent, CapChange, DecisionEvent, HumanDecision, MemberAdded, UnknownCause, UpstreamResult,
};
pub use caps::CapPatch;
pub use caps::CapSpec;
pub use crypto::{
    DATA_DIR_KEY_FILE, KeyLocation, MasterKey, check_key_file, load_master_key, replace_key_file,
    write_key_file,
};
pub use error::{Result, StoreError};
pub use events::{Approvals, IntentEvents, Subscription};

/// Entry points for `fuzz/` (not an API): the decoders of stored records, which must refuse
/// damage without panicking or allocating without bound.
#[doc(hidden)]
pub mod fuzzing {
    /// Decode `bytes` as an intent, an idempotency record and a compact audit event.
    pub fn stored_record(bytes: &[u8]) {
        let _ = crate::ledger::record::decode_intent(bytes);
        let _ = crate::ledger::record::decode_idempotency(bytes);
        let line =
            crate::audit_record::expand(bytes, "org_0123456789abcdef01234567", 1, crate::GENESIS);
        let _ = crate::check_event(&line, 1, crate::GENESIS);
    }
}
pub use files::{DATA_DIR_MODE, DATA_FILE_MODE, secure_data_dir};
pub use humans::{
    PASSWORD_MAX_BYTES, RECOVERY_CODES, SessionInfo, SignInFactor, TOKENS_PER_USER_MAX,
    TOTP_DIGITS, TOTP_SKEW_STEPS, TOTP_STEP_SECS, TotpCodeFn, UserToken, session_hash,
};
pub use ids::{Actor, AgentId, CapId, IntentId, OrgId, UserId};
pub use invitations::{
    Accepted, INVITATION_TTL_SECS, InvitationStatus, InvitationView, SecondFactorCheck,
};
pub use ledger::approvals::{Claim, HumanVerdict};
pub use ledger::decide::{Decision, DecisionRequest, UpstreamOutcome};
pub use ledger::wal::WAL_FILE;
pub use ledger::{Applied, Command, Committer, Pruned, WriterLimits};
pub use members::{MemberView, PersonRef};
pub use metrics::{COMMIT_BUCKETS_US, StoreMetrics, StoreMetricsSnapshot};
pub use model::{
    Agent, AgentStatus, Approval, Intent, IntentAmount, IntentStatus, Membership, Org,
    PolicyVersion, RailInfo, Reservation, Role, StoredResponse, User,
};
pub use rekey::RekeyReport;
pub use stats::TableUsage;
pub use time_util::{Clock, now};
pub use users::validate_password;
pub use webhooks::{
    Attempt, Delivery, DueDelivery, EVENT_TYPES, RetryPolicy, WebhookEndpoint, check_url_shape,
    now_ms,
};

use policies::CompiledPolicies;

/// File name of the database inside the data directory.
pub const DB_FILE: &str = "guard.redb";

/// How the store is opened (`[store]` of the configuration). [`StoreOptions::default`] is what
/// [`Store::open`] uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreOptions {
    /// redb's page cache, MiB. redb's own default (1 GiB) would let a sidecar's resident memory
    /// grow to a gigabyte under load; reads missing the cache go to the OS page cache instead.
    pub cache_mb: u64,
}

impl StoreOptions {
    /// Default of `store.cache_mb`.
    pub const DEFAULT_CACHE_MB: u64 = 64;
    /// Smallest accepted `store.cache_mb`.
    pub const CACHE_MB_MIN: u64 = 8;
    /// Largest accepted `store.cache_mb` (64 GiB).
    pub const CACHE_MB_MAX: u64 = 65_536;

    /// The cache size in bytes, or an error naming the accepted range.
    fn cache_bytes(&self) -> Result<usize> {
        if !(Self::CACHE_MB_MIN..=Self::CACHE_MB_MAX).contains(&self.cache_mb) {
            return Err(StoreError::Invalid(format!(
                "store.cache_mb must be {}..={}, not {}",
                Self::CACHE_MB_MIN,
                Self::CACHE_MB_MAX,
                self.cache_mb
            )));
        }
        usize::try_from(self.cache_mb * 1024 * 1024)
            .map_err(|_| StoreError::Invalid("store.cache_mb does not fit in memory".into()))
    }
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            cache_mb: Self::DEFAULT_CACHE_MB,
        }
    }
}

/// The open store. Cheap to share behind an `Arc`; redb serializes write transactions.
pub struct Store {
    db: redb::Database,
    master: MasterKey,
    /// Compiled policy sets by (org, version): parsed and validated once, shared.
    policy_cache: Mutex<HashMap<(OrgId, u64), Arc<CompiledPolicies>>>,
    path: PathBuf,
    /// The writer's log, taken by the first [`Committer`] started on this store.
    wal: Mutex<Option<ledger::wal::Wal>>,
    /// Set when a log append failed: the log's state is unknown (a failed fsync cannot be
    /// retried safely), so nothing is written any more until a restart recovers.
    poisoned: AtomicBool,
    /// Bumped by every control-plane commit, under redb's write lock, before it commits: the
    /// writer's hot state is valid while this stays what it was filled under (ledger/hot.rs).
    control_generation: std::sync::atomic::AtomicU64,
    /// Control-plane records the writer reads on every decision, decoded once.
    hot: Mutex<ledger::hot::Hot>,
    /// Commit statistics.
    pub metrics: StoreMetrics,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Open (or create) the store in `data_dir`. Fails with [`StoreError::Locked`] when another
    /// process has it open, and with [`StoreError::WrongMasterKey`] when `master` is not the key
    /// its secrets are sealed with. The directory is made 0700 and its files 0600 (files.rs).
    /// Default [`StoreOptions`]; see [`Store::open_with`].
    pub fn open(data_dir: &Path, master: MasterKey) -> Result<Store> {
        Store::open_with(data_dir, master, &StoreOptions::default())
    }

    /// [`Store::open`] with explicit options (the redb cache size).
    pub fn open_with(data_dir: &Path, master: MasterKey, options: &StoreOptions) -> Result<Store> {
        let cache_bytes = options.cache_bytes()?;
        files::secure_data_dir(data_dir)?;
        let path = data_dir.join(DB_FILE);
        files::ensure_private_file(&path)?;
        files::ensure_private_file(&data_dir.join(ledger::wal::WAL_FILE))?;
        let db = redb::Builder::new()
            .set_cache_size(cache_bytes)
            .create(&path)
            .map_err(|e| match e {
                redb::DatabaseError::DatabaseAlreadyOpen => {
                    StoreError::Locked(data_dir.display().to_string())
                }
                other => StoreError::Db(other.to_string()),
            })?;
        let txn = db.begin_write()?;
        tables::create_all(&txn)?;
        let moved = tables::migrate_typed_keys(&txn)?;
        txn.commit()?;
        if moved > 0 {
            tracing::info!(rows = moved, "control-plane records moved to typed keys");
        }
        // Recovery before anything reads the store: the batches the writer's log holds and
        // redb's durable state does not (wal.rs).
        let wal_path = data_dir.join(ledger::wal::WAL_FILE);
        let next_lsn = ledger::wal::replay(&db, &wal_path)?;
        let wal = ledger::wal::Wal::open(&wal_path, next_lsn)?;
        let store = Store {
            db,
            master,
            policy_cache: Mutex::new(HashMap::new()),
            path,
            wal: Mutex::new(Some(wal)),
            poisoned: AtomicBool::new(false),
            control_generation: std::sync::atomic::AtomicU64::new(0),
            hot: Mutex::new(ledger::hot::Hot::default()),
            metrics: StoreMetrics::default(),
        };
        store.check_or_record_master_key()?;
        Ok(store)
    }

    /// Whether a failed log append stopped all writes (see [`Store::write`]); a restart recovers.
    pub fn is_poisoned(&self) -> bool {
        self.poisoned.load(Ordering::SeqCst)
    }

    fn poison(&self) {
        self.poisoned.store(true, Ordering::SeqCst);
    }

    fn check_poisoned(&self) -> Result<()> {
        if self.is_poisoned() {
            return Err(StoreError::Db(
                "the store stopped writing after a failed log write; restart the guard".into(),
            ));
        }
        Ok(())
    }

    /// Path of the database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Run `f` in one durable control-plane write transaction; commit only when it returns
    /// `Ok`. It may not write ledger tables (intents, idempotency, spend): those change only
    /// through a [`Command`] on the writer thread (ledger/tx.rs).
    pub(crate) fn write<T>(&self, f: impl FnOnce(&ledger::Tx<'_>) -> Result<T>) -> Result<T> {
        let started = std::time::Instant::now();
        let txn = self.db.begin_write()?;
        // Checked under redb's write lock: the writer may have poisoned the store while this
        // thread waited for it.
        self.check_poisoned()?;
        let tx = ledger::Tx::control(&txn);
        let out = f(&tx)?;
        // Before the commit, under the write lock: the writer's next transaction sees it.
        if tx.hot_written() {
            self.control_generation.fetch_add(1, Ordering::SeqCst);
        }
        drop(tx);
        txn.commit()?;
        self.metrics.record_commit(1, started.elapsed());
        Ok(out)
    }

    /// A read transaction.
    pub(crate) fn read(&self) -> Result<redb::ReadTransaction> {
        Ok(self.db.begin_read()?)
    }
}

pub use crypto::load_or_create_master_key;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_size_is_bounded_and_checked_before_anything_is_created() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        for cache_mb in [0, 7, 65_537] {
            let err = Store::open_with(&data, MasterKey::generate(), &StoreOptions { cache_mb })
                .unwrap_err();
            assert_eq!(
                err.to_string(),
                format!("invalid: store.cache_mb must be 8..=65536, not {cache_mb}")
            );
        }
        assert!(!data.exists());
        let store =
            Store::open_with(&data, MasterKey::generate(), &StoreOptions { cache_mb: 8 }).unwrap();
        assert!(store.path().exists());
        assert_eq!(StoreOptions::default().cache_mb, 64);
    }
}
