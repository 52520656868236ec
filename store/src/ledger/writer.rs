//! Group commit (ARCHITECTURE.md, PERFORMANCE.md): one writer thread owns the write
//! transactions. Decision and settlement jobs arrive on a bounded channel; the writer takes what
//! is queued (up to `max_batch`), runs each job in order inside one transaction — so decisions
//! stay serializable and caps exact — makes the batch durable once, and only then answers every
//! job. A failed commit fails the whole batch closed: every caller gets an error, nothing is
//! forwarded.
//!
//! "Durable once" is one append and one `fdatasync` of the batch's writes to the writer's log
//! (wal.rs) after a redb commit without fsync; every `checkpoint_interval` a batch commits to redb
//! durably instead and the log starts over. The append runs on a second thread (`pg-log-sync`)
//! while the writer runs the next batch, and one `fdatasync` covers every batch queued by then;
//! the syncer answers a batch's jobs only once its record is durable, in commit order, so a
//! batch that read an earlier one's writes is never answered before that one is durable. A
//! failed log append fails its batch closed and poisons the store (a failed fsync cannot be
//! retried safely): every later job and every `Store::write` fails, and readiness reports it,
//! until a restart recovers from redb's durable state and the log's valid records.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use super::tx::{Mode, Tx};
use super::wal::{self, Wal};
use super::{Applied, Command, Pruned, apply};
use crate::Store;
use crate::error::{Result, StoreError};
use crate::ids::{IntentId, OrgId, UserId};
use crate::ledger::approvals::{Claim, HumanVerdict};
use crate::ledger::decide::{Decision, DecisionRequest, UpstreamOutcome};
use crate::model::{Agent, Intent};
use crate::time_util::now;

/// Bounds of the group-commit writer.
#[derive(Clone, Copy, Debug)]
pub struct WriterLimits {
    /// Jobs waiting for the writer before callers wait (back-pressure).
    pub queue_jobs: usize,
    /// Jobs committed together at most.
    pub max_batch: usize,
    /// Longest time between durable redb commits (checkpoints); the log covers the batches in
    /// between, and recovery replays at most this much.
    pub checkpoint_interval: Duration,
    /// Log bytes after which the next batch is a checkpoint.
    pub checkpoint_bytes: u64,
}

impl Default for WriterLimits {
    fn default() -> Self {
        Self {
            queue_jobs: 4096,
            max_batch: 256,
            checkpoint_interval: Duration::from_secs(1),
            checkpoint_bytes: 32 * 1024 * 1024,
        }
    }
}

/// A command and who waits for its result.
struct Job {
    cmd: Command,
    reply: oneshot::Sender<Result<Applied>>,
}

impl Job {
    fn answer(self, result: Result<Applied>) {
        // The caller may have gone (a dropped request): its command is applied all the same.
        let _ = self.reply.send(result);
    }

    fn fail(self, e: StoreError) {
        self.answer(Err(StoreError::Db(e.to_string())));
    }
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Job({})", self.cmd.name())
    }
}

/// Handle to the writer thread: the only way to apply a [`Command`]. Clone freely; the thread
/// stops when every handle is dropped.
#[derive(Clone, Debug)]
pub struct Committer {
    tx: mpsc::Sender<Job>,
    store: Arc<Store>,
}

/// A typed result from an [`Applied`] of another kind: a bug in the writer.
fn mismatch(cmd: &'static str) -> StoreError {
    StoreError::Db(format!(
        "internal: the writer answered {cmd} with another result"
    ))
}

impl Committer {
    /// Start the writer thread for `store`.
    pub fn start(store: Arc<Store>, limits: WriterLimits) -> Committer {
        assert!(
            limits.queue_jobs > 0 && limits.max_batch > 0,
            "writer limits must be positive"
        );
        let (tx, rx) = mpsc::channel(limits.queue_jobs);
        // The first committer of a store owns its log; another one (tests only) commits every
        // batch durably, which is always correct.
        let wal = store.wal.lock().ok().and_then(|mut w| w.take());
        let next_lsn = wal.as_ref().map_or(1, |w| w.next_lsn);
        let log = Log {
            to_sync: wal.map(|w| start_syncer(store.clone(), w)),
            next_lsn,
            logged_bytes: 0,
            last_checkpoint: Instant::now(),
            limits,
        };
        let writer_store = store.clone();
        std::thread::Builder::new()
            .name("pg-writer".into())
            .spawn(move || writer_loop(&writer_store, rx, log))
            .expect("cannot spawn the store writer thread");
        Committer { tx, store }
    }

    /// Apply one command; answered after the batch holding it is durable.
    pub async fn apply(&self, cmd: Command) -> Result<Applied> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Job { cmd, reply })
            .await
            .map_err(|_| StoreError::Db("the store writer stopped".into()))?;
        rx.await
            .map_err(|_| StoreError::Db("the store writer stopped".into()))?
    }

    /// [`Committer::apply`] from a thread that is not a tokio worker (startup, tests, blocking
    /// tasks). Panics when called from inside an async context.
    pub fn apply_blocking(&self, cmd: Command) -> Result<Applied> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .blocking_send(Job { cmd, reply })
            .map_err(|_| StoreError::Db("the store writer stopped".into()))?;
        rx.blocking_recv()
            .map_err(|_| StoreError::Db("the store writer stopped".into()))?
    }

    /// Decide one request. The preparation — the verdict of the policies that do not read
    /// `context`, from a read transaction — runs here, on the caller's thread, so the writer
    /// evaluates only the rest; a stale preparation is detected and redone by the writer.
    pub async fn decide(&self, req: DecisionRequest) -> Result<Decision> {
        let agent = match req.prepared {
            Some(_) => None,
            None => self.store.agent(&req.org, &req.agent).ok().flatten(),
        };
        match agent {
            Some(agent) => self.decide_for(&agent, req).await,
            None => self.submit_decide(req).await,
        }
    }

    /// [`Committer::decide`] for an agent the caller has already read (the proxy's
    /// authentication): the preparation needs no second read of it.
    pub async fn decide_for(&self, agent: &Agent, mut req: DecisionRequest) -> Result<Decision> {
        if req.prepared.is_none() && agent.id == req.agent && agent.org == req.org {
            req.prepared = match self.store.prepare_decision(agent, &req.facts) {
                Ok(p) => p,
                Err(e) => {
                    // The writer evaluates the whole set itself; nothing is lost but time.
                    tracing::warn!(error = %e, "could not prepare the decision");
                    None
                }
            };
        }
        self.submit_decide(req).await
    }

    async fn submit_decide(&self, req: DecisionRequest) -> Result<Decision> {
        match self.apply(Command::Decide(Box::new(req))).await? {
            Applied::Decided(d) => Ok(d),
            _ => Err(mismatch("decide")),
        }
    }

    /// Settle an intent with its upstream outcome.
    pub async fn settle(
        &self,
        org: OrgId,
        intent: IntentId,
        outcome: UpstreamOutcome,
    ) -> Result<Intent> {
        match self
            .apply(Command::Settle {
                org,
                intent,
                outcome,
            })
            .await?
        {
            Applied::Settled(i) => Ok(*i),
            _ => Err(mismatch("settle")),
        }
    }

    /// A human's approval or denial of a hold.
    pub async fn decide_hold(
        &self,
        org: OrgId,
        intent: IntentId,
        user: UserId,
        verdict: HumanVerdict,
        comment: Option<String>,
        stepped_up: bool,
    ) -> Result<Intent> {
        let cmd = Command::DecideHold {
            org,
            intent,
            user,
            verdict,
            comment,
            stepped_up,
        };
        match self.apply(cmd).await? {
            Applied::HoldDecided(i) => Ok(*i),
            _ => Err(mismatch("decide_hold")),
        }
    }

    /// The executor's claim of an approved hold.
    pub async fn claim(&self, org: OrgId, intent: IntentId) -> Result<Claim> {
        match self.apply(Command::Claim { org, intent }).await? {
            Applied::Claimed(c) => Ok(c),
            _ => Err(mismatch("claim")),
        }
    }

    /// Expire at most `max` holds due at `now_unix`.
    pub async fn expire(&self, now_unix: i64, max: usize) -> Result<Vec<IntentId>> {
        match self.apply(Command::Expire { now_unix, max }).await? {
            Applied::Expired(ids) => Ok(ids),
            _ => Err(mismatch("expire")),
        }
    }

    /// At start, before serving: intents left `forwarding` become `unknown`.
    pub fn recover_blocking(&self) -> Result<usize> {
        match self.apply_blocking(Command::Recover)? {
            Applied::Recovered(n) => Ok(n),
            _ => Err(mismatch("recover")),
        }
    }

    /// One round of idempotency-record pruning.
    pub async fn prune(
        &self,
        created_before_unix: i64,
        after: Option<String>,
        max_scan: usize,
    ) -> Result<Pruned> {
        let cmd = Command::Prune {
            created_before_unix,
            after,
            max_scan,
        };
        match self.apply(cmd).await? {
            Applied::Pruned(p) => Ok(p),
            _ => Err(mismatch("prune")),
        }
    }
}

/// The writer's side of the log: batch numbers, when to checkpoint, and the syncer thread that
/// appends and syncs committed batches and then answers their jobs.
struct Log {
    /// `None`: no log (every batch commits durably and is answered by the writer).
    to_sync: Option<std::sync::mpsc::SyncSender<ToSync>>,
    next_lsn: u64,
    /// Bytes of writes handed to the syncer since the last checkpoint.
    logged_bytes: u64,
    last_checkpoint: Instant,
    limits: WriterLimits,
}

impl Log {
    /// A durable commit just happened: the log's batches are all in redb's durable state.
    fn mark_checkpoint(&mut self) {
        self.logged_bytes = 0;
        self.last_checkpoint = Instant::now();
    }

    fn checkpoint_due(&self) -> bool {
        self.to_sync.is_none()
            || self.last_checkpoint.elapsed() >= self.limits.checkpoint_interval
            || self.logged_bytes >= self.limits.checkpoint_bytes
    }
}

/// Jobs run and committed, with what each will be answered.
type Answered = Vec<(Job, Result<Applied>)>;

/// What the writer hands the syncer, in commit order.
enum ToSync {
    /// Batch `lsn` is committed to redb without fsync: log `writes`, sync, then answer.
    Log {
        lsn: u64,
        writes: Vec<u8>,
        jobs: Answered,
    },
    /// A batch committed durably: redb's durable state holds it and every batch before it, so
    /// the log restarts, and batches still waiting for their append need none.
    Checkpointed { jobs: Answered },
    /// Commands refused after a round they were in was aborted: their answers may rest on
    /// batches sent before, so they are given once those are durable.
    After { jobs: Answered },
}

/// A batch's number and its recorded writes.
type LogRecord = (u64, Vec<u8>);

/// Batches committed ahead of the syncer at most (back-pressure on the writer).
const SYNC_QUEUE: usize = 64;

fn start_syncer(store: Arc<Store>, mut wal: Wal) -> std::sync::mpsc::SyncSender<ToSync> {
    let (tx, rx) = std::sync::mpsc::sync_channel::<ToSync>(SYNC_QUEUE);
    std::thread::Builder::new()
        .name("pg-log-sync".into())
        .spawn(move || {
            while let Ok(first) = rx.recv() {
                // Everything queued meanwhile goes into the same write and fdatasync.
                let mut msgs = vec![first];
                while let Ok(m) = rx.try_recv() {
                    msgs.push(m);
                }
                sync_round(&store, &mut wal, msgs);
            }
        })
        .expect("cannot spawn the log sync thread");
    tx
}

fn sync_round(store: &Store, wal: &mut Wal, msgs: Vec<ToSync>) {
    // In commit order: a record to append (a batch) or none (answers that only wait).
    let mut pending: Vec<(Option<LogRecord>, Answered)> = Vec::new();
    for m in msgs {
        match m {
            ToSync::Log { lsn, writes, jobs } => pending.push((Some((lsn, writes)), jobs)),
            ToSync::After { jobs } => pending.push((None, jobs)),
            ToSync::Checkpointed { jobs } => {
                for (_, done) in pending.drain(..) {
                    answer_all(done);
                }
                wal.restart();
                answer_all(jobs);
            }
        }
    }
    if pending.is_empty() {
        return;
    }
    let records: Vec<(u64, &[u8])> = pending
        .iter()
        .filter_map(|(r, _)| r.as_ref().map(|(lsn, w)| (*lsn, w.as_slice())))
        .collect();
    let result = if store.is_poisoned() {
        Err(std::io::Error::other("an earlier log write failed"))
    } else if records.is_empty() {
        Ok(()) // every batch sent before was answered durable in an earlier round
    } else {
        wal.append(&records)
    };
    drop(records);
    match result {
        Ok(()) => {
            for (_, done) in pending {
                answer_all(done);
            }
        }
        Err(e) => {
            store.poison();
            tracing::error!(error = %e, batches = pending.len(),
                "write-ahead log append failed; the batches fail closed and the store stops writing until restart");
            for (_, done) in pending {
                fail_all(
                    done.into_iter().map(|(job, _)| job).collect(),
                    StoreError::Db(format!("write-ahead log: {e}")),
                );
            }
        }
    }
}

fn answer_all(jobs: Answered) {
    for (job, result) in jobs {
        job.answer(result);
    }
}

fn writer_loop(store: &Store, mut rx: mpsc::Receiver<Job>, mut log: Log) {
    while let Some(first) = rx.blocking_recv() {
        let mut batch = vec![first];
        while batch.len() < log.limits.max_batch {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        commit_batch(store, batch, &mut log);
    }
    // Every handle is gone: a last checkpoint, so a clean stop leaves nothing to replay.
    if log.to_sync.is_some()
        && !store.is_poisoned()
        && let Err(e) = checkpoint(store, &mut log)
    {
        tracing::error!(error = %e, "final checkpoint failed; the log is replayed at the next start");
    }
}

/// An empty durable commit: redb's durable state then holds every batch, and the log restarts.
fn checkpoint(store: &Store, log: &mut Log) -> Result<()> {
    let txn = store.db.begin_write()?;
    wal::set_applied_lsn(&txn, log.next_lsn.saturating_sub(1))?;
    txn.commit()?;
    if let Some(tx) = &log.to_sync {
        let _ = tx.send(ToSync::Checkpointed { jobs: Vec::new() });
    }
    log.mark_checkpoint();
    Ok(())
}

/// Run `batch` in one transaction. A job that errors is answered with its error and the others
/// are run again without it in a fresh transaction (its partial writes must not be committed);
/// each round removes at least one job, so this ends.
fn commit_batch(store: &Store, mut batch: Vec<Job>, log: &mut Log) {
    // Commands that failed after writing: answered with the batch that finally commits, or on
    // their own once every batch before them is durable.
    let mut refused: Answered = Vec::new();
    while !batch.is_empty() {
        if let Err(e) = store.check_poisoned() {
            answer_all(refused);
            return fail_all(batch, e);
        }
        let started = Instant::now();
        let clock = now();
        let mut txn = match store.db.begin_write() {
            Ok(t) => t,
            Err(e) => {
                answer_all(refused);
                return fail_all(batch, e.into());
            }
        };
        let checkpoint = log.checkpoint_due();
        if !checkpoint && let Err(e) = txn.set_durability(redb::Durability::None) {
            answer_all(refused);
            return fail_all(batch, StoreError::Db(e.to_string()));
        }
        let tx = Tx::new(&txn, Mode::Ledger);
        let mut answers = Vec::with_capacity(batch.len());
        let mut failed = None;
        for (i, job) in batch.iter().enumerate() {
            let written = tx.log_len();
            match apply(store, &tx, &job.cmd, &clock) {
                Ok(applied) => answers.push(Ok(applied)),
                // Refused before writing anything (a human's decision on a hold that is no
                // longer pending, a settlement of a settled intent): the transaction is as it
                // was, so the refusal is answered with the batch, after it is durable, and the
                // rest of the batch goes on. Every write of a ledger transaction is recorded
                // (tx.rs), so an unchanged log means an unchanged transaction; a storage error
                // still aborts, whatever was recorded.
                Err(e) if tx.log_len() == written && e.is_refusal() => answers.push(Err(e)),
                Err(e) => {
                    failed = Some((i, e));
                    break;
                }
            }
        }
        let writes = tx.take_log();
        drop(tx);
        if let Some((i, e)) = failed {
            drop(txn); // aborts: nothing of this round is kept
            refused.push((batch.remove(i), Err(e)));
            continue;
        }
        let lsn = log.next_lsn;
        if log.to_sync.is_some()
            && let Err(e) = wal::set_applied_lsn(&txn, lsn)
        {
            answer_all(refused);
            return fail_all(batch, e);
        }
        if let Err(e) = txn.commit() {
            tracing::error!(error = %e, jobs = batch.len(), "group commit failed; the batch fails closed");
            answer_all(refused);
            return fail_all(batch, e.into());
        }
        log.next_lsn = lsn + 1;
        store.metrics.record_commit(batch.len(), started.elapsed());
        let mut jobs: Answered = batch.into_iter().zip(answers).collect();
        jobs.append(&mut refused);
        if log.to_sync.is_none() {
            return answer_all(jobs); // durable: no log
        }
        let msg = if checkpoint {
            log.mark_checkpoint();
            store.metrics.record_checkpoint();
            ToSync::Checkpointed { jobs }
        } else {
            log.logged_bytes += writes.len() as u64;
            ToSync::Log { lsn, writes, jobs }
        };
        // Blocks while the syncer is `SYNC_QUEUE` batches behind (back-pressure).
        let sent = match &log.to_sync {
            Some(to_sync) => to_sync.send(msg),
            None => Err(std::sync::mpsc::SendError(msg)),
        };
        if let Err(std::sync::mpsc::SendError(msg)) = sent {
            let jobs = match msg {
                ToSync::Log { jobs, .. }
                | ToSync::Checkpointed { jobs }
                | ToSync::After { jobs } => jobs,
            };
            store.poison();
            tracing::error!("the log sync thread stopped; the store stops writing");
            return fail_all(
                jobs.into_iter().map(|(job, _)| job).collect(),
                StoreError::Db("the log sync thread stopped".into()),
            );
        }
        return;
    }
    // Every command of the batch failed: their answers wait for the batches sent before.
    if refused.is_empty() {
        return;
    }
    match &log.to_sync {
        Some(to_sync) => {
            if let Err(std::sync::mpsc::SendError(ToSync::After { jobs })) =
                to_sync.send(ToSync::After { jobs: refused })
            {
                answer_all(jobs);
            }
        }
        None => answer_all(refused),
    }
}

fn fail_all(batch: Vec<Job>, e: StoreError) {
    let msg = e.to_string();
    for job in batch {
        job.fail(StoreError::Db(msg.clone()));
    }
}

#[cfg(test)]
mod tests {
    //! The log's promise: state rebuilt from redb's last durable commit plus the log equals the
    //! state the batches left, table by table, for every kind of job the writer runs; and a
    //! failed append fails its batch and every later write closed.

    use std::collections::BTreeMap;
    use std::path::Path;

    use policies::FormLimits;
    use redb::{ReadableDatabase, ReadableTable};
    use serde_json::json;

    use super::*;
    use crate::caps::CapSpec;
    use crate::ids::{Actor, AgentId, UserId};
    use crate::ledger::decide::{Decision, DecisionRequest, UpstreamOutcome};
    use crate::model::{IntentStatus, StoredResponse};
    use crate::{MasterKey, WAL_FILE};

    const POLICIES: &str = r#"
        @id("agents-may-move-money") permit (principal, action, resource);
        @id("no-payouts") forbid (principal, action == Action::"payouts.create", resource);
        @id("big") @hold("true") forbid (principal, action in Action::"move_money", resource)
            when { resource.amount > 100000 };
        @id("busy") forbid (principal, action in Action::"move_money", resource)
            when { context.requests_last_minute > 100000 };
    "#;

    /// Every table but `meta` (whose `applied_lsn` differs by construction), key by key.
    fn dump(db: &redb::Database) -> BTreeMap<(String, String), Vec<u8>> {
        let r = db.begin_read().unwrap();
        let mut out = BTreeMap::new();
        for t in crate::tables::ALL {
            if redb::TableHandle::name(&t) == "meta" {
                continue;
            }
            for row in r.open_table(t).unwrap().iter().unwrap() {
                let (k, v) = row.unwrap();
                out.insert(
                    (
                        redb::TableHandle::name(&t).to_string(),
                        k.value().to_string(),
                    ),
                    v.value().to_vec(),
                );
            }
        }
        out
    }

    struct Org {
        org: OrgId,
        agent: AgentId,
        owner: UserId,
    }

    fn setup(store: &Store) -> Org {
        let actor = Actor::System("test".into());
        let (org, owner) = store
            .init_org_with_owner("wal-org", "wal@example.com", "wal-Password-1234")
            .unwrap();
        store.set_policy(&org.id, POLICIES, &actor).unwrap();
        let (agent, _) = store
            .create_agent(&org.id, "wal-agent", vec![], &actor)
            .unwrap();
        for cap in [
            json!({"scope": "org", "currency": "usd", "interval": "daily", "limit": 10_000_000, "on_exceed": "hold"}),
            json!({"scope": format!("agent:{}", agent.id), "currency": "usd", "interval": "monthly", "limit": 10_000_000, "on_exceed": "deny"}),
        ] {
            store
                .add_cap(
                    &org.id,
                    serde_json::from_value::<CapSpec>(cap).unwrap(),
                    &actor,
                )
                .unwrap();
        }
        store.set_rail_key(&org.id, "sk_test_wal", &actor).unwrap();
        // An endpoint, so every audit event also writes a webhook outbox entry.
        store
            .create_webhook(
                &org.id,
                "https://hooks.example.com/pg",
                None,
                "whsec_dGVzdHRlc3R0ZXN0dGVzdHRlc3R0ZXN0dGVzdA==",
                &actor,
            )
            .unwrap();
        Org {
            org: org.id,
            agent: agent.id,
            owner: owner.id,
        }
    }

    fn request(store: &Store, o: &Org, key: &str, path: &str, body: &str) -> DecisionRequest {
        let facts = policies::classify("POST", path, body.as_bytes(), &FormLimits::default())
            .expect("classify");
        let agent = store.agent(&o.org, &o.agent).unwrap().unwrap();
        let prepared = store.prepare_decision(&agent, &facts).unwrap();
        DecisionRequest {
            org: o.org.clone(),
            agent: o.agent.clone(),
            idempotency_key: key.into(),
            method: "POST".into(),
            path: path.into(),
            query: String::new(),
            headers: Vec::new(),
            body: body.as_bytes().to_vec(),
            facts,
            hold_expiry_secs: 3600,
            prepared,
        }
    }

    /// A 300,000 usd payment, held by the `big` policy.
    async fn held_payment(store: &Store, c: &Committer, o: &Org, key: &str) -> Intent {
        let req = request(
            store,
            o,
            key,
            "/v1/payment_intents",
            "amount=300000&currency=usd",
        );
        match c.decide(req).await.unwrap() {
            Decision::Respond(i) if i.status == IntentStatus::PendingApproval => *i,
            other => panic!("{key} was not held: {other:?}"),
        }
    }

    fn response(status: u16) -> UpstreamOutcome {
        UpstreamOutcome::Response {
            response: StoredResponse {
                status,
                headers: vec![("content-type".into(), "application/json".into())],
                body: br#"{"id":"pi_1"}"#.to_vec(),
            },
            upstream_id: Some("pi_1".into()),
        }
    }

    fn no_checkpoints() -> WriterLimits {
        WriterLimits {
            checkpoint_interval: Duration::from_secs(3600),
            checkpoint_bytes: u64::MAX,
            ..WriterLimits::default()
        }
    }

    /// Every kind of writer job, several in flight at once so batches hold more than one.
    async fn workload(store: &Arc<Store>, c: &Committer, o: &Org) {
        const PI: &str = "/v1/payment_intents";
        let mut tasks = Vec::new();
        for n in 0..24 {
            let (store, c) = (store.clone(), c.clone());
            let req = request(
                &store,
                o,
                &format!("pay-{n}"),
                PI,
                "amount=1000&currency=usd",
            );
            tasks.push(tokio::spawn(async move {
                let Decision::Forward { intent, .. } = c.decide(req).await.unwrap() else {
                    panic!("payment {n} was not allowed")
                };
                // Succeeded, failed (releases the reservation) and unknown in turn.
                let outcome = match n % 3 {
                    0 => response(200),
                    1 => response(402),
                    _ => UpstreamOutcome::Lost("connection reset".into()),
                };
                let settled = c.settle(intent.org, intent.id, outcome).await.unwrap();
                assert!(matches!(
                    settled.status,
                    IntentStatus::Succeeded | IntentStatus::Failed | IntentStatus::Unknown
                ));
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        // An unknown outcome retried with the same key forwards again, then succeeds.
        let retry = request(store, o, "pay-2", PI, "amount=1000&currency=usd");
        let Decision::Forward { intent, .. } = c.decide(retry).await.unwrap() else {
            panic!("the retry of an unknown outcome must forward")
        };
        c.settle(intent.org, intent.id, response(200))
            .await
            .unwrap();
        // A hold, a deny, a replay and a reused key.
        let hold = request(store, o, "hold-1", PI, "amount=200000&currency=usd");
        assert!(
            matches!(c.decide(hold).await.unwrap(), Decision::Respond(i) if i.status == IntentStatus::PendingApproval)
        );
        let deny = request(
            store,
            o,
            "payout-1",
            "/v1/payouts",
            "amount=500&currency=usd",
        );
        assert!(
            matches!(c.decide(deny).await.unwrap(), Decision::Respond(i) if i.status == IntentStatus::Denied)
        );
        let replay = request(store, o, "pay-0", PI, "amount=1000&currency=usd");
        assert!(matches!(
            c.decide(replay).await.unwrap(),
            Decision::Respond(_)
        ));
        let reused = request(store, o, "pay-0", PI, "amount=999&currency=usd");
        assert!(matches!(
            c.decide(reused).await.unwrap(),
            Decision::KeyReused
        ));
        // Humans: a hold approved, claimed and executed; one denied; one that expires.
        let held = held_payment(store, c, o, "hold-2").await;
        let approved = c
            .decide_hold(
                o.org.clone(),
                held.id.clone(),
                o.owner.clone(),
                HumanVerdict::Approve,
                Some("ok".into()),
                false,
            )
            .await
            .unwrap();
        assert_eq!(approved.status, IntentStatus::Approved);
        let Claim::Execute(claimed, _) = c.claim(o.org.clone(), held.id.clone()).await.unwrap()
        else {
            panic!("the approved hold was not claimed")
        };
        c.settle(o.org.clone(), claimed.id.clone(), response(200))
            .await
            .unwrap();
        // A refusal (the hold is no longer pending) in the same batches as decisions: answered
        // as a refusal, and the decisions around it are not disturbed.
        let mut tasks = Vec::new();
        for n in 0..8 {
            let req = request(
                store,
                o,
                &format!("beside-{n}"),
                PI,
                "amount=10&currency=usd",
            );
            let c = c.clone();
            tasks.push(tokio::spawn(async move { c.decide(req).await }));
        }
        let again = c.decide_hold(
            o.org.clone(),
            held.id.clone(),
            o.owner.clone(),
            HumanVerdict::Approve,
            None,
            false,
        );
        assert!(again.await.unwrap_err().is_refusal());
        for t in tasks {
            let Decision::Forward { intent, .. } = t.await.unwrap().unwrap() else {
                panic!("a decision beside a refusal was not allowed")
            };
            c.settle(intent.org, intent.id, response(200))
                .await
                .unwrap();
        }
        let denied = held_payment(store, c, o, "hold-3").await;
        let denied = c
            .decide_hold(
                o.org.clone(),
                denied.id.clone(),
                o.owner.clone(),
                HumanVerdict::Deny,
                None,
                false,
            )
            .await
            .unwrap();
        assert_eq!(denied.status, IntentStatus::Denied);
        let mut short = request(store, o, "hold-4", PI, "amount=300000&currency=usd");
        short.hold_expiry_secs = 0;
        let Decision::Respond(short) = c.decide(short).await.unwrap() else {
            panic!("not held")
        };
        let later = short.expires_at_unix.unwrap() + 1;
        assert_eq!(c.expire(later, 100).await.unwrap(), vec![short.id.clone()]);
        // Left forwarding, as a crash would leave it; recovery makes it unknown.
        let Decision::Forward { intent: open, .. } = c
            .decide(request(store, o, "open-1", PI, "amount=1000&currency=usd"))
            .await
            .unwrap()
        else {
            panic!("not allowed")
        };
        assert_eq!(
            c.apply(Command::Recover).await.unwrap().recovered(),
            Some(1)
        );
        assert_eq!(
            store.intent(&o.org, &open.id).unwrap().unwrap().status,
            IntentStatus::Unknown
        );
        // Pruning in rounds of 10, to the end of the table: every record is older than this.
        let mut after = None;
        let mut removed = 0;
        loop {
            let round = c.prune(i64::MAX, after, 10).await.unwrap();
            removed += round.removed;
            match round.next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        assert!(removed > 20, "pruned {removed}");
        // An unknown outcome keeps its record whatever its age: its retry resends the same intent.
        let unknown = request(store, o, "pay-5", PI, "amount=1000&currency=usd");
        let Decision::Forward { intent: resent, .. } = c.decide(unknown).await.unwrap() else {
            panic!("the retry of an unknown outcome must forward")
        };
        assert_eq!(
            resent.attempts, 1,
            "a new intent was made for a pruned unknown outcome"
        );
        c.settle(resent.org, resent.id, response(200))
            .await
            .unwrap();
        // A pruned key is a new request.
        let again = request(store, o, "pay-0", PI, "amount=999&currency=usd");
        assert!(matches!(
            c.decide(again).await.unwrap(),
            Decision::Forward { .. }
        ));
    }

    /// The workload above runs every command: a new command fails to compile here until it is
    /// added to the workload (and so to the recovery-equivalence test).
    #[allow(dead_code)]
    fn every_command_is_in_the_workload(c: &Command) {
        match c {
            Command::Decide(_)
            | Command::Settle { .. }
            | Command::DecideHold { .. }
            | Command::Claim { .. }
            | Command::Expire { .. }
            | Command::Recover
            | Command::Prune { .. } => {}
        }
    }

    fn copy_store(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).unwrap();
        for f in [crate::DB_FILE, WAL_FILE] {
            std::fs::copy(from.join(f), to.join(f)).unwrap();
        }
    }

    #[test]
    fn state_rebuilt_from_the_log_equals_the_state_the_batches_left() {
        let live_dir = tempfile::tempdir().unwrap();
        let key = MasterKey::generate();
        let store = Arc::new(Store::open(live_dir.path(), key.clone()).unwrap());
        let o = setup(&store);
        let c = Committer::start(store.clone(), no_checkpoints());
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(workload(&store, &c, &o));
        // An admin commit (durable) between logged batches, then more batches after it.
        store
            .create_agent(&o.org, "second", vec![], &Actor::System("test".into()))
            .unwrap();
        rt.block_on(async {
            let req = request(
                &store,
                &o,
                "after-admin",
                "/v1/payment_intents",
                "amount=1000&currency=usd",
            );
            let Decision::Forward { intent, .. } = c.decide(req).await.unwrap() else {
                panic!("not allowed")
            };
            c.settle(intent.org, intent.id, response(200))
                .await
                .unwrap();
        });
        let live = dump(&store.db);
        // The files as a crash would leave them: every batch answered, none checkpointed.
        let crash = tempfile::tempdir().unwrap();
        copy_store(live_dir.path(), crash.path());
        let without_log = tempfile::tempdir().unwrap();
        copy_store(live_dir.path(), without_log.path());
        std::fs::remove_file(without_log.path().join(WAL_FILE)).unwrap();

        // Without the log the store comes back without the last batches: the log carries them.
        let bare = Store::open(without_log.path(), key.clone()).unwrap();
        let bare_dump = dump(&bare.db);
        assert_ne!(bare_dump, live, "the test must exercise the log");
        assert!(bare_dump.len() < live.len());
        drop(bare);

        let recovered = Store::open(crash.path(), key.clone()).unwrap();
        let rebuilt = dump(&recovered.db);
        let differing: Vec<_> = live
            .keys()
            .chain(rebuilt.keys())
            .filter(|k| live.get(*k) != rebuilt.get(*k))
            .take(5)
            .collect();
        assert!(
            differing.is_empty(),
            "rebuilt state differs at {differing:?}"
        );
        assert!(recovered.audit_verify(&o.org).unwrap().is_ok());
        drop(recovered);
        // Recovery is durable and idempotent: a second open replays nothing new.
        let again = Store::open(crash.path(), key.clone()).unwrap();
        assert_eq!(dump(&again.db), live);
    }

    /// Holds expire in expiry order, at most `max` a round, and only the due ones are read;
    /// a store whose holds predate `pending_by_expiry` gets them indexed by recovery.
    #[test]
    fn holds_expire_in_order_from_the_expiry_index_and_old_holds_are_indexed_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path(), MasterKey::generate()).unwrap());
        let o = setup(&store);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let c = Committer::start(store.clone(), no_checkpoints());
        let held = |key: &str, secs: i64| {
            let mut r = request(
                &store,
                &o,
                key,
                "/v1/payment_intents",
                "amount=300000&currency=usd",
            );
            r.hold_expiry_secs = secs;
            match rt.block_on(c.decide(r)).unwrap() {
                Decision::Respond(i) if i.status == IntentStatus::PendingApproval => *i,
                other => panic!("not held: {other:?}"),
            }
        };
        let late = held("late", 300);
        let early = held("early", 100);
        let middle = held("middle", 200);
        let never_due = held("never", 86_400);
        let at = |i: &Intent| i.expires_at_unix.unwrap();
        let index = |store: &Store| -> Vec<String> {
            let r = store.read().unwrap();
            let t = r.open_table(crate::tables::PENDING_BY_EXPIRY).unwrap();
            t.iter()
                .unwrap()
                .map(|e| e.unwrap().0.value().to_string())
                .collect()
        };
        assert_eq!(index(&store).len(), 4);
        // Nothing due yet.
        assert!(
            rt.block_on(c.expire(at(&early) - 1, 10))
                .unwrap()
                .is_empty()
        );
        // Two due, one a round: earliest first.
        let now = at(&middle);
        assert_eq!(
            rt.block_on(c.expire(now, 1)).unwrap(),
            vec![early.id.clone()]
        );
        assert_eq!(
            rt.block_on(c.expire(now, 10)).unwrap(),
            vec![middle.id.clone()]
        );
        assert!(rt.block_on(c.expire(now, 10)).unwrap().is_empty());
        assert_eq!(index(&store).len(), 2);
        // A hold decided by a human leaves the index with its intent's status.
        rt.block_on(c.decide_hold(
            o.org.clone(),
            late.id.clone(),
            o.owner.clone(),
            HumanVerdict::Deny,
            None,
            false,
        ))
        .unwrap();
        assert_eq!(index(&store).len(), 1);
        // A store from before the index: the entry is gone, recovery puts it back.
        {
            let key = crate::tables::expiry_key(
                never_due.expires_at_unix,
                &crate::ledger::decide::intent_key(&o.org, &never_due.id),
            );
            // Straight into redb, as a store written by an older guard would be.
            let w = store.db.begin_write().unwrap();
            {
                let mut t = w.open_table(crate::tables::PENDING_BY_EXPIRY).unwrap();
                assert!(t.remove(key.as_str()).unwrap().is_some());
            }
            w.commit().unwrap();
        }
        assert!(index(&store).is_empty());
        assert_eq!(
            rt.block_on(c.apply(Command::Recover)).unwrap().recovered(),
            Some(0)
        );
        assert_eq!(index(&store).len(), 1);
        assert_eq!(
            rt.block_on(c.expire(at(&never_due), 10)).unwrap(),
            vec![never_due.id.clone()]
        );
    }

    #[test]
    fn a_failed_log_append_fails_the_batch_and_every_later_write() {
        let dir = tempfile::tempdir().unwrap();
        let key = MasterKey::generate();
        let store = Arc::new(Store::open(dir.path(), key.clone()).unwrap());
        let o = setup(&store);
        let intents_before = store.list_intents(&o.org).unwrap().len();
        store
            .wal
            .lock()
            .unwrap()
            .as_mut()
            .unwrap()
            .break_for_test(&dir.path().join(WAL_FILE));
        let c = Committer::start(store.clone(), no_checkpoints());
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let req = request(
            &store,
            &o,
            "k1",
            "/v1/payment_intents",
            "amount=1000&currency=usd",
        );
        let err = rt.block_on(c.decide(req.clone())).unwrap_err();
        assert!(err.to_string().contains("write-ahead log"), "{err}");
        assert!(store.is_poisoned());
        // Later jobs, admin writes and the readiness check fail too.
        assert!(rt.block_on(c.decide(req)).is_err());
        assert!(
            store
                .create_agent(&o.org, "x", vec![], &Actor::System("t".into()))
                .is_err()
        );
        assert!(store.is_empty().is_err());
        drop(c);
        drop(store);
        // A restart recovers a consistent store that writes again. Whether the failed batch's
        // decision survives is not promised (redb's close may persist it, like a crash between
        // commit and answer): its caller got an error and nothing was forwarded, and a retry
        // with the same key gets whatever was recorded.
        let reopened = loop {
            match Store::open(dir.path(), key.clone()) {
                Ok(s) => break s,
                Err(StoreError::Locked(_)) => std::thread::yield_now(),
                Err(e) => panic!("{e}"),
            }
        };
        assert!(reopened.list_intents(&o.org).unwrap().len() <= intents_before + 1);
        assert!(reopened.audit_verify(&o.org).unwrap().is_ok());
        assert!(!reopened.is_poisoned());
        reopened
            .create_agent(&o.org, "after-restart", vec![], &Actor::System("t".into()))
            .unwrap();
    }
}
