//! Group commit (ARCHITECTURE.md, PERFORMANCE.md): one writer thread owns the write
//! transactions. Decision and settlement jobs arrive on a bounded channel; the writer takes what
//! is queued (up to `max_batch`), runs each job in order inside one transaction — so decisions
//! stay serializable and caps exact — commits once (one fsync), and only then answers every job.
//! A failed commit fails the whole batch closed: every caller gets an error, nothing is forwarded.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{mpsc, oneshot};

use crate::Store;
use crate::decide::{Decision, DecisionRequest, UpstreamOutcome, settle_in};
use crate::error::{Result, StoreError};
use crate::ids::{IntentId, OrgId};
use crate::model::Intent;
use crate::time_util::now;

/// Bounds of the group-commit writer.
#[derive(Clone, Copy, Debug)]
pub struct WriterLimits {
    /// Jobs waiting for the writer before callers wait (back-pressure).
    pub queue_jobs: usize,
    /// Jobs committed together at most.
    pub max_batch: usize,
}

impl Default for WriterLimits {
    fn default() -> Self {
        Self {
            queue_jobs: 4096,
            max_batch: 256,
        }
    }
}

enum Job {
    Decide(Box<DecisionRequest>, oneshot::Sender<Result<Decision>>),
    Settle(
        OrgId,
        IntentId,
        UpstreamOutcome,
        oneshot::Sender<Result<Intent>>,
    ),
}

enum Answer {
    Decide(Result<Decision>),
    Settle(Box<Result<Intent>>),
}

impl Answer {
    fn is_err(&self) -> bool {
        match self {
            Answer::Decide(r) => r.is_err(),
            Answer::Settle(r) => r.is_err(),
        }
    }
}

impl Job {
    fn run(&self, store: &Store, txn: &redb::WriteTransaction, clock: &crate::Clock) -> Answer {
        match self {
            Job::Decide(req, _) => Answer::Decide(store.decide_in(txn, req, clock)),
            Job::Settle(org, id, outcome, _) => {
                Answer::Settle(Box::new(settle_in(txn, org, id, outcome.clone(), clock)))
            }
        }
    }

    fn answer(self, answer: Answer) {
        match (self, answer) {
            (Job::Decide(_, tx), Answer::Decide(r)) => {
                let _ = tx.send(r);
            }
            (Job::Settle(_, _, _, tx), Answer::Settle(r)) => {
                let _ = tx.send(*r);
            }
            (job, _) => job.fail(StoreError::Db("internal: mismatched answer".into())),
        }
    }

    fn fail(self, e: StoreError) {
        let msg = e.to_string();
        match self {
            Job::Decide(_, tx) => {
                let _ = tx.send(Err(StoreError::Db(msg)));
            }
            Job::Settle(_, _, _, tx) => {
                let _ = tx.send(Err(StoreError::Db(msg)));
            }
        }
    }
}

/// Handle to the writer thread. Clone freely; the thread stops when every handle is dropped.
#[derive(Clone, Debug)]
pub struct Committer {
    tx: mpsc::Sender<Job>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Job::Decide(..) => "Job::Decide",
            Job::Settle(..) => "Job::Settle",
        })
    }
}

impl Committer {
    /// Start the writer thread for `store`.
    pub fn start(store: Arc<Store>, limits: WriterLimits) -> Committer {
        assert!(
            limits.queue_jobs > 0 && limits.max_batch > 0,
            "writer limits must be positive"
        );
        let (tx, rx) = mpsc::channel(limits.queue_jobs);
        std::thread::Builder::new()
            .name("pg-writer".into())
            .spawn(move || writer_loop(&store, rx, limits.max_batch))
            .expect("cannot spawn the store writer thread");
        Committer { tx }
    }

    /// Decide one request; answered after the batch holding it is durable.
    pub async fn decide(&self, req: DecisionRequest) -> Result<Decision> {
        let (tx, rx) = oneshot::channel();
        self.submit(Job::Decide(Box::new(req), tx)).await?;
        rx.await
            .map_err(|_| StoreError::Db("the store writer stopped".into()))?
    }

    /// Settle an intent with its upstream outcome; answered once durable.
    pub async fn settle(
        &self,
        org: OrgId,
        id: IntentId,
        outcome: UpstreamOutcome,
    ) -> Result<Intent> {
        let (tx, rx) = oneshot::channel();
        self.submit(Job::Settle(org, id, outcome, tx)).await?;
        rx.await
            .map_err(|_| StoreError::Db("the store writer stopped".into()))?
    }

    async fn submit(&self, job: Job) -> Result<()> {
        self.tx
            .send(job)
            .await
            .map_err(|_| StoreError::Db("the store writer stopped".into()))
    }
}

fn writer_loop(store: &Store, mut rx: mpsc::Receiver<Job>, max_batch: usize) {
    while let Some(first) = rx.blocking_recv() {
        let mut batch = vec![first];
        while batch.len() < max_batch {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        commit_batch(store, batch);
    }
}

/// Run `batch` in one transaction. A job that errors is answered with its error and the others
/// are run again without it in a fresh transaction (its partial writes must not be committed);
/// each round removes at least one job, so this ends.
fn commit_batch(store: &Store, mut batch: Vec<Job>) {
    while !batch.is_empty() {
        let started = Instant::now();
        let clock = now();
        let txn = match store.db.begin_write() {
            Ok(t) => t,
            Err(e) => return fail_all(batch, e.into()),
        };
        let mut answers = Vec::with_capacity(batch.len());
        let mut failed = None;
        for (i, job) in batch.iter().enumerate() {
            let a = job.run(store, &txn, &clock);
            if a.is_err() {
                failed = Some((i, a));
                break;
            }
            answers.push(a);
        }
        if let Some((i, answer)) = failed {
            drop(txn); // aborts: nothing of this round is kept
            batch.remove(i).answer(answer);
            continue;
        }
        if let Err(e) = txn.commit() {
            tracing::error!(error = %e, jobs = batch.len(), "group commit failed; the batch fails closed");
            return fail_all(batch, e.into());
        }
        store.metrics.record_commit(batch.len(), started.elapsed());
        for (job, a) in batch.into_iter().zip(answers) {
            job.answer(a);
        }
        return;
    }
}

fn fail_all(batch: Vec<Job>, e: StoreError) {
    let msg = e.to_string();
    for job in batch {
        job.fail(StoreError::Db(msg.clone()));
    }
}
